"""Query strategies: which unlabelled items a person should label next.

Every strategy is a function over arrays, registered by name in ``STRATEGIES``. ``rank`` is the one
entry point: it validates the inputs once, then dispatches, so the strategies themselves trust their
arguments. Positions everywhere are row indices into the arrays the caller passed (the caller maps
them back to item ids).

Uncertainty strategies (least confidence, margin, entropy) follow Settles, "Active Learning
Literature Survey" (2009), §3.1; ``kcenter`` is the greedy core-set of Sener & Savarese, "Active
Learning for Convolutional Neural Networks: A Core-Set Approach" (ICLR 2018), Algorithm 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# A softmax computed in float16 or float32 and stored leaves row sums this far from 1.
PROB_ATOL = 1e-3


@dataclass(frozen=True)
class Ranking:
    """Items to label next, best first.

    ``indices`` (m,) int64: positions into the caller's arrays, never an already-labelled one.
    ``scores`` (m,) float64: the strategy's own quantity for each item (see ``STRATEGIES[name].score``
    for what it is and which direction is better). ``reasons``: one short sentence per item.
    """

    indices: np.ndarray
    scores: np.ndarray
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class _Inputs:
    """Validated inputs shared by every strategy; ``k`` is already capped at ``len(unlabeled)``."""

    unlabeled: np.ndarray  # (m,) positions of unlabelled items, ascending
    labeled: np.ndarray  # positions of labelled items, ascending
    k: int
    seed: int
    probs: np.ndarray | None  # (N, C) float64
    embeddings: np.ndarray | None  # (N, D) float64
    class_counts: np.ndarray | None  # (C,) int64


@dataclass(frozen=True)
class Strategy:
    name: str
    fn: Callable[[_Inputs], Ranking]
    needs: frozenset[str]  # which of "probs", "embeddings", "class_counts" it reads
    summary: str  # one line a page can show as help
    score: str  # what ``Ranking.scores`` holds and which direction ranks first


STRATEGIES: dict[str, Strategy] = {}


def _register(
    name: str, *, needs: tuple[str, ...], summary: str, score: str
) -> Callable[[Callable[[_Inputs], Ranking]], Callable[[_Inputs], Ranking]]:
    def add(fn: Callable[[_Inputs], Ranking]) -> Callable[[_Inputs], Ranking]:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered; registered: {sorted(STRATEGIES)}")
        STRATEGIES[name] = Strategy(name, fn, frozenset(needs), summary, score)
        return fn

    return add


# ---------------------------------------------------------------------------------------------------
# Validation at the boundary (``labelkit.review`` uses the two public checks too)


def as_labeled_mask(labeled_mask: object) -> np.ndarray:
    """``labeled_mask`` as a 1-D bool array, or ValueError. Integers are refused: a 0/1 array and an
    array of positions look alike, and mistaking one for the other would silently rank labelled items."""
    mask = np.asarray(labeled_mask)
    if mask.ndim != 1 or mask.dtype != np.bool_:
        raise ValueError(f"labeled_mask must be a 1-D bool array, got dtype {mask.dtype} shape {mask.shape}")
    return mask


def as_probs(probs: object, *, n: int) -> np.ndarray:
    """``probs`` as an (n, C) float64 array of probability rows (C ≥ 2), or ValueError."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N={n}, C≥2), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROB_ATOL)
    if bad.size:
        raise ValueError(
            f"probs rows must sum to 1 (±{PROB_ATOL}); row {bad[0]} sums to {sums[bad[0]]:.4f} "
            "(pass softmax outputs, not logits)"
        )
    return p


def _as_embeddings(embeddings: object, *, n: int) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != n or e.shape[1] < 1:
        raise ValueError(f"embeddings must have shape (N={n}, D≥1), got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings must be finite")
    return e


def _as_class_counts(class_counts: object, *, num_classes: int) -> np.ndarray:
    c = np.asarray(class_counts)
    if c.shape != (num_classes,) or not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
        raise ValueError(
            f"class_counts must be {num_classes} non-negative integers (labels per class, in probs' "
            f"column order), got dtype {c.dtype} shape {c.shape}"
        )
    return c.astype(np.int64)


