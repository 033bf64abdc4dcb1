"""The fast model: a linear head on cached embeddings, refreshed within seconds of a new label.

Every method here is semi-supervised in feature space: it turns the labels and the embeddings of
*all* items into per-item targets and weights (``Targets``), and one weighted, L2-regularised
softmax regression (``fit_head``) fits a linear head to them. Being linear on the unit embedding,
the head folds into the backbone's ``Classifier`` (``head_on_embedding=True``), so a fast version
exports, predicts and warm-starts like any other model version.

Methods (registered in ``FAST_METHODS``; the default is the best measured by
benchmarks/bench_photos.py, see ``DEFAULT_FAST_METHOD``):

- ``supervised``: the labelled items alone (logistic regression on the embeddings).
- ``labelprop``: label spreading over the k-nearest-neighbour graph (Zhou et al. 2004,
  "Learning with local and global consistency", Eq. 4 iterated; affinities sᵞ as in Iscen et
  al. 2019), then the head learns every item's spread label weighted by its certainty.
- ``pseudolabel``: self-training: fit, add unlabelled items predicted with probability ≥ τ,
  refit (Lee 2013, in feature space).
- ``association``: learning by association (Haeusser et al. 2017, Eq. 1–6) on a linear
  projection of the embeddings, the head on top; both linear, so they fold into one head.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_FAST_METHOD = "association"


class Interrupted(Exception):
    """A fit abandoned because ``stop()`` turned true (new labels arrived during an estimate)."""


def _check(stop: Callable[[], bool] | None) -> None:
    if stop is not None and stop():
        raise Interrupted


@dataclass(frozen=True)
class Targets:
    """What the head learns: a class distribution per item (N, K) and a weight per item (N,)."""

    q: np.ndarray
    w: np.ndarray


@dataclass(frozen=True)
class Head:
    weight: np.ndarray  # (K, D): logits = emb @ weight.T + bias, emb of unit length
    bias: np.ndarray  # (K,)

    def probs(self, emb: np.ndarray) -> np.ndarray:
        logits = emb.astype(np.float32) @ self.weight.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def one_hot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k), np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def fit_head(
    emb: np.ndarray,
    targets: Targets,
    *,
    l2: float = 1e-3,
    scale: float = 10.0,
    iters: int = 100,
    init: Head | None = None,
    stop: Callable[[], bool] | None = None,
) -> Head:
    """Weighted softmax regression of ``targets.q`` on unit embeddings (N, D), by L-BFGS.

    Minimises Σᵢ wᵢ · CE(qᵢ, softmax(s·(W eᵢ) + b)) / Σᵢ wᵢ + l2 · ‖W‖²; the logit scale ``s``
    only conditions the problem (unit vectors give small dot products) and is folded into the
    returned weight. Items of zero weight cost nothing.
    """
    keep = targets.w > 0
    x = torch.from_numpy(emb[keep]).float()
    q = torch.from_numpy(targets.q[keep]).float()
    w = torch.from_numpy(targets.w[keep]).float()
    k, d = q.shape[1], x.shape[1]
    weight = torch.zeros(k, d, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    if init is not None and init.weight.shape == (k, d):
        with torch.no_grad():
            weight.copy_(torch.from_numpy(init.weight) / scale)
            bias.copy_(torch.from_numpy(init.bias))
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")
    total = w.sum().clamp_min(1e-12)

    def closure() -> Tensor:
        _check(stop)
        opt.zero_grad()
        logits = scale * x @ weight.T + bias
        loss = -(w * (q * logits.log_softmax(1)).sum(1)).sum() / total + l2 * (scale * weight).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Head(
        (scale * weight).detach().numpy().astype(np.float32), bias.detach().numpy().astype(np.float32)
    )


# ----------------------------------------------------------------------------------- methods
class FeatureSet:
    """Unit embeddings of every item, with the k-NN graph computed once and reused by every fit
    (the graph is the expensive part: O(N² D); a refresh after a label only re-spreads)."""

    def __init__(self, features: np.ndarray, *, neighbours: int = 10) -> None:
        self.emb = unit(features)
        self.neighbours = neighbours
        self._graph: object | None = None
        self.warm: dict[str, dict[str, Any]] = {}  # per method: the last warm fit's state

    def __len__(self) -> int:
        return len(self.emb)

    def graph(self) -> object:
        """S = D^-½ W D^-½ of the symmetric k-NN graph with affinities max(s, 0)ᵞ, γ = 3."""
        if self._graph is None:
            self._graph = normalised_graph(self.emb, self.neighbours)
        return self._graph


# (fs, idx, y, k, *, warm, stop) → Targets. ``warm``: a dict the method may keep state in between
# refreshes (None: start cold); ``stop``: polled while it trains (raise ``Interrupted``). A method
# with nothing to keep or to poll ignores them.
TargetFn = Callable[..., Targets]
FAST_METHODS: dict[str, TargetFn] = {}


def register(name: str) -> Callable[[TargetFn], TargetFn]:
    def add(fn: TargetFn) -> TargetFn:
        if name in FAST_METHODS:
            raise ValueError(f"fast method {name!r} registered twice")
        FAST_METHODS[name] = fn
        return fn

    return add


def fast_method(name: str) -> TargetFn:
    try:
        return FAST_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown fast method {name!r}; valid: {', '.join(sorted(FAST_METHODS))}") from None


def _labelled_targets(n: int, idx: np.ndarray, y: np.ndarray, k: int) -> Targets:
    q = np.zeros((n, k), np.float32)
    q[idx] = one_hot(y, k)
    w = np.zeros(n, np.float32)
    w[idx] = 1.0
    return Targets(q, w)


@register("supervised")
def supervised_targets(fs: FeatureSet, idx: np.ndarray, y: np.ndarray, k: int, **_ignored: Any) -> Targets:
    return _labelled_targets(len(fs), idx, y, k)


def knn_graph(emb: np.ndarray, k: int, *, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours (cosine, self excluded) of each unit row: (indices, similarities),
    each (N, k), computed block by block so memory stays O(block · N)."""
    n = len(emb)
    k = min(k, n - 1)
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for start in range(0, n, block):
        s = emb[start : start + block] @ emb.T
        rows = np.arange(len(s))
        s[rows, start + rows] = -np.inf  # not one's own neighbour
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(-s, axis=1)[:, :k]
        idx[start : start + len(s)] = part
        sim[start : start + len(s)] = np.take_along_axis(s, part, axis=1)
    return idx, sim


