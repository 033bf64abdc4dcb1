"""Publish a fast-model version: cached features → feature-space SSL head → predictions for every item.

This is what makes predictions follow the expert within seconds of a label: the features are
cached (``labelkit.features``), the k-NN graph is kept between refreshes (``FastState``), and a
refresh is one head fit plus writing the version. The version is a head on the frozen backbone
(``models.from_checkpoint`` rebuilds it), so export, predict and the pages use it like any other.

Its accuracy estimate is honest by construction: cross-validated over the human labels (each
labelled item predicted by a model fitted without it), reported with a Wilson interval and the
number of items behind it. The same estimate of the plain supervised head is the floor: when
logistic regression on the same features would do better, the version says so and the next
refresh serves logistic regression.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelkit import fast
from labelkit.atomic import write_atomically
from labelkit.backbones import WeightsNotFound
from labelkit.features import Plan, feature_model, features, plan
from labelkit.store import Store
from labelkit.store.versions import FAST_PREFIX

Report = Callable[[dict[str, Any]], Any]


class NotEnoughLabels(ValueError):
    """Fewer than two labelled classes: nothing to fit yet."""


@dataclass
class FastState:
    """What a worker keeps between refreshes: the features and their graph for one item set."""

    key: tuple[Any, ...] | None = None  # ``stamp`` of the items and settings ``fs`` was built for
    plan_memo: tuple[tuple[Any, ...], Plan | Exception] | None = None  # ``current_plan``'s answer
    ids: np.ndarray | None = None
    fs: fast.FeatureSet | None = None
    plan: Plan | None = None
    model: Any = None  # the feature model (a Classifier whose body is the backbone)
    emb_file: Any = None  # the unit embeddings saved once, hard-linked into each version
    served: str | None = None  # the method the last estimate chose (the floor may switch it)
    timings: dict[str, float] = field(default_factory=dict)


def stamp(store: Store) -> tuple[Any, ...]:
    """What the features and the plan depend on, in two small queries: the items (imported,
    excluded, restored) and the workspace settings."""
    return (store.item_stamp(), tuple(sorted(store.settings.all().items())))


def current_plan(store: Store, state: FastState, key: tuple[Any, ...] | None = None) -> Plan:
    """``features.plan(store)``, decided again only when ``stamp`` changed: deciding reads every
    item and hashes the weights, too much for each look at the queue. A ``WeightsNotFound`` is
    remembered and raised again the same way."""
    key = stamp(store) if key is None else key
    if state.plan_memo is None or state.plan_memo[0] != key:
        try:
            state.plan_memo = (key, plan(store))
        except WeightsNotFound as error:
            state.plan_memo = (key, error)
    answer = state.plan_memo[1]
    if isinstance(answer, Exception):
        raise answer
    return answer


def prepare(
    store: Store, state: FastState, *, report: Report | None = None, stop: Callable[[], bool] | None = None
) -> FastState:
    """Bring ``state`` up to date with the workspace's active items (caches filled as needed).

    Cheap when nothing changed (two small queries): a refresh after a label must not read the item
    table of a 100,000-item workspace, let alone decide the plan again."""
    key = stamp(store)
    if state.key == key and state.fs is not None:
        return state
    ids = store.active_item_ids()
    workspace_plan = current_plan(store, state, key)

    def progress(phase: str, done: int, total: int) -> None:
        if report is not None:
            report({"phase": phase, "done": done, "total": total})

    t0 = time.perf_counter()
    model = feature_model(workspace_plan, max(2, len(store.classes())))
    got, feats, _failed = features(store, workspace_plan, model, ids.tolist(), progress=progress, stop=stop)
    t1 = time.perf_counter()
    fs = fast.FeatureSet(feats)
    folder = store.workspace.cache / "fast"
    folder.mkdir(parents=True, exist_ok=True)
    emb_file = folder / f"embeddings-{secrets.token_hex(4)}.npy"
    write_atomically(emb_file, lambda h: np.save(h, fs.emb), durable=True)
    for old in folder.glob("embeddings-*.npy"):
        if old != emb_file:
            old.unlink(missing_ok=True)  # versions keep their own hard link
    state.key, state.ids, state.fs, state.plan, state.model = key, got, fs, workspace_plan, model
    state.emb_file = emb_file
    state.timings = {"features_s": t1 - t0}
    return state


def _labels(store: Store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    """(row in ``ids``, class index, is-human flag) of each labelled item, and the classes."""
    classes = store.classes()
    index = {c.id: i for i, c in enumerate(classes)}
    rows = store.current_labels_by_source().itertuples(index=False)
    pos = {int(i): r for r, i in enumerate(ids)}
    keep = [
        (pos[int(i)], index[int(c)], src == "human")
        for i, c, src in rows
        if int(i) in pos and int(c) in index
    ]
    if not keep:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), classes
    r, y, h = zip(*keep, strict=True)
    return np.asarray(r, np.int64), np.asarray(y, np.int64), np.asarray(h, bool), classes


def estimate(
    fs: fast.FeatureSet,
    rows: np.ndarray,
    y: np.ndarray,
    human: np.ndarray,
    k: int,
    method: str,
    *,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Cross-validated accuracy over the human labels (others still train), with its interval."""
    from labelkit.estimate import wilson_interval

    if human.sum() < 2 or len(np.unique(y[human])) < 2:
        return {
            "n": int(human.sum()),
            "accuracy": None,
            "ci95": None,
            "how": "too few human labels to estimate",
        }
    # Non-human labels (imported, accepted pseudo-labels) always train and are never scored.
    counted = fast.cross_validated(fs, rows, y, k, method=method, scored=human, stop=stop)
    if counted is None:
        return None
    correct, n = counted
    if n == 0:
        return {"n": 0, "accuracy": None, "ci95": None, "how": "too few human labels to estimate"}
    low, high = wilson_interval(correct, n)
    # ``low``/``high``/``method`` are labelkit.estimate's stored form (``labelkit versions`` reads it).
    return {
        "n": n,
        "accuracy": correct / n,
        "ci95": [low, high],
        "low": low,
        "high": high,
        "method": f"cv_fast_{method}",
        "how": "5-fold cross-validation over human labels",
    }


