"""Pseudo-label candidates and threshold counts worked out by hand; suspect labels found on data with
injected label flips (the way cleanlab's own tests check confident learning)."""

from __future__ import annotations

import numpy as np
import pytest

from labelkit.review import count_by_threshold, pseudo_label_candidates, suspect_labels

# Unlabelled confidences: row 0 → class 0 at 0.90, row 1 → class 1 at 0.80, row 3 → class 0 at 0.75,
# row 4 → class 1 at 0.60, row 5 → class 1 at 0.75. Row 2 (0.95) is labelled and never counts.
PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.75, 0.25], [0.4, 0.6], [0.25, 0.75]])
MASK = np.array([False, False, True, False, False, False])


def test_candidates_are_unlabelled_items_at_or_above_the_threshold_grouped_by_class() -> None:
    table = pseudo_label_candidates(PROBS, labeled_mask=MASK, threshold=0.75)
    assert table.columns.tolist() == ["position", "predicted", "confidence"]
    # Class 0 first (0.90 then 0.75), then class 1 (0.80 then 0.75); 0.75 itself is included.
    assert table["position"].tolist() == [0, 3, 1, 5]
    assert table["predicted"].tolist() == [0, 0, 1, 1]
    assert table["confidence"].tolist() == [0.9, 0.75, 0.8, 0.75]


def test_candidates_at_threshold_one_are_only_certain_predictions() -> None:
    assert pseudo_label_candidates(PROBS, labeled_mask=MASK, threshold=1.0).empty


def test_count_by_threshold_matches_hand_counts() -> None:
    counts = count_by_threshold(PROBS, labeled_mask=MASK, thresholds=[0.0, 0.5, 0.75, 0.8, 0.95, 1.0])
    assert counts.tolist() == [5, 5, 4, 2, 0, 0]


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "0.9", True])
def test_threshold_outside_zero_one_is_rejected(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold must be"):
        pseudo_label_candidates(PROBS, labeled_mask=MASK, threshold=threshold)  # type: ignore[arg-type]


def test_thresholds_must_be_a_flat_list_of_fractions() -> None:
    with pytest.raises(ValueError, match="thresholds must be a 1-D array"):
        count_by_threshold(PROBS, labeled_mask=MASK, thresholds=[[0.5]])
    with pytest.raises(ValueError, match="thresholds must be a 1-D array"):
        count_by_threshold(PROBS, labeled_mask=MASK, thresholds=[1.2])


def test_suspect_labels_flags_the_confidently_contradicted_label() -> None:
    # Three classes, three labels each; the model is 90% sure of the true class everywhere. Item 4
    # (truly class 1) was labelled 2 and items 9, 10 are unlabelled with a placeholder label.
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1])
    probs = np.full((11, 3), 0.05)
    probs[np.arange(11), truth] = 0.9
    labels = truth.copy()
    labels[4] = 2
    labels[9:] = -1
    mask = np.arange(11) < 9
    table = suspect_labels(labels, probs, labeled_mask=mask)
    assert table.to_dict("records") == [
        {"position": 4, "label": 2, "predicted": 1, "label_confidence": 0.05, "predicted_confidence": 0.9}
    ]


def test_suspect_labels_finds_injected_flips_with_out_of_sample_probabilities() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 40)
    x = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])[truth] + 0.8 * rng.standard_normal((120, 2))
    flipped = rng.choice(120, size=12, replace=False)
    labels = truth.copy()
    labels[flipped] = (truth[flipped] + rng.integers(1, 3, size=12)) % 3
    probs = cross_val_predict(LogisticRegression(), x, labels, cv=5, method="predict_proba")
    # Two flipped items are unlabelled: whatever their label says, they are not the reviewer's concern.
    mask = np.ones(120, dtype=bool)
    mask[flipped[:2]] = False

    table = suspect_labels(labels, probs, labeled_mask=mask)
    found, injected = set(table["position"].tolist()), set(flipped[2:].tolist())
    assert not found & set(flipped[:2].tolist())
    assert len(found & injected) / len(found) >= 0.9  # precision
    assert len(found & injected) / len(injected) >= 0.8  # recall
    assert table["label_confidence"].is_monotonic_increasing  # most suspicious first


@pytest.mark.parametrize(
    ("labels", "mask"),
    [
        (np.array([0, 0, 0, 0]), np.ones(4, dtype=bool)),  # one class
        (np.array([0, 0, 0, 1]), np.ones(4, dtype=bool)),  # second class has a single label
        (np.array([0, 0, 1, 1]), np.array([True, True, True, False])),  # ... once masked
    ],
)
def test_suspect_labels_refuses_when_there_is_nothing_to_compare(
    labels: np.ndarray, mask: np.ndarray
) -> None:
    probs = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="at least 2 labels in each of at least 2 classes"):
        suspect_labels(labels, probs, labeled_mask=mask)


def test_suspect_labels_rejects_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        suspect_labels(np.array([0, 0, 1, 2]), np.full((4, 2), 0.5), labeled_mask=np.ones(4, dtype=bool))