def normalised_graph(emb: np.ndarray, neighbours: int, *, gamma: float = 3.0) -> object:
    """S = D^-½ W D^-½ (a scipy CSR matrix) of the symmetric k-NN graph of unit rows ``emb`` with
    affinities W_ij = max(s_ij, 0)ᵞ (Iscen et al. 2019, Eq. 7 and 9)."""
    from scipy import sparse

    n = len(emb)
    nbr, sim = knn_graph(emb, neighbours)
    rows = np.repeat(np.arange(n), nbr.shape[1])
    weights = np.maximum(sim.ravel(), 0.0) ** gamma
    w = sparse.coo_matrix((weights, (rows, nbr.ravel())), shape=(n, n)).tocsr()
    w = w + w.T
    degree = np.asarray(w.sum(1)).ravel()
    d = sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    return (d @ w @ d).tocsr()


def spread(
    s: object, idx: np.ndarray, y: np.ndarray, k: int, *, alpha: float = 0.99, iters: int = 30
) -> np.ndarray:
    """Label spreading F ← α S F + (1 − α) Y (Zhou et al. 2004, Eq. 4; ``iters`` iterations of the
    fixed-point map) over the normalised graph ``s`` (N × N); returns F (N, K), non-negative,
    rows not normalised."""
    n = s.shape[0]  # type: ignore[attr-defined]
    y0 = np.zeros((n, k), np.float64)
    y0[idx] = one_hot(y, k)
    f = y0.copy()
    for _ in range(iters):
        f = alpha * (s @ f) + (1 - alpha) * y0
    return np.maximum(f, 0.0)


@register("labelprop")
def labelprop_targets(fs: FeatureSet, idx: np.ndarray, y: np.ndarray, k: int, **_ignored: Any) -> Targets:
    f = spread(fs.graph(), idx, y, k)
    # Each class's mass normalised (Iscen et al. 2019, Eq. 8's spirit): a class with more labels
    # must not flood the graph just by having more sources.
    f = f / np.maximum(f.sum(0, keepdims=True), 1e-12)
    total = f.sum(1, keepdims=True)
    q = np.where(total > 0, f / np.maximum(total, 1e-12), 1.0 / k).astype(np.float32)
    # Certainty weight 1 − H(q)/log K (Iscen et al. 2019, Eq. 9): near-ties teach the head little.
    entropy = -(q * np.log(np.clip(q, 1e-12, 1.0))).sum(1)
    w = (1.0 - entropy / math.log(k)).astype(np.float32)
    w[idx] = 1.0
    q[idx] = one_hot(y, k)
    return Targets(q, w)


@register("pseudolabel")
def pseudolabel_targets(
    fs: FeatureSet,
    idx: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    threshold: float = 0.9,
    rounds: int = 3,
    stop: Callable[[], bool] | None = None,
    **_ignored: Any,
) -> Targets:
    emb = fs.emb
    targets = _labelled_targets(len(emb), idx, y, k)
    for _round in range(rounds):
        probs = fit_head(emb, targets, stop=stop).probs(emb)
        sure = probs.max(1) >= threshold
        sure[idx] = False
        q, w = targets.q.copy(), targets.w.copy()
        q[sure] = one_hot(probs[sure].argmax(1), k)
        w[sure] = 1.0
        w[~sure] = 0.0
        w[idx] = 1.0
        q[idx] = one_hot(y, k)
        targets = Targets(q, w)
    return targets


