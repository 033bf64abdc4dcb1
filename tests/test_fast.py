"""The fast model's feature-space methods: hand-checked pieces, and every method beating chance
(and the supervised head where unlabelled structure is there to use) on a problem made here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from labelkit import fast


def _two_moons_like(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated clusters in 16-D, two per class, so a line through two labels of a
    class misleads and the unlabelled pool shows the structure."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16)) * 3
    y_cluster = rng.integers(0, 4, n)
    x = centres[y_cluster] + rng.normal(size=(n, 16)) * 0.6
    return x.astype(np.float32), (y_cluster % 2).astype(np.int64)


def test_knn_graph_by_hand() -> None:
    emb = fast.unit(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32))
    idx, sim = fast.knn_graph(emb, 1)
    assert idx[:, 0].tolist() == [1, 0, 3, 2]
    assert np.allclose(sim[0, 0], emb[0] @ emb[1])


def test_spread_on_a_chain_by_hand() -> None:
    # Chain 0 - 1 - 2 with unit weights; S = D^-1/2 W D^-1/2; one step from Y = e0 (class 0) and
    # e2 (class 1), alpha = 0.5: F = 0.5 S Y + 0.5 Y.
    w = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], float))
    d = np.array([1, 2, 1], float) ** -0.5
    s = sparse.csr_matrix(d[:, None] * w.toarray() * d[None, :])
    f = fast.spread(s, np.array([0, 2]), np.array([0, 1]), 2, alpha=0.5, iters=1)
    expected = 0.5 * s.toarray() @ np.array([[1, 0], [0, 0], [0, 1]]) + 0.5 * np.array(
        [[1, 0], [0, 0], [0, 1]]
    )
    assert np.allclose(f, expected)
    assert f[1, 0] == pytest.approx(0.5 * 2**-0.5) and f[1, 0] == pytest.approx(f[1, 1])


def test_fit_head_reproduces_separable_labels_and_ignores_zero_weights() -> None:
    emb = fast.unit(np.array([[1, 0.1], [1, -0.1], [-1, 0.1], [-1, -0.1]], np.float32))
    q = fast.one_hot(np.array([0, 0, 1, 1]), 2)
    q_wrong = q.copy()
    q_wrong[3] = [1, 0]  # a wrong target with no weight must not count
    head = fast.fit_head(emb, fast.Targets(q_wrong, np.array([1, 1, 1, 0], np.float32)))
    assert head.probs(emb).argmax(1).tolist() == [0, 0, 1, 1]
    assert np.allclose(head.probs(emb).sum(1), 1)


@pytest.mark.parametrize("method", sorted(fast.FAST_METHODS))
def test_every_fast_method_beats_chance_on_a_made_problem(method: str) -> None:
    x, y = _two_moons_like()
    fs = fast.FeatureSet(x)
    idx = np.concatenate([np.flatnonzero(y == c)[:3] for c in (0, 1)])
    head = fast.fit(fs, idx, y[idx], 2, method=method)
    rest = np.setdiff1d(np.arange(len(y)), idx)
    accuracy = (head.probs(fs.emb[rest]).argmax(1) == y[rest]).mean()
    assert accuracy > 0.6, f"{method}: {accuracy:.2f}"


def test_cross_validation_scores_only_the_scored_labels_and_can_be_stopped() -> None:
    x, y = _two_moons_like()
    fs = fast.FeatureSet(x)
    idx = np.arange(40)
    scored = np.arange(40) % 2 == 0
    counted = fast.cross_validated(fs, idx, y[idx], 2, method="supervised", scored=scored)
    assert counted is not None and counted[1] == scored.sum() and 0 <= counted[0] <= counted[1]
    assert fast.cross_validated(fs, idx, y[idx], 2, method="supervised", stop=lambda: True) is None


def test_an_unknown_method_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="association"):
        fast.fast_method("nope")
    with pytest.raises(ValueError, match="two classes"):
        fast.fit(fast.FeatureSet(np.eye(3, dtype=np.float32)), np.array([0]), np.array([0]), 2)


def test_an_estimate_is_abandoned_inside_a_fit_when_labels_arrive() -> None:
    """New labels must not wait for a cross-validation fold to finish: the fit itself polls."""
    x, y = _two_moons_like()
    fs = fast.FeatureSet(x)
    idx = np.arange(40)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2  # true during the first fold's fit, not before it

    assert fast.cross_validated(fs, idx, y[idx], 2, method="association", stop=stop) is None
    assert len(calls) == 3, len(calls)
    with pytest.raises(fast.Interrupted):
        fast.fit(fs, idx, y[idx], 2, method="association", stop=lambda: True)