def rank(
    strategy: str,
    *,
    probs: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    labeled_mask: np.ndarray,
    k: int,
    seed: int = 0,
    class_counts: np.ndarray | None = None,
) -> Ranking:
    """Rank up to ``k`` unlabelled items for labelling with the named strategy.

    Parameters
    ----------
    strategy : str
        A key of ``STRATEGIES``: random, least_confidence, margin, entropy, kcenter, cluster_uncertain,
        cold_start, class_balance.
    probs : np.ndarray, shape (N, C), optional
        Predicted class probabilities (rows sum to 1). Needed by every strategy that reads the model.
    embeddings : np.ndarray, shape (N, D), optional
        One vector per item (model embeddings, or flattened pixels before any model exists).
    labeled_mask : np.ndarray of bool, shape (N,)
        True where the item already has a human label; those items are never returned.
    k : int
        How many items to return (≥ 1). When fewer items are unlabelled, all of them are returned.
    seed : int
        Seeds the random strategy and k-means.
    class_counts : np.ndarray of int, shape (C,), optional
        Human labels per class so far, for ``class_balance``.

    Returns
    -------
    Ranking
        ``min(k, number unlabelled)`` positions, best first.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {sorted(STRATEGIES)}")
    spec = STRATEGIES[strategy]
    given = {"probs": probs, "embeddings": embeddings, "class_counts": class_counts}
    missing = sorted(name for name in spec.needs if given[name] is None)
    if missing:
        raise ValueError(f"strategy {strategy!r} needs {', '.join(missing)}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer ≥ 1, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")

    mask = as_labeled_mask(labeled_mask)
    n = len(mask)
    p = None if probs is None else as_probs(probs, n=n)
    e = None if embeddings is None else _as_embeddings(embeddings, n=n)
    # class_counts is checked against probs' classes; without probs no strategy can read it.
    counts = None
    if class_counts is not None and p is not None:
        counts = _as_class_counts(class_counts, num_classes=p.shape[1])

    unlabeled = np.flatnonzero(~mask)
    if unlabeled.size == 0:
        return Ranking(np.empty(0, dtype=np.int64), np.empty(0), [])
    inputs = _Inputs(
        unlabeled=unlabeled,
        labeled=np.flatnonzero(mask),
        k=min(int(k), unlabeled.size),
        seed=int(seed),
        probs=p,
        embeddings=e,
        class_counts=counts,
    )
    return spec.fn(inputs)


# ---------------------------------------------------------------------------------------------------
# Shared pieces


def _top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: best class, its probability, runner-up class, its probability (ties → lower class)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(probs))
    return order[:, 0], probs[rows, order[:, 0]], order[:, 1], probs[rows, order[:, 1]]


def _best_first(score: np.ndarray, *, higher_first: bool) -> np.ndarray:
    """Order of ``score`` best first; the stable sort breaks ties by position (lowest first)."""
    return np.argsort(-score if higher_first else score, kind="stable")


def _ranking(positions: np.ndarray, scores: np.ndarray, reasons: list[str]) -> Ranking:
    return Ranking(np.asarray(positions, dtype=np.int64), np.asarray(scores, dtype=np.float64), reasons)


def _sq_dist_to_nearest(x: np.ndarray, centres: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    """(len(x),) squared distance from each row of ``x`` to its nearest row of ``centres`` (inf if
    none). Chunked so that N × (labelled set) never has to fit in memory at once."""
    nearest = np.full(len(x), np.inf)
    x_sq = np.einsum("ij,ij->i", x, x)
    for start in range(0, len(centres), chunk):
        c = centres[start : start + chunk]
        # |x|² is the same along a row, so it is added after the min instead of to every entry.
        d = np.einsum("ij,ij->i", c, c)[None, :] - 2.0 * (x @ c.T)
        nearest = np.minimum(nearest, x_sq + d.min(axis=1))
    return np.maximum(nearest, 0.0)


def _farthest_first(
    x: np.ndarray, anchors: np.ndarray, count: int, *, first: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Sener & Savarese 2018, Alg. 1) over the rows of ``x``: ``count`` times take
    the row farthest from its nearest centre, then make it a centre. The centres start as
    ``anchors`` (A, D); when there are none, the farthest point is undefined and row ``first`` is
    taken first. Returns the rows taken, in order, and each one's distance to its nearest centre at
    the time it was taken (NaN for a forced ``first``)."""
    x_sq = np.einsum("ij,ij->i", x, x)
    nearest = _sq_dist_to_nearest(x, anchors)
    taken: list[int] = []
    dists: list[float] = []
    for _ in range(count):
        i = int(np.argmax(nearest)) if len(anchors) or taken else first
        taken.append(i)
        dists.append(float(np.sqrt(max(nearest[i], 0.0))) if np.isfinite(nearest[i]) else np.nan)
        nearest = np.minimum(nearest, np.maximum(x_sq + x_sq[i] - 2.0 * (x @ x[i]), 0.0))
        # Duplicates sit at distance 0 from the new centre; -inf keeps the taken row from being
        # taken again when every remaining distance is 0.
        nearest[i] = -np.inf
    return np.asarray(taken, dtype=np.int64), np.asarray(dists)


