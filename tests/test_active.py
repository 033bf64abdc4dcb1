"""Query strategies on data with a known answer: the boundary point, the flattest row, the far point,
one pick per blob, the rare class."""

from __future__ import annotations

import numpy as np
import pytest

from labelkit.active import STRATEGIES, rank

# Four rows over four classes, built so each uncertainty measure prefers a different one:
#   C: max 0.32 (lowest)            → least confidence, 1 − 0.32 = 0.68
#   D: nearest uniform              → entropy, 0.33·ln(1/0.33) + 0.23·ln(1/0.23) + 2·0.22·ln(1/0.22) = 1.3701
#   E: 0.50 vs 0.49                 → margin 0.01 (its 0.0 entry also checks that 0·log 0 counts as 0)
#   F: confident                    → last everywhere
UNCERTAIN = np.array(
    [
        [0.32, 0.28, 0.28, 0.12],  # C
        [0.33, 0.23, 0.22, 0.22],  # D
        [0.50, 0.49, 0.01, 0.00],  # E
        [0.97, 0.01, 0.01, 0.01],  # F
    ]
)
C, D, E, F = range(4)
NONE_LABELLED = np.zeros(4, dtype=bool)


def test_margin_ranks_the_boundary_point_first() -> None:
    r = rank("margin", probs=UNCERTAIN, labeled_mask=NONE_LABELLED, k=4)
    assert r.indices.tolist() == [E, C, D, F]
    np.testing.assert_allclose(r.scores, [0.01, 0.04, 0.10, 0.96], atol=1e-12)
    assert r.reasons[0] == "margin 0.01 between 0 and 1 — the model can't decide"


def test_least_confidence_ranks_the_lowest_top_probability_first() -> None:
    r = rank("least_confidence", probs=UNCERTAIN, labeled_mask=NONE_LABELLED, k=4)
    assert r.indices.tolist() == [C, D, E, F]
    np.testing.assert_allclose(r.scores, [0.68, 0.67, 0.50, 0.03], atol=1e-12)


def test_entropy_ranks_the_flattest_row_first() -> None:
    r = rank("entropy", probs=UNCERTAIN, labeled_mask=NONE_LABELLED, k=4)
    assert r.indices.tolist() == [D, C, E, F]
    assert r.scores[0] == pytest.approx(1.3701, abs=1e-4)
    assert np.isfinite(r.scores).all()


def test_kcenter_takes_the_point_farthest_from_the_labelled_set() -> None:
    # On a line: labelled at 0, unlabelled at 1, 2 and 10. Farthest from 0 is 10; then 2 (2 from
    # the 0) beats 1 (1 from the 0).
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    r = rank("kcenter", embeddings=x, labeled_mask=np.array([True, False, False, False]), k=3)
    assert r.indices.tolist() == [3, 2, 1]
    np.testing.assert_allclose(r.scores, [10.0, 2.0, 1.0])


def test_kcenter_without_labels_starts_nearest_the_mean() -> None:
    # Mean 3.25 → start at 2; farthest from {2} is 10 (8); then 0 (2 from 2) before 1 (1).
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    r = rank("kcenter", embeddings=x, labeled_mask=NONE_LABELLED, k=4)
    assert r.indices.tolist() == [2, 3, 0, 1]
    np.testing.assert_allclose(r.scores, [1.25, 8.0, 2.0, 1.0])


