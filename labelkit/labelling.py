"""Keyboard labelling as explicit events: what the browser's labeller sends and how the server applies it.

The labeller (``labelkit/ui/labeller/``) shows an image, takes a key and moves to the next
preloaded image at once, without waiting for the server. Every action becomes an event carrying the
id of the item that was on screen and the client's sequence number, so a label can only land on the
image the expert saw. The browser keeps every event the server has not acknowledged and sends all of
them again with each update; the server applies them in sequence order and exactly once per
``(client, seq)``: a number at or below the client's high-water mark is a repeat and is ignored, one
past a gap waits for the missing one. Nothing here imports streamlit.
"""

from __future__ import annotations

import base64
import functools
import io
import threading
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labelkit import images
from labelkit.queue import _version_arrays
from labelkit.store import ClassInfo, Store, StoreError, UndoConflictError
from labelkit.store.versions import VersionInfo

Kind = Literal["label", "skip", "undo"]
KINDS: tuple[Kind, ...] = ("label", "skip", "undo")
MAX_EVENTS = 1_000  # one update may carry this many unacknowledged events
_KEPT_PER_CLIENT = 2_000  # applied events remembered per client, for undo targets
DISPLAY_SIDE = 1024  # pixels: larger photos are scaled down before they go to the browser
TOP_K = 3


class EventError(ValueError):
    """An update from the browser that is not well formed; the message names the field."""


@dataclass(frozen=True)
class Event:
    """One action in the labeller. ``item_id`` is the item on screen when the key was pressed;
    ``class_id`` the class of a label; ``target`` the sequence number of the label an undo reverts;
    ``annotator`` the name in the sidebar at the time (an event replayed after a reload belongs to
    whoever pressed the key, not to the new session's default name)."""

    seq: int
    kind: Kind
    item_id: int
    class_id: int | None = None
    target: int | None = None
    annotator: str | None = None


@dataclass(frozen=True)
class Update:
    """What the labeller sends: its client id, the highest sequence number the server has
    acknowledged to it (``base``; 0 for a new client), its unacknowledged events and the items whose
    image it already holds (``have``: sent again without the image)."""

    client: str
    base: int
    events: tuple[Event, ...]
    have: frozenset[int] = frozenset()


