"""Queue orders: which items the Label page shows next, registered by name.

A queue order is a function ``(store, *, where, start_key, limit, exclude) -> list[int]`` returning
up to ``limit`` item ids, best first. Active-learning strategies register further orders here.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from labelkit.store import QueueFilter, Store

# Item.rand_key is drawn from 62 random bits; a start key from the same range makes every
# position on the ring equally likely to come first.
RAND_KEY_BITS = 62


class QueueOrder(Protocol):
    def __call__(
        self,
        store: Store,
        *,
        where: QueueFilter,
        start_key: int,
        limit: int,
        exclude: Sequence[int],
    ) -> list[int]: ...


QUEUE_ORDERS: dict[str, QueueOrder] = {}


def register_queue_order(name: str) -> Callable[[QueueOrder], QueueOrder]:
    """Decorator adding an order to ``QUEUE_ORDERS``; a name already taken raises ``ValueError``."""

    def add(order: QueueOrder) -> QueueOrder:
        if name in QUEUE_ORDERS:
            raise ValueError(f"queue order {name!r} is already registered")
        QUEUE_ORDERS[name] = order
        return order

    return add


def queue_order(name: str) -> QueueOrder:
    """The order registered as ``name``; an unknown name raises ``ValueError`` listing valid ones."""
    try:
        return QUEUE_ORDERS[name]
    except KeyError:
        valid = ", ".join(sorted(QUEUE_ORDERS))
        raise ValueError(f"unknown queue order {name!r}; valid orders: {valid}") from None


def new_start_key() -> int:
    """A random place on the ring of item keys, drawn once per labelling session."""
    return secrets.randbits(RAND_KEY_BITS)


@register_queue_order("random")
def random_order(
    store: Store,
    *,
    where: QueueFilter,
    start_key: int,
    limit: int,
    exclude: Sequence[int],
) -> list[int]:
    """Raised-priority items first, then the store's ring of random keys walked from ``start_key``.

    Each session starts at its own key, so two annotators rarely see the same item at once.
    """
    return store.queue_ids(start_key=start_key, limit=limit, where=where, exclude=exclude)


# ------------------------------------------------------------------------------ active learning
# Strategies of ``labelkit.active`` that need a model; each becomes a queue order of the same name.
# Until a model version exists they use the cold_start order below (typical, diverse items: nothing
# is known yet about what is uncertain); for filters other than "unlabelled", the random ring.
ACTIVE_ORDERS = ("margin", "entropy", "least_confidence", "kcenter", "cluster_uncertain", "class_balance")
UNLABELLED = QueueFilter(labeled=False)
_REASONS_KEPT = 10_000
_reasons: dict[tuple[str, int], str] = {}
_reasons_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _version_arrays(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A model version's (item_ids, probs, embeddings); versions are immutable, so cache them."""
    path = Path(folder)
    return (
        np.load(path / "item_ids.npy"),
        np.load(path / "probs.npy"),
        np.load(path / "embeddings.npy", mmap_mode="r"),
    )


def reason(order: str, item_id: int) -> str | None:
    """Why ``order`` proposed ``item_id`` (shown under the image), if it was an active-learning pick."""
    with _reasons_lock:
        return _reasons.get((order, item_id))


def _remember(order: str, item_ids: Sequence[int], reasons: Sequence[str]) -> None:
    with _reasons_lock:
        if len(_reasons) > _REASONS_KEPT:
            _reasons.clear()
        _reasons.update({(order, int(i)): r for i, r in zip(item_ids, reasons, strict=True)})


def _raised(store: Store, ring: Sequence[int]) -> list[int]:
    """Items of ``ring`` the expert sent back (raised priority, e.g. rejected pseudo-labels): they
    come before any strategy's picks."""
    return [item.id for item in store.items(ring) if item.priority > 0]


def _taken_mask(table: pd.DataFrame, item_ids: np.ndarray, exclude: Sequence[int]) -> np.ndarray:
    """True where an item of ``item_ids`` must not be proposed: labelled, no longer active, or in
    ``exclude``. Strategies treat these as the labelled set."""
    taken = set(table.loc[table["class_id"].notna() | (table["status"] != "active"), "item_id"])
    taken.update(exclude)
    return np.isin(item_ids, np.fromiter(taken, dtype=np.int64, count=len(taken)))


def _fill_from_ring(
    store: Store, first: list[int], *, where: QueueFilter, start_key: int, limit: int, exclude: Sequence[int]
) -> list[int]:
    """``first`` (duplicates dropped), then the ring for the items no strategy ranked: those imported
    after the model or the embeddings were computed."""
    out = list(dict.fromkeys(first))[:limit]
    if len(out) < limit:
        out += store.queue_ids(
            start_key=start_key, limit=limit - len(out), where=where, exclude=[*exclude, *out]
        )
    return out