@register("association")
def association_targets(
    fs: FeatureSet,
    idx: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    dim: int = 128,
    steps: int = 200,
    scale: float = 5.0,
    visit_weight: float = 0.1,
    seed: int = 0,
    warm: dict[str, Any] | None = None,
    warm_steps: int = 50,
    stop: Callable[[], bool] | None = None,
) -> Targets:
    """Walker + visit losses (labelkit.ssl.losses) train a linear projection with a head on top;
    its predictions on every item become the targets (confident ones weigh more). With ``warm``
    (the refresh after a label) training continues from the previous refresh's solution for
    ``warm_steps``: a few new labels move it little, and the refresh stays within seconds."""
    from labelkit.ssl.losses import association_probabilities, visit_loss, walker_loss

    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(fs.emb).float()
    x_lb, y_lb = x[torch.from_numpy(idx)], torch.from_numpy(y).long()
    proj = torch.nn.Linear(x.shape[1], dim, bias=False)
    head = torch.nn.Linear(dim, k)
    previous = warm.get("association") if warm is not None else None
    with torch.no_grad():
        if previous is not None and previous["head.weight"].shape == head.weight.shape:
            proj.weight.copy_(previous["proj.weight"])
            head.weight.copy_(previous["head.weight"])
            head.bias.copy_(previous["head.bias"])
            steps = warm_steps
        else:
            proj.weight.copy_(torch.randn(dim, x.shape[1], generator=gen) / math.sqrt(x.shape[1]))
    opt = torch.optim.Adam([*proj.parameters(), *head.parameters()], lr=1e-2, weight_decay=1e-4)
    batch = min(len(x), 256)
    for step in range(steps):
        if step % 10 == 0:
            _check(stop)
        b = x[torch.randint(len(x), (batch,), generator=gen)]
        a_emb, b_emb = F.normalize(proj(x_lb), dim=1) * scale, F.normalize(proj(b), dim=1)
        p_ab, _, p_aba = association_probabilities(a_emb, b_emb)
        loss = (
            F.cross_entropy(head(proj(x_lb)), y_lb)
            + walker_loss(p_aba, y_lb)
            + visit_weight * visit_loss(p_ab)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        probs = head(proj(x)).softmax(1).numpy()
    if warm is not None:
        warm["association"] = {
            "proj.weight": proj.weight.detach().clone(),
            "head.weight": head.weight.detach().clone(),
            "head.bias": head.bias.detach().clone(),
        }
    q = probs.astype(np.float32)
    w = (q.max(1) - 1.0 / k) / (1.0 - 1.0 / k)
    q[idx], w[idx] = one_hot(y, k), 1.0
    return Targets(q, w.astype(np.float32))


def fit(
    fs: FeatureSet,
    idx: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    method: str = DEFAULT_FAST_METHOD,
    warm: bool = False,
    stop: Callable[[], bool] | None = None,
) -> Head:
    """The fast model on ``fs`` with labels ``y`` (indices into ``range(k)``) at rows ``idx``.

    ``warm``: continue from the previous warm fit on this ``fs`` (the worker's refresh after a
    label). Never for cross-validation: a model that saw the held-out labels would flatter it.
    ``stop`` is polled during the fit; when it turns true the fit raises ``Interrupted``."""
    if len(idx) == 0 or len(np.unique(y)) < 2:
        raise ValueError("the fast model needs labels of at least two classes")
    fn = fast_method(method)
    memo = fs.warm.setdefault(method, {}) if warm else None
    targets = fn(fs, idx, y, k, warm=memo, stop=stop)
    init = memo.get("head") if memo is not None else None
    head = fit_head(fs.emb, targets, init=init, stop=stop)
    if memo is not None:
        memo["head"] = head
    return head


def cross_validated(
    fs: FeatureSet,
    idx: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    method: str,
    folds: int = 5,
    seed: int = 0,
    scored: np.ndarray | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[int, int] | None:
    """(correct, n) of ``method`` predicting each scored labelled item with its fold's labels
    hidden (stratified folds; every unlabelled item stays in the pool). ``scored`` (bool per label,
    default all) marks the labels that may be held out and scored; the others always train. Items
    of classes with a single scored label are never held out: the class would vanish from the fold.
    Returns None when ``stop()`` turned true between folds."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(idx), -1)
    scored = np.ones(len(idx), bool) if scored is None else scored
    for c in np.unique(y):
        members = np.flatnonzero((y == c) & scored)
        if len(members) < 2:
            continue
        fold[members] = rng.permutation(np.arange(len(members)) % min(folds, len(members)))
    correct = n = 0
    for f in range(folds):
        if stop is not None and stop():
            return None
        test = fold == f
        train = ~test
        if not test.any() or len(np.unique(y[train])) < 2:
            continue
        try:
            head = fit(fs, idx[train], y[train], k, method=method, stop=stop)
        except Interrupted:
            return None
        pred = head.probs(fs.emb[idx[test]]).argmax(1)
        correct += int((pred == y[test]).sum())
        n += int(test.sum())
    return correct, n
