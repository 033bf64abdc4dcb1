"""Review of the model's opinions: predictions confident enough to accept as pseudo-labels, and
human labels the model contradicts.

Functions over arrays, validated once here; positions are row indices into the caller's arrays.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from labelkit.active import as_labeled_mask, as_probs


def _as_fraction(value: object, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _unlabelled_confidence(probs: object, labeled_mask: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of unlabelled items, their predicted class and its probability."""
    mask = as_labeled_mask(labeled_mask)
    p = as_probs(probs, n=len(mask))
    positions = np.flatnonzero(~mask)
    predicted = p[positions].argmax(axis=1)
    return positions, predicted, p[positions, predicted]


def pseudo_label_candidates(probs: np.ndarray, *, labeled_mask: np.ndarray, threshold: float) -> pd.DataFrame:
    """Unlabelled items whose predicted class has probability ≥ ``threshold``.

    Parameters
    ----------
    probs : np.ndarray, shape (N, C)
        Predicted class probabilities; rows sum to 1.
    labeled_mask : np.ndarray of bool, shape (N,)
        True where the item has a human label; those are never candidates.
    threshold : float in [0, 1]
        Minimum confidence (inclusive). Higher: fewer, more reliable candidates.

    Returns
    -------
    pd.DataFrame
        Columns ``position`` (int64), ``predicted`` (int64, class index), ``confidence`` (float64),
        one row per candidate, grouped by predicted class (ascending) and most confident first within
        a class (ties by position), so a reviewer sees each class's surest predictions first.
    """
    t = _as_fraction(threshold, name="threshold")
    positions, predicted, confidence = _unlabelled_confidence(probs, labeled_mask)
    keep = confidence >= t
    table = pd.DataFrame(
        {
            "position": positions[keep].astype(np.int64),
            "predicted": predicted[keep].astype(np.int64),
            "confidence": confidence[keep],
        }
    )
    return table.sort_values(
        ["predicted", "confidence", "position"], ascending=[True, False, True], ignore_index=True
    )


def count_by_threshold(probs: np.ndarray, *, labeled_mask: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many unlabelled items ``pseudo_label_candidates`` would return at each threshold.

    Parameters
    ----------
    probs : np.ndarray, shape (N, C)
    labeled_mask : np.ndarray of bool, shape (N,)
    thresholds : array-like of float in [0, 1], shape (T,)

    Returns
    -------
    np.ndarray of int64, shape (T,)
        Count of unlabelled items with confidence ≥ each threshold (non-increasing in the threshold).
    """
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or not np.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"thresholds must be a 1-D array of numbers in [0, 1], got {thresholds!r}")
    _, _, confidence = _unlabelled_confidence(probs, labeled_mask)
    # One sort answers every threshold: the items ≥ t are those after t's left insertion point.
    ordered = np.sort(confidence)
    return (len(ordered) - np.searchsorted(ordered, t, side="left")).astype(np.int64)


def suspect_labels(labels: np.ndarray, probs: np.ndarray, *, labeled_mask: np.ndarray) -> pd.DataFrame:
    """Human labels the model contradicts with confidence, most suspicious first.

    Uses confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in
    Dataset Labels", JAIR 2021) through ``cleanlab.filter.find_label_issues``: it estimates per-class
    confidence thresholds and the joint distribution of given and true labels, so it flags as many
    items per (given, predicted) pair as that pair's estimated noise rate warrants, rather than every
    item under a fixed cut-off; the flagged items are ranked by self-confidence (the probability the
    model gives to the human label, lowest first).

    ``probs`` should be out-of-sample for the labelled items (from cross-validation, or a model that
    did not train on them): a model that fitted a wrong label will agree with it and hide it. A class
    with a single label cannot be checked (cleanlab keeps at least one example per class).

    Parameters
    ----------
    labels : np.ndarray of int, shape (N,)
        Human class index per item; read only where ``labeled_mask`` is True (use e.g. -1 elsewhere).
    probs : np.ndarray, shape (N, C)
        Predicted class probabilities; rows sum to 1.
    labeled_mask : np.ndarray of bool, shape (N,)

    Returns
    -------
    pd.DataFrame
        Columns ``position``, ``label`` (the human one), ``predicted``, ``label_confidence`` (p of the
        human label; lower is more suspicious) and ``predicted_confidence``, one row per suspect.

    Raises
    ------
    ValueError
        When fewer than two classes have at least two labels each: confident learning has nothing to
        compare a label with.
    """
    mask = as_labeled_mask(labeled_mask)
    p = as_probs(probs, n=len(mask))
    y_all = np.asarray(labels)
    if y_all.shape != mask.shape or not np.issubdtype(y_all.dtype, np.integer):
        raise ValueError(f"labels must be {len(mask)} integers, got dtype {y_all.dtype} shape {y_all.shape}")
    positions = np.flatnonzero(mask)
    y = y_all[positions].astype(np.int64)
    num_classes = p.shape[1]
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labelled items must have labels in [0, {num_classes}), got {y.min()}..{y.max()}")
    per_class = np.bincount(y, minlength=num_classes)
    if np.count_nonzero(per_class >= 2) < 2:
        counts = {c: int(n) for c, n in enumerate(per_class) if n}
        raise ValueError(
            "suspect_labels needs at least 2 labels in each of at least 2 classes to compare labels "
            f"against; labels per class so far: {counts}"
        )

    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        # cleanlab warns for every class with a single label; the docstring states that limit once.
        warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
        # n_jobs=1: cleanlab would otherwise start a process pool per call, inside the app's server.
        ranked = find_label_issues(y, p[positions], return_indices_ranked_by="self_confidence", n_jobs=1)
    rows = positions[ranked]
    predicted = p[rows].argmax(axis=1)
    return pd.DataFrame(
        {
            "position": rows.astype(np.int64),
            "label": y[ranked],
            "predicted": predicted.astype(np.int64),
            "label_confidence": p[rows, y[ranked]],
            "predicted_confidence": p[rows, predicted],
        }
    )
