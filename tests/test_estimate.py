"""The honest estimate: a fixed hashed held-out slice, human labels only, Wilson intervals, CV."""

from __future__ import annotations

import numpy as np
import pytest

from labelkit.estimate import (
    Estimate,
    Estimates,
    cross_validated,
    estimate,
    holdout_estimate,
    holdout_mask,
    in_holdout,
    wilson_interval,
)


def test_wilson_interval_matches_hand_worked_values() -> None:
    # 7 of 10: p = .7, z² = 3.8415; centre = (.7 + .19207) / 1.38415 = .64449,
    # half = 1.96 · √(.021 + .0009604) / 1.38415 = .20980 → (.3968, .8922), the 40–89 %.
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    # 0 of 10: centre = half = .19207 / 1.38415 = .13876 → (0, .2775); 10 of 10 mirrors it.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_the_held_out_slice_is_fixed_per_item_by_hash() -> None:
    ids = list(range(10_000))
    mask = in_holdout(ids, fraction=0.2, salt="ws-a")
    assert 0.18 < mask.mean() < 0.22
    # the same item is in or out whatever else is asked about, and in whatever order
    assert in_holdout(ids[::-1], fraction=0.2, salt="ws-a").tolist() == mask[::-1].tolist()
    assert in_holdout([ids[7]], fraction=0.2, salt="ws-a")[0] == mask[7]
    # a larger fraction only adds items; another workspace draws another slice
    assert (in_holdout(ids, fraction=0.3, salt="ws-a") >= mask).all()
    assert (in_holdout(ids, fraction=0.2, salt="ws-b") != mask).mean() > 0.2
    assert not in_holdout(ids, fraction=0.0, salt="ws-a").any()
    with pytest.raises(ValueError, match="fraction"):
        in_holdout(ids, fraction=1.0, salt="x")


def test_only_human_labels_in_the_slice_are_scored() -> None:
    ids = list(range(2_000))
    sources = ["human" if i % 2 else "pseudo_accepted" for i in ids]
    scored = holdout_mask(ids, sources, fraction=0.2, salt="s")
    sliced = in_holdout(ids, fraction=0.2, salt="s")
    assert (scored == (sliced & (np.arange(2_000) % 2 == 1))).all() and scored.any()
    with pytest.raises(ValueError, match="sources"):
        holdout_mask(ids, sources[:-1], fraction=0.2, salt="s")


def test_holdout_estimate_counts_and_intervals() -> None:
    e = holdout_estimate(np.array([0, 1, 1, 2, 2, 2, 0, 1, 0, 2]), np.array([0, 1, 1, 2, 2, 2, 0, 0, 1, 0]))
    assert (e.accuracy, e.n, e.method) == (0.7, 10, "holdout")
    assert (e.low, e.high) == pytest.approx(wilson_interval(7, 10))
    assert "70.0%" in str(e) and "n=10" in str(e)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x, y


def test_cross_validated_interval_covers_the_accuracy_on_the_rest() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _digits()
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(y == c), 8, replace=False) for c in range(10)])
    cv = cross_validated(x[picked], y[picked], folds=5)
    assert cv.method == "cv_logreg" and cv.n == 80 and cv.low <= cv.accuracy <= cv.high
    rest = np.setdiff1d(np.arange(len(y)), picked)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[picked], y[picked])
    truth = float((model.predict(x[rest]) == y[rest]).mean())
    assert cv.low <= truth <= cv.high, (cv, truth)
    # labels that carry no signal: near chance, not near the real figure
    noise = cross_validated(x[picked], rng.permutation(y[picked]), folds=5)
    assert noise.accuracy < 0.35


def test_cross_validation_with_one_label_per_class_still_answers() -> None:
    x, y = _digits()
    first = np.array([np.flatnonzero(y == c)[0] for c in range(10)] + [np.flatnonzero(y == 0)[1]])
    e = cross_validated(x[first], y[first])  # the rarest class has 1 item: 2 folds
    assert e.n == 11 and 0 <= e.accuracy <= 1


def test_estimate_prefers_the_holdout_once_it_has_enough_items() -> None:
    x, y = _digits()
    few_true, few_pred = y[:10], y[:10].copy()
    few_pred[:3] = (few_pred[:3] + 1) % 10
    both = estimate(few_true, few_pred, features=x[:200], labels=y[:200])
    assert both.holdout is not None and both.holdout.n == 10 and both.cv is not None and both.cv.n == 200
    assert both.best is both.cv
    many = estimate(y[:60], y[:60], features=x[:200], labels=y[:200])
    assert many.cv is None and many.best is many.holdout and many.best.accuracy == 1.0
    nothing = estimate(np.array([], int), np.array([], int), features=x[:3], labels=y[:3])
    assert nothing.best is None
    assert Estimates(None, Estimate(0.5, 0.1, 0.9, 4, "cv_logreg")).best.n == 4


def test_versions_store_the_estimate_and_older_versions_still_read() -> None:
    from labelkit.estimate import from_metrics, to_metrics

    e = Estimate(0.8, 0.6, 0.9, 25, "cv_logreg")
    assert from_metrics({"estimate": to_metrics(e), "wall_s": 3}) == e
    legacy = {"holdout_accuracy": 0.7, "holdout_ci95": [0.4, 0.89], "holdout_labels": 10}
    assert from_metrics(legacy) == Estimate(0.7, 0.4, 0.89, 10, "holdout")
    assert from_metrics({"holdout_note": "fewer than 10 labels"}) is None