def _kmeans(x: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels (len(x),) and centres (n_clusters, D). Clusters can be empty when ``x`` has
    fewer distinct rows than ``n_clusters``; callers fill up from the remaining items."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    # One k-means++ seeding and at most 100 Lloyd steps: the clusters only need to keep a batch from
    # repeating itself, and on 20,000 × 128 embeddings three restarts tripled the time for an
    # inertia within 1% (measured on a 10-mode mixture).
    km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=100, random_state=seed)
    with warnings.catch_warnings():
        # Raised when duplicates leave clusters empty, which the callers handle by filling up.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(x)
    return km.labels_, km.cluster_centers_


# ---------------------------------------------------------------------------------------------------
# Strategies


@_register(
    "random",
    needs=(),
    summary="Uniformly at random (seeded): the baseline every other strategy must beat.",
    score="a uniform draw in [0, 1); higher first",
)
def _random(inp: _Inputs) -> Ranking:
    draw = np.random.default_rng(inp.seed).random(inp.unlabeled.size)
    top = _best_first(draw, higher_first=True)[: inp.k]
    return _ranking(inp.unlabeled[top], draw[top], [f"random pick (seed {inp.seed})"] * len(top))


@_register(
    "least_confidence",
    needs=("probs",),
    summary="Items whose most likely class has the lowest probability.",
    score="1 − max p; higher first",
)
def _least_confidence(inp: _Inputs) -> Ranking:
    assert inp.probs is not None
    c1, p1, _, _ = _top2(inp.probs[inp.unlabeled])
    score = 1.0 - p1
    top = _best_first(score, higher_first=True)[: inp.k]
    reasons = [f"top class {c1[i]} at only {p1[i]:.0%} — the model is unsure" for i in top]
    return _ranking(inp.unlabeled[top], score[top], reasons)


@_register(
    "margin",
    needs=("probs",),
    summary="Items where the two most likely classes are closest: points on a decision boundary.",
    score="p1 − p2 (best minus runner-up); lower first",
)
def _margin(inp: _Inputs) -> Ranking:
    assert inp.probs is not None
    c1, p1, c2, p2 = _top2(inp.probs[inp.unlabeled])
    score = p1 - p2
    top = _best_first(score, higher_first=False)[: inp.k]
    reasons = [f"margin {score[i]:.2f} between {c1[i]} and {c2[i]} — the model can't decide" for i in top]
    return _ranking(inp.unlabeled[top], score[top], reasons)


@_register(
    "entropy",
    needs=("probs",),
    summary="Items whose predicted distribution is flattest (highest entropy).",
    score="entropy −Σ p log p in nats; higher first",
)
def _entropy(inp: _Inputs) -> Ranking:
    assert inp.probs is not None
    p = inp.probs[inp.unlabeled]
    # 0 · log 0 = 0: where p is 0 the term is dropped instead of producing NaN.
    score = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)
    top = _best_first(score, higher_first=True)[: inp.k]
    ceiling = np.log(p.shape[1])
    reasons = [f"entropy {score[i]:.2f} of at most {ceiling:.2f} — no class stands out" for i in top]
    return _ranking(inp.unlabeled[top], score[top], reasons)


@_register(
    "kcenter",
    needs=("embeddings",),
    summary="Core-set: the item farthest from everything labelled or already picked, repeatedly.",
    score="Euclidean distance to the nearest labelled or earlier pick when picked; higher first "
    "(with no labels the first pick is the item nearest the mean, scored by its distance to it)",
)
def _kcenter(inp: _Inputs) -> Ranking:
    assert inp.embeddings is not None
    x = inp.embeddings[inp.unlabeled]
    # With nothing labelled, start at the most typical item (nearest the mean) and spread out from it.
    to_mean = np.sqrt(_sq_dist_to_nearest(x, x.mean(axis=0, keepdims=True)))
    first = int(np.argmin(to_mean))
    taken, dists = _farthest_first(x, inp.embeddings[inp.labeled], inp.k, first=first)
    reasons = [f"{d:.2f} from anything labelled or picked — an unexplored region" for d in dists]
    if not inp.labeled.size:
        dists[0] = to_mean[first]
        reasons[0] = f"nearest the centre of the data ({to_mean[first]:.2f} from the mean) — a typical start"
    return _ranking(inp.unlabeled[taken], dists, reasons)