def publish(
    store: Store,
    state: FastState,
    *,
    method: str | None = None,
    report: Report | None = None,
) -> int:
    """Fit the fast model on the current labels and record it as a model version; returns its id."""
    from labelkit.worker import record_version, round_trip, write_version_folder

    assert state.fs is not None and state.ids is not None and state.plan is not None
    t0 = time.perf_counter()
    last_annotation = store.last_annotation_id()
    rows, y, human, classes = _labels(store, state.ids)
    if len(np.unique(y)) < 2:
        raise NotEnoughLabels(
            f"need labels of at least two classes for the fast model; have {len(y)} in {len(np.unique(y))}"
        )
    k = len(classes)
    chosen = method or store.settings.get("fast_method") or fast.DEFAULT_FAST_METHOD
    served = state.served if (state.served and method is None) else chosen
    head = fast.fit(state.fs, rows, y, k, method=served, warm=True)
    probs = head.probs(state.fs.emb)
    t_fit = time.perf_counter() - t0

    plan_ = state.plan
    config: dict[str, Any] = {"model": plan_.backbone, "fast_method": served}
    checkpoint = {
        "kind": "fast",
        "config": config,
        "head_on_embedding": True,
        "state_dict": _head_state(state.model, head),
        "weights": plan_.weights.to_dict() if plan_.weights else None,
        "class_ids": [c.id for c in classes],
        "class_names": [c.name for c in classes],
        "in_channels": plan_.image.channels,
        "image_size": plan_.image.size,
        "fit": plan_.image.fit,
    }
    folder = write_version_folder(
        store.workspace, f"fast-{served}", checkpoint, state.ids, probs, state.emb_file, config
    )
    metrics: dict[str, Any] = {
        "kind": "fast",
        "train_labels": len(y),
        "human_labels": int(human.sum()),
        "last_annotation_id": last_annotation,
        "fit_s": t_fit,
        "plan": {"backbone": plan_.backbone, "why": plan_.why, "image": plan_.image.key},
        **state.timings,
    }
    emb_lb = state.fs.emb[rows]
    unl = np.setdiff1d(np.arange(len(state.ids)), rows)
    if len(unl):
        metrics["round_trip"] = round_trip(emb_lb, y, state.fs.emb[unl], k, seed=0)
    version_id = record_version(
        store,
        method=f"{FAST_PREFIX}{served}",
        backbone=plan_.backbone,
        config=config,
        metrics=metrics,
        classes=[(c.id, c.name) for c in classes],
        device="cpu (fast model)",
        folder=folder,
        item_ids=state.ids,
        probs=probs,
    )
    if report is not None:
        report({"phase": "fast model", "version": version_id, "fit_s": t_fit})
    return version_id