def _int(raw: Mapping[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = raw.get(name)
    if value is None and optional:
        return None
    # bool is an int in Python; JSON true is not a sequence number.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EventError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def parse_update(raw: Any) -> Update | None:
    """The labeller's state value as an ``Update``; None when there is none yet. Malformed input
    raises ``EventError`` (and so applies nothing of that update)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise EventError(f"an update must be an object, got {type(raw).__name__}")
    client = raw.get("client")
    if not isinstance(client, str) or not 8 <= len(client) <= 64 or not client.isprintable():
        raise EventError(f"client must be an id of 8–64 printable characters, got {client!r}")
    base = _int(raw, "base")
    events_raw = raw.get("events")
    if not isinstance(events_raw, list) or len(events_raw) > MAX_EVENTS:
        raise EventError(f"events must be a list of at most {MAX_EVENTS} events")
    events = []
    for item in events_raw:
        if not isinstance(item, Mapping):
            raise EventError(f"an event must be an object, got {item!r}")
        kind = item.get("kind")
        if kind not in KINDS:
            raise EventError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        by = item.get("annotator")
        if by is not None and not isinstance(by, str):
            raise EventError(f"annotator must be text, got {by!r}")
        event = Event(
            seq=_int(item, "seq") or 0,
            kind=kind,
            item_id=_int(item, "item_id") or 0,
            class_id=_int(item, "class_id", optional=kind != "label"),
            target=_int(item, "target", optional=kind != "undo"),
            annotator=by,
        )
        if event.seq < 1:
            raise EventError("seq starts at 1")
        events.append(event)
    have = raw.get("have", [])
    if not isinstance(have, list) or len(have) > MAX_EVENTS:
        raise EventError(f"have must be a list of at most {MAX_EVENTS} item ids")
    held = frozenset(i for i in have if isinstance(i, int) and not isinstance(i, bool))
    return Update(client=client, base=base or 0, events=tuple(sorted(events, key=lambda e: e.seq)), have=held)


@dataclass(frozen=True)
class Applied:
    """An event the server has applied: the annotations it wrote (an undo: the rows it appended)
    and, for one the store refused, why. A refused event is still applied: sending it again would
    be refused again."""

    event: Event
    annotation_ids: tuple[int, ...] = ()
    error: str | None = None


@dataclass
class _Client:
    high: int
    applied: dict[int, Applied] = field(default_factory=dict)
    undone: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class EventLedger:
    """Applies labeller events to a store exactly once and in order, per client.

    One ledger serves every session of the server process (a reload opens a new session; the
    browser keeps its client id and re-sends what was not acknowledged). Thread-safe.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    def high_water(self, client: str) -> int | None:
        """The highest sequence number applied for ``client``; None for a client not seen."""
        with self._lock:
            known = self._clients.get(client)
        return None if known is None else known.high

    def apply(self, update: Update, *, annotator: str) -> list[Applied]:
        """Apply the events of ``update`` after the client's high-water mark, in order, up to the
        first gap, each by its own annotator or else ``annotator``; returns those applied now
        (repeats are not). A database failure other than a refusal propagates with the mark left
        before the failed event, so it is retried."""
        with self._lock:
            client = self._clients.setdefault(update.client, _Client(high=update.base))
        out: list[Applied] = []
        with client.lock:
            # A client acknowledged further than this process knows (the server restarted): the
            # events up to its base were applied by the earlier process.
            client.high = max(client.high, update.base)
            ready: list[Event] = []
            for event in update.events:
                if event.seq <= client.high + len(ready):
                    continue
                if event.seq != client.high + len(ready) + 1:
                    break  # a gap: the missing event comes with the next update
                ready.append(event)
            for group in _label_runs(ready, annotator):
                for done in self._apply_group(client, group, group[0].annotator or annotator):
                    client.applied[done.event.seq] = done
                    client.high = done.event.seq
                    out.append(done)
            for old in [s for s in client.applied if s <= client.high - _KEPT_PER_CLIENT]:
                del client.applied[old]
                client.undone.discard(old)
        return out

    def _apply_group(self, client: _Client, group: list[Event], annotator: str) -> Iterator[Applied]:
        """A run of labels in one transaction; one by one if the store refuses it, so that the
        refusal is told against its own event and the others are saved. Yields each as it is
        committed: the caller records it before a later one can fail."""
        if len(group) > 1:
            try:
                saved = self._store.label_each(
                    [(e.item_id, e.class_id) for e in group if e.class_id is not None], annotator=annotator
                )
            except StoreError:
                pass
            else:
                yield from (Applied(e, (a.id,)) for e, a in zip(group, saved, strict=True))
                return
        for event in group:
            yield self._apply_one(client, event, annotator)

    def _apply_one(self, client: _Client, event: Event, annotator: str) -> Applied:
        try:
            if event.kind == "label":
                assert event.class_id is not None  # parse_update checks it
                saved = self._store.label(event.item_id, event.class_id, annotator=annotator)
                return Applied(event, (saved.id,))
            if event.kind == "skip":
                return Applied(event)
            target = client.applied.get(event.target) if event.target is not None else None
            if target is None or target.event.kind != "label" or not target.annotation_ids:
                return Applied(event, error="nothing to undo: that label was not saved")
            if target.event.item_id != event.item_id:
                return Applied(event, error="the undo names another item than its label; nothing undone")
            if event.target in client.undone:
                return Applied(event, error="that label is already undone")
            reverted = self._store.undo_many(list(reversed(target.annotation_ids)), annotator=annotator)
            client.undone.add(target.event.seq)
            return Applied(event, tuple(r.id for r in reverted))
        except (StoreError, UndoConflictError) as error:
            return Applied(event, error=str(error))


def _label_runs(events: list[Event], annotator: str) -> list[list[Event]]:
    """``events`` cut into groups: runs of labels by one annotator, every other event alone."""
    groups: list[list[Event]] = []
    for event in events:
        last = groups[-1] if groups else None
        if (
            last is not None
            and event.kind == "label"
            and last[-1].kind == "label"
            and (last[-1].annotator or annotator) == (event.annotator or annotator)
        ):
            last.append(event)
        else:
            groups.append([event])
    return groups


# ------------------------------------------------------------------------------------- what is shown
# Rankings run here, one at a time per process, so that a page run never waits for one it can do
# without (k-means for cold_start takes seconds on a loaded machine; an expert labels 30 a second).
_RANKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelkit-rank")


@dataclass
class Lookahead:
    """A session's ranked items ahead of the labeller, for one queue (``key``: order, filter,
    start key, model version...). ``ranking``: a new ranking under way in the background."""

    key: Hashable
    ids: list[int]
    ranking: Future[list[int]] | None = None


def lookahead(
    current: Lookahead | None,
    key: Hashable,
    *,
    rank: Callable[[list[int]], list[int]],
    fill: Callable[[int, list[int]], list[int]],
    exclude: Sequence[int],
    gone: Collection[int] = (),
    size: int,
    low: int,
) -> tuple[Lookahead, list[int]]:
    """The next ``size`` items to preload, and the state to keep for the next run.

    ``rank(exclude)`` is the queue order (best first); ``fill(n, exclude)`` a cheap order (the
    random ring) for when the ranked items run out; both leave out ``exclude`` (what the session
    labelled, skipped or acted on) and apply the queue's filter. A new queue is ranked now; after
    that, when fewer than ``low`` ranked items are left, ranking starts in the background and the
    items left are topped up from ``fill`` until it is done. ``gone``: items that left the queue
    since it was ranked (labelled elsewhere), dropped from the ranked ones as ``exclude`` is.
    """
    drop = {*exclude, *gone}
    if current is None or current.key != key:
        current = Lookahead(key, rank(list(exclude)))
    if current.ranking is not None and current.ranking.done():
        # a failed ranking raises here, in the page, where the user sees it
        current.ids, current.ranking = current.ranking.result(), None
    left = [i for i in current.ids if i not in drop]
    if len(left) < low and current.ranking is None:
        current.ranking = _RANKER.submit(rank, list(exclude))
    if len(left) < size:
        left += fill(size - len(left), [*exclude, *left])
    return current, left[:size]


@dataclass(frozen=True)
class Suggestion:
    class_id: int
    name: str
    confidence: float


def top_classes(
    probs: np.ndarray, class_ids: Sequence[int], names: Mapping[int, str], k: int = TOP_K
) -> list[Suggestion]:
    """The ``k`` most probable classes of one item, best first; columns of ``probs`` are
    ``class_ids``. Classes deleted since the model ran (not in ``names``) are left out."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    out = []
    for j in order:
        class_id = int(class_ids[j])
        if class_id in names:
            out.append(Suggestion(class_id, names[class_id], float(probs[j])))
        if len(out) == k:
            break
    return out


def suggestions(
    store: Store, version: VersionInfo | None, item_ids: Sequence[int], classes: Sequence[ClassInfo]
) -> dict[int, list[Suggestion]]:
    """The model's top classes for each of ``item_ids`` it predicted (none before the first model)."""
    if version is None:
        return {}
    ids, probs, _ = _version_arrays(str(store.workspace.path(version.path)))
    row = {int(i): r for r, i in enumerate(ids)}
    class_ids = [int(c["id"]) for c in version.classes]
    names = {c.id: c.name for c in classes}
    return {i: top_classes(probs[row[i]], class_ids, names) for i in item_ids if i in row}


@functools.lru_cache(maxsize=512)
def image_uri(path: str) -> str:
    """The stored image at ``path`` as a data URI the browser shows without another request:
    PNG when small, JPEG once scaled down to ``DISPLAY_SIDE`` (a photo would be megabytes)."""
    picture = images.load(Path(path))
    buffer = io.BytesIO()
    if max(picture.size) <= DISPLAY_SIDE // 2:
        picture.save(buffer, format="PNG")
        kind = "png"
    else:
        picture = picture.copy()
        picture.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        picture.save(buffer, format="JPEG", quality=88)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