def _active_order(strategy: str) -> QueueOrder:
    from labelkit import active

    spec = active.STRATEGIES[strategy]

    def order(
        store: Store, *, where: QueueFilter, start_key: int, limit: int, exclude: Sequence[int]
    ) -> list[int]:
        version = store.versions.latest()
        if version is None:
            ids = cold_start_order(store, where=where, start_key=start_key, limit=limit, exclude=exclude)
            with _reasons_lock:
                why = {i: _reasons.get(("cold_start", i)) for i in ids}
            shown = [i for i in ids if why[i]]
            _remember(strategy, shown, [f"no model yet, so {why[i]}" for i in shown])
            return ids
        ring = store.queue_ids(start_key=start_key, limit=limit, where=where, exclude=exclude)
        if where != UNLABELLED:
            return ring
        raised = _raised(store, ring)
        item_ids, probs, embeddings = _version_arrays(str(store.workspace.path(version.path)))
        table = store.item_table()
        labeled = _taken_mask(table, item_ids, [*exclude, *raised])
        inputs: dict[str, object] = {}
        if "probs" in spec.needs or "class_counts" in spec.needs:
            inputs["probs"] = probs
        if "embeddings" in spec.needs:
            inputs["embeddings"] = embeddings
        if "class_counts" in spec.needs:
            column = {c["id"]: i for i, c in enumerate(version.classes)}
            counts = np.zeros(probs.shape[1], dtype=np.int64)
            for class_id, n in table["class_id"].dropna().astype(int).value_counts().items():
                if class_id in column:
                    counts[column[class_id]] = n
            inputs["class_counts"] = counts
        picked: list[int] = []
        if (~labeled).any():
            ranking = active.rank(strategy, labeled_mask=labeled, k=limit, seed=start_key % 2**31, **inputs)  # type: ignore[arg-type]
            picked = [int(i) for i in item_ids[ranking.indices]]
            _remember(strategy, picked, ranking.reasons)
        return _fill_from_ring(
            store, raised + picked, where=where, start_key=start_key, limit=limit, exclude=exclude
        )

    order.__doc__ = f"Active learning, {strategy}: {spec.summary}"
    return order


for _name in ACTIVE_ORDERS:
    register_queue_order(_name)(_active_order(_name))


# ------------------------------------------------------------------------------ cold start
# Before any model: ``active``'s cold_start strategy over the raw-pixel embeddings of
# ``labelkit.coldstart``. The Label page asks for one item at a time, and a ranking of one is the
# single most typical item (k-means with one centre), again and again; so a batch is ranked once
# per session and walked, and ranked anew, from the items labelled and seen so far, when used up.
COLD_START_BATCH = 50
_SESSIONS_KEPT = 32
_cold_batches: dict[tuple[str, int, int, int], list[int]] = {}


@functools.lru_cache(maxsize=2)
def _cold_start_arrays(folder: str, inode: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids, embeddings) of one cache folder; ``inode`` and ``mtime_ns`` tell its versions apart."""
    from labelkit.coldstart import load_cold_start

    return load_cold_start(Path(folder))


@register_queue_order("cold_start")
def cold_start_order(
    store: Store,
    *,
    where: QueueFilter,
    start_key: int,
    limit: int,
    exclude: Sequence[int],
) -> list[int]:
    """Before any model: items typical of a group of similar-looking images, each far from the
    others (k-means over raw-pixel PCA embeddings); raised-priority items first, new imports last."""
    from labelkit import active
    from labelkit.coldstart import ensure_cold_start

    ring = store.queue_ids(start_key=start_key, limit=limit, where=where, exclude=exclude)
    if where != UNLABELLED:
        return ring
    raised = _raised(store, ring)
    folder = ensure_cold_start(store)
    info = folder.stat()
    item_ids, embeddings = _cold_start_arrays(str(folder), info.st_ino, info.st_mtime_ns)
    labeled = _taken_mask(store.item_table(), item_ids, [*exclude, *raised])
    key = (str(folder), info.st_ino, info.st_mtime_ns, start_key)
    with _reasons_lock:
        batch = [p for p in _cold_batches.get(key, []) if not labeled[p]]
    if len(batch) < limit and int((~labeled).sum()) > len(batch):
        ranking = active.rank(
            "cold_start",
            embeddings=embeddings,
            labeled_mask=labeled,
            k=max(limit, COLD_START_BATCH),
            seed=start_key % 2**31,
        )
        batch = [int(p) for p in ranking.indices]
        _remember("cold_start", [int(i) for i in item_ids[batch]], ranking.reasons)
        with _reasons_lock:
            if len(_cold_batches) >= _SESSIONS_KEPT:
                _cold_batches.clear()
            _cold_batches[key] = batch
    picked = [int(i) for i in item_ids[batch[:limit]]]
    return _fill_from_ring(
        store, raised + picked, where=where, start_key=start_key, limit=limit, exclude=exclude
    )