def assess(
    store: Store,
    state: FastState,
    version_id: int,
    *,
    chosen: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """The honest estimate of a published fast version, recorded in its metrics; run after
    ``publish`` so predictions never wait for it. Also the floor: when logistic regression on the
    same features estimates better than the chosen method, the next refresh serves it (and the
    version says so). Returns None, recording nothing, when ``stop()`` turned true (new labels:
    a newer version will need its own estimate)."""
    assert state.fs is not None and state.ids is not None
    rows, y, human, classes = _labels(store, state.ids)
    k = len(classes)
    chosen = chosen or store.settings.get("fast_method") or fast.DEFAULT_FAST_METHOD
    estimates: dict[str, Any] = {}
    for m in dict.fromkeys([chosen, "supervised"]):
        result = estimate(state.fs, rows, y, human, k, m, stop=stop)
        if result is None:
            return None
        estimates[m] = result
    ours, base = estimates[chosen]["accuracy"], estimates["supervised"]["accuracy"]
    served = store.versions.get(version_id).config.get("fast_method", chosen)
    update: dict[str, Any] = {"estimates": estimates, "estimate": estimates.get(served, estimates[chosen])}
    est = update["estimate"]
    if est["accuracy"] is not None:  # the fields the Train and Export pages already show
        update.update(holdout_accuracy=est["accuracy"], holdout_ci95=est["ci95"], holdout_labels=est["n"])
    if ours is not None and base is not None and base > ours:
        state.served = "supervised"
        update["floor"] = (
            f"{chosen} estimated {ours:.1%} < logistic regression on the same features {base:.1%}: "
            "the next refresh serves logistic regression until it is overtaken"
        )
    else:
        state.served = chosen
    store.versions.update_metrics(version_id, update)
    return update


def _head_state(model: Any, head: fast.Head) -> dict[str, Any]:
    """The tensors a fast checkpoint keeps: the head and the backbone's input statistics."""
    import torch

    return {
        "classifier.weight": torch.from_numpy(head.weight),
        "classifier.bias": torch.from_numpy(head.bias),
        "input_mean": model.input_mean.clone(),
        "input_std": model.input_std.clone(),
    }


def summary(versions: list[Any], *, now: float | None = None) -> dict[str, Any] | None:
    """What the Train page shows of the newest fast version among ``versions`` (None if none)."""
    fast_versions = [v for v in versions if v.metrics.get("kind") == "fast"]
    if not fast_versions:
        return None
    v = max(fast_versions, key=lambda v: v.id)
    m = v.metrics
    est = m.get("estimate")
    if est is None:
        accuracy, how = "estimating…", "cross-validation runs while no new labels arrive"
    elif est.get("accuracy") is None:
        accuracy, how = "–", est.get("how", "")
    else:
        low, high = est["ci95"]
        accuracy = f"{est['accuracy']:.0%}"
        how = f"{est['how']}: 95 % interval {low:.0%}–{high:.0%} over {est['n']} labels"
    seconds = (now if now is not None else time.time()) - v.created_at.timestamp()
    age = f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"
    plan_ = m.get("plan", {})
    return {
        "version": v.id,
        "method": v.method,
        "labels": m.get("train_labels"),
        "age": age,
        "accuracy": accuracy,
        "how": how,
        "detail": (
            f"{v.method} on {plan_.get('backbone', v.backbone)} features ({plan_.get('why', '')}); "
            f"fitted in {m.get('fit_s', float('nan')):.1f} s; predicts all {v.num_items} items."
        ),
        "floor": m.get("floor"),
    }