@_register(
    "cluster_uncertain",
    needs=("probs", "embeddings"),
    summary="k-means on the unlabelled items, then the smallest-margin item of each cluster, so a "
    "batch is not k near-copies of one confusing image.",
    score="p1 − p2 of the pick; lower first",
)
def _cluster_uncertain(inp: _Inputs) -> Ranking:
    assert inp.probs is not None and inp.embeddings is not None
    c1, p1, c2, p2 = _top2(inp.probs[inp.unlabeled])
    margin = p1 - p2
    by_margin = _best_first(margin, higher_first=False)
    sizes = np.ones(inp.unlabeled.size, dtype=np.int64)
    picks: list[int] = []
    if inp.k < inp.unlabeled.size:
        clusters, _ = _kmeans(inp.embeddings[inp.unlabeled], inp.k, inp.seed)
        counts = np.bincount(clusters, minlength=inp.k)
        sizes = counts[clusters]
        # by_margin is sorted, so the first member of each cluster met in it is that cluster's pick.
        _, first_seen = np.unique(clusters[by_margin], return_index=True)
        picks = sorted(by_margin[first_seen].tolist(), key=lambda i: (margin[i], i))
    reasons = [
        f"margin {margin[i]:.2f} between {c1[i]} and {c2[i]}; the most uncertain of a group of "
        f"{sizes[i]} similar item{'s' if sizes[i] != 1 else ''}"
        for i in picks
    ]
    # Fill up by margin alone: every item (k ≥ unlabelled) or clusters left empty by duplicates.
    chosen = set(picks)
    extra = [int(i) for i in by_margin if int(i) not in chosen][: inp.k - len(picks)]
    reasons += [f"margin {margin[i]:.2f} between {c1[i]} and {c2[i]} — the model can't decide" for i in extra]
    top = np.asarray(picks + extra, dtype=np.int64)
    return _ranking(inp.unlabeled[top], margin[top], reasons)


@_register(
    "cold_start",
    needs=("embeddings",),
    summary="Before any model: k-means, the item nearest each centre (typical), ordered so "
    "consecutive picks are far apart (diverse).",
    score="size of the cluster the pick stands for, 0 for a fill-up when the data has fewer distinct "
    "items than k (order is farthest-first, not by score)",
)
def _cold_start(inp: _Inputs) -> Ranking:
    assert inp.embeddings is not None
    x = inp.embeddings[inp.unlabeled]
    sizes = np.ones(len(x), dtype=np.int64)
    reps = np.empty(0, dtype=np.int64)
    if inp.k < len(x):
        clusters, centres = _kmeans(x, inp.k, inp.seed)
        counts = np.bincount(clusters, minlength=inp.k)
        found = []
        for c in np.flatnonzero(counts):
            members = np.flatnonzero(clusters == c)
            found.append(members[np.argmin(_sq_dist_to_nearest(x[members], centres[c : c + 1]))])
            sizes[found[-1]] = counts[c]
        reps = np.asarray(found, dtype=np.int64)

    # Candidates are the representatives, or every item when k covers them all. With no labels the
    # first pick is the largest cluster's representative.
    pool = reps if reps.size else np.arange(len(x))
    labeled = inp.embeddings[inp.labeled]
    order, _ = _farthest_first(x[pool], labeled, min(inp.k, len(pool)), first=int(np.argmax(sizes[pool])))
    taken = pool[order]
    reasons = [
        f"typical of a group of {sizes[i]} item{'s' if sizes[i] != 1 else ''} and far from the other picks"
        for i in taken
    ]
    if len(taken) < inp.k:
        # Duplicates left clusters empty: fill up from the other items by the same farthest-first rule.
        free = np.setdiff1d(np.arange(len(x)), taken)
        extra, _ = _farthest_first(x[free], np.concatenate([x[taken], labeled]), inp.k - len(taken))
        taken = np.concatenate([taken, free[extra]])
        sizes[free[extra]] = 0
        reasons += ["fills the batch: the data has fewer distinct groups than asked for"] * len(extra)
    return _ranking(inp.unlabeled[taken], sizes[taken], reasons)


@_register(
    "class_balance",
    needs=("probs", "class_counts"),
    summary="Items predicted for classes with few labels, so rare classes catch up.",
    score="p(predicted class) / (1 + labels of that class); higher first, ties → smaller margin",
)
def _class_balance(inp: _Inputs) -> Ranking:
    assert inp.probs is not None and inp.class_counts is not None
    c1, p1, _, p2 = _top2(inp.probs[inp.unlabeled])
    have = inp.class_counts[c1]
    score = p1 / (1.0 + have)
    # lexsort's last key is the primary one: score desc, then margin asc, then position.
    top = np.lexsort((np.arange(len(score)), p1 - p2, -score))[: inp.k]
    reasons = [
        f"predicted {c1[i]} ({p1[i]:.0%}), a class with only {have[i]} label{'s' if have[i] != 1 else ''}"
        for i in top
    ]
    return _ranking(inp.unlabeled[top], score[top], reasons)