def _blobs(sizes: tuple[int, ...] = (10, 10, 10, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Tight blobs (σ = 0.05) at the corners of a 10 × 10 square, listed blob after blob."""
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    rng = np.random.default_rng(7)
    x = np.concatenate([c + 0.05 * rng.standard_normal((n, 2)) for c, n in zip(corners, sizes, strict=True)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def _two_class_probs(margin: np.ndarray) -> np.ndarray:
    return np.stack([(1 + margin) / 2, (1 - margin) / 2], axis=1)


def test_kcenter_batch_covers_every_blob() -> None:
    x, blob = _blobs()
    r = rank("kcenter", embeddings=x, labeled_mask=np.zeros(len(x), dtype=bool), k=4)
    assert sorted(blob[r.indices]) == [0, 1, 2, 3]


def test_cluster_uncertain_takes_the_most_uncertain_item_of_each_blob() -> None:
    x, blob = _blobs()
    # Within blob b, item j has margin 0.01·(j+1) + 0.2·b: every item of blob 0 is less certain than
    # any other, so margin alone spends the whole batch on blob 0.
    j = np.tile(np.arange(10), 4)
    probs = _two_class_probs(0.01 * (j + 1) + 0.2 * blob)
    mask = np.zeros(len(x), dtype=bool)
    by_margin = rank("margin", probs=probs, labeled_mask=mask, k=4)
    assert blob[by_margin.indices].tolist() == [0, 0, 0, 0]

    r = rank("cluster_uncertain", probs=probs, embeddings=x, labeled_mask=mask, k=4)
    assert r.indices.tolist() == [0, 10, 20, 30]  # item j = 0 of blobs 0, 1, 2, 3, by margin
    np.testing.assert_allclose(r.scores, [0.01, 0.21, 0.41, 0.61])
    assert "group of 10 similar items" in r.reasons[0]


def test_cold_start_takes_the_most_typical_item_of_each_blob_spread_out() -> None:
    x, blob = _blobs(sizes=(13, 10, 10, 10))
    r = rank("cold_start", embeddings=x, labeled_mask=np.zeros(len(x), dtype=bool), k=4)
    typical = {
        b: int(
            np.flatnonzero(blob == b)[np.argmin(np.linalg.norm(x[blob == b] - x[blob == b].mean(0), axis=1))]
        )
        for b in range(4)
    }
    assert sorted(r.indices.tolist()) == sorted(typical.values())
    # The largest blob's representative first, then the opposite corner (diagonal, farthest).
    assert r.indices[:2].tolist() == [typical[0], typical[3]]
    assert r.scores.tolist() == [13, 10, 10, 10]


def test_cold_start_fills_the_batch_when_the_data_has_fewer_distinct_points_than_k() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 5, axis=0)
    r = rank("cold_start", embeddings=x, labeled_mask=np.zeros(10, dtype=bool), k=4)
    assert len(set(r.indices.tolist())) == 4
    assert sorted(x[r.indices[:2], 0].tolist()) == [0.0, 5.0]  # one per distinct point first
    assert r.scores.tolist() == [5, 5, 0, 0]


def test_class_balance_prefers_confident_predictions_of_rare_classes() -> None:
    probs = np.array(
        [
            [0.90, 0.05, 0.05],  # class 0, 10 labels: 0.90 / 11 = 0.0818
            [0.20, 0.60, 0.20],  # class 1, 0 labels:  0.60 / 1  = 0.60, margin 0.40
            [0.05, 0.05, 0.90],  # class 2, 5 labels:  0.90 / 6  = 0.15
            [0.10, 0.80, 0.10],  # class 1:            0.80
            [0.35, 0.60, 0.05],  # class 1:            0.60 as row 1, but margin 0.25 → before it
        ]
    )
    r = rank(
        "class_balance",
        probs=probs,
        labeled_mask=np.zeros(5, dtype=bool),
        k=5,
        class_counts=np.array([10, 0, 5]),
    )
    assert r.indices.tolist() == [3, 4, 1, 2, 0]
    np.testing.assert_allclose(r.scores, [0.8, 0.6, 0.6, 0.15, 0.9 / 11])
    assert r.reasons[0] == "predicted 1 (80%), a class with only 0 labels"


def _random_inputs(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "probs": rng.dirichlet(np.ones(3), size=n),
        "embeddings": rng.standard_normal((n, 4)),
        "class_counts": np.array([4, 1, 0]),
    }


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_labelled_items_are_never_returned(strategy: str) -> None:
    inputs = _random_inputs()
    mask = np.arange(30) % 2 == 0
    r = rank(strategy, labeled_mask=mask, k=8, **inputs)
    assert len(r) == 8 == len(set(r.indices.tolist())) == len(r.scores) == len(r.reasons)
    assert not mask[r.indices].any()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_k_beyond_the_unlabelled_count_returns_every_unlabelled_item(strategy: str) -> None:
    inputs = _random_inputs()
    mask = np.arange(30) >= 5
    r = rank(strategy, labeled_mask=mask, k=100, **inputs)
    assert sorted(r.indices.tolist()) == [0, 1, 2, 3, 4]


def test_nothing_unlabelled_gives_an_empty_ranking() -> None:
    r = rank("margin", probs=UNCERTAIN, labeled_mask=np.ones(4, dtype=bool), k=3)
    assert len(r) == 0 and r.reasons == []


def test_random_is_reproducible_for_a_seed_and_differs_across_seeds() -> None:
    mask = np.zeros(200, dtype=bool)
    a = rank("random", labeled_mask=mask, k=10, seed=1).indices
    b = rank("random", labeled_mask=mask, k=10, seed=1).indices
    c = rank("random", labeled_mask=mask, k=10, seed=2).indices
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid strategies: \['class_balance', 'cluster_uncertain'"):
        rank("bald", labeled_mask=NONE_LABELLED, k=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "margin"}, "needs probs"),
        ({"strategy": "cluster_uncertain", "probs": UNCERTAIN}, "needs embeddings"),
        ({"strategy": "class_balance", "probs": UNCERTAIN}, "needs class_counts"),
        ({"strategy": "margin", "probs": UNCERTAIN * 2}, "row 0 sums to 2.0000"),
        ({"strategy": "margin", "probs": UNCERTAIN[:3]}, r"shape \(N=4, C≥2\)"),
        ({"strategy": "margin", "probs": UNCERTAIN, "k": 0}, "k must be an integer ≥ 1"),
        ({"strategy": "margin", "probs": UNCERTAIN, "labeled_mask": np.zeros(4)}, "1-D bool array"),
        ({"strategy": "kcenter", "embeddings": np.full((4, 2), np.nan)}, "embeddings must be finite"),
        (
            {"strategy": "class_balance", "probs": UNCERTAIN, "class_counts": np.array([1, 2])},
            "class_counts must be 4 non-negative integers",
        ),
    ],
)
def test_invalid_inputs_are_rejected_with_a_message(kwargs: dict, message: str) -> None:
    args = {"labeled_mask": NONE_LABELLED, "k": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        rank(args.pop("strategy"), **args)
