"""An honest accuracy estimate: items held out once and for all, human labels only, an interval.

- **Which items.** ``in_holdout`` puts an item in the held-out slice by a hash of its id and a
  workspace salt, so the slice is the same in every round (no warm-started model has trained on
  it) and needs no stored state. Raising ``fraction`` later only adds items. A round trains on no
  item of the slice, whatever its label's source; it is *scored* on the slice's human labels only
  (``holdout_mask``): an accepted pseudo-label is the model's own answer and would flatter it.
- **How sure.** ``wilson_interval`` gives the 95 % Wilson score interval of a proportion, which
  stays inside [0, 1] and is sensible for small n (7 of 10 → 40–89 %).
- **With few labels** a held-out slice of a dozen items says little; ``cross_validated`` scores
  k-fold logistic regression on given features (e.g. a backbone's embeddings) over *all* human
  labels, so n is every label. It is the accuracy of that linear model, not of the deep model;
  ``estimate`` returns both, each with its n, and names which one to show.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

HUMAN = "human"
MIN_HOLDOUT = 50  # fewer held-out human labels than this: the cross-validated estimate is shown
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass(frozen=True)
class Estimate:
    accuracy: float  # higher is better
    low: float  # 95 % Wilson interval
    high: float
    n: int  # items behind it
    method: str  # "holdout" (the model on held-out human labels) or "cv_logreg"

    def __str__(self) -> str:
        return f"{self.accuracy:.1%} (95 % {self.low:.0%}–{self.high:.0%}, n={self.n}, {self.method})"


@dataclass(frozen=True)
class Estimates:
    holdout: Estimate | None
    cv: Estimate | None
    min_holdout: int = MIN_HOLDOUT

    @property
    def best(self) -> Estimate | None:
        """The held-out figure once it rests on ``min_holdout`` items, else the one on more items."""
        if self.holdout is not None and self.holdout.n >= self.min_holdout:
            return self.holdout
        candidates = [e for e in (self.holdout, self.cv) if e is not None]
        return max(candidates, key=lambda e: e.n) if candidates else None


def _unit_hash(salt: str, item_id: int | str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(item_ids: Sequence[int | str], *, fraction: float, salt: str) -> np.ndarray:
    """Boolean (N,): True for items in the held-out slice, fixed by sha256(salt, id) < ``fraction``."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return np.array([_unit_hash(salt, i) < fraction for i in item_ids], dtype=bool)


def holdout_mask(
    item_ids: Sequence[int | str], sources: Sequence[str], *, fraction: float, salt: str
) -> np.ndarray:
    """Boolean (N,): True for the labelled items a round is scored on: in the held-out slice and
    labelled by a human (``sources[i] == "human"``). Train on ``~in_holdout(...)`` only."""
    if len(item_ids) != len(sources):
        raise ValueError(f"{len(item_ids)} item ids but {len(sources)} sources")
    human = np.array([s == HUMAN for s in sources], dtype=bool)
    return in_holdout(item_ids, fraction=fraction, salt=salt) & human


def wilson_interval(correct: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``n`` trials; (0, 1) when n = 0."""
    if not 0 <= correct <= n:
        raise ValueError(f"need 0 ≤ correct ≤ n, got {correct} of {n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _estimate(correct: int, n: int, method: str) -> Estimate:
    low, high = wilson_interval(correct, n)
    return Estimate(correct / n if n else float("nan"), low, high, n, method)


def holdout_estimate(y_true: np.ndarray, y_pred: np.ndarray) -> Estimate:
    """Accuracy of predictions ``y_pred`` against held-out human labels ``y_true`` (both (N,))."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape}, {y_pred.shape}")
    return _estimate(int((y_true == y_pred).sum()), len(y_true), "holdout")


def can_cross_validate(labels: np.ndarray) -> bool:
    """Whether ``labels`` are enough for ``cross_validated``: ≥ 4 items of ≥ 2 classes."""
    return len(labels) >= 4 and len(np.unique(labels)) >= 2


def cross_validated(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> Estimate:
    """Out-of-fold accuracy of logistic regression on ``features`` (N, D) with classes ``labels``
    (N,), stratified k-fold with ``folds`` (fewer when the rarest class has fewer items, at least 2).

    A class with a single label cannot be in both the training and the scored part of a split:
    its item is scored by a model that never saw its class, so the figure errs low, not high.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"need features (N, D) and labels (N,), got {features.shape}, {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if not can_cross_validate(labels):
        raise ValueError(
            f"cross-validation needs ≥ 2 classes and ≥ 4 labels, got {len(classes)} and {len(labels)}"
        )
    splits = max(2, min(folds, int(counts.min())))
    predicted = np.empty_like(labels)
    with warnings.catch_warnings():  # "least populated class has only 1 member": see above
        warnings.simplefilter("ignore", UserWarning)
        split = list(StratifiedKFold(splits, shuffle=True, random_state=seed).split(features, labels))
    for train_idx, test_idx in split:
        if len(np.unique(labels[train_idx])) < 2:  # a fold left one class only: it predicts that class
            predicted[test_idx] = labels[train_idx][0]
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        predicted[test_idx] = model.fit(features[train_idx], labels[train_idx]).predict(features[test_idx])
    return _estimate(int((predicted == labels).sum()), len(labels), "cv_logreg")


def estimate(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    min_holdout: int = MIN_HOLDOUT,
    folds: int = 5,
    seed: int = 0,
) -> Estimates:
    """The held-out estimate of a model's predictions ``y_pred`` on held-out human labels ``y_true``
    and, when fewer than ``min_holdout`` are held out and ``features``/``labels`` (every human-labelled
    item) are given, the cross-validated one; ``.best`` says which to show."""
    holdout = holdout_estimate(y_true, y_pred) if len(y_true) else None
    cv = None
    few = holdout is None or holdout.n < min_holdout
    if features is not None and labels is not None and few and can_cross_validate(labels):
        cv = cross_validated(features, labels, folds=folds, seed=seed)
    return Estimates(holdout, cv, min_holdout)


def to_metrics(e: Estimate) -> dict[str, Any]:
    """The form a model version's ``metrics["estimate"]`` stores (JSON-ready)."""
    return asdict(e)


def from_metrics(metrics: Mapping[str, Any]) -> Estimate | None:
    """A version's estimate from its metrics: ``metrics["estimate"]`` (``to_metrics``), or the
    older ``holdout_accuracy`` / ``holdout_ci95`` / ``holdout_labels`` keys; None when it has none."""
    stored = metrics.get("estimate")
    keys = ("accuracy", "low", "high", "n", "method")
    if isinstance(stored, Mapping) and all(stored.get(k) is not None for k in keys):
        return Estimate(**{k: stored[k] for k in keys})
    if "holdout_accuracy" in metrics:
        low, high = metrics.get("holdout_ci95", (float("nan"), float("nan")))
        n = int(metrics.get("holdout_labels", 0))
        return Estimate(float(metrics["holdout_accuracy"]), float(low), float(high), n, "holdout")
    return None
