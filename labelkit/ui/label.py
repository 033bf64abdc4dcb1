"""Label page: one image at a time with a key per class, or a grid of thumbnails labelled in bulk.

One at a time is the browser's labeller (``labelkit.ui.labeller``): it handles the keys and shows
the next preloaded image at once; each action reaches this page as an event naming the item that
was on screen, applied exactly once by ``labelkit.labelling.EventLedger``, and the labeller says
"Saved ✓" only for events the server acknowledged (``Store.label`` commits before returning).
The grid's actions run in button callbacks, so the page drawn after one already shows its result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import streamlit as st

from labelkit import images
from labelkit.labelling import (
    EventError,
    EventLedger,
    Suggestion,
    Update,
    image_uri,
    lookahead,
    parse_update,
    suggestions,
)
from labelkit.queue import QUEUE_ORDERS, new_start_key, queue_order
from labelkit.queue import reason as queue_reason
from labelkit.store import ClassInfo, ItemInfo, QueueFilter, Store, StoreError
from labelkit.store.schema import SOURCES
from labelkit.ui import resources
from labelkit.ui.common import flash, plain, show_flash, undo_last
from labelkit.ui.labeller import LABELLER_KEY, labeller

DEFAULT_ORDER = "margin"
# A grid page is labelled as one batch: ranked by uncertainty alone it would hold near-copies of
# the same confusing image, so the grid takes the most uncertain item of each cluster instead.
GRID_ORDER = {o: "cluster_uncertain" for o in ("margin", "entropy", "least_confidence")}
GRID_COLUMNS = 6
IMAGE_HEIGHT = 560  # pixels on screen
GRID_SIZES = (24, 36, 48)
STATUS_FILTERS = {"Unlabelled": False, "Labelled": True, "All": None}
# Items the labeller holds ahead. A page rerun answers an update in 0.3–1.5 s on a loaded machine,
# and an expert at 20 ms a key must not run out in that time; only images the browser does not
# hold yet travel, at most IMAGE_CHARS of them per run (the rest follow in the next runs).
PRELOAD = 250
IMAGE_CHARS = 3_000_000
REJECTED_KEPT = 20

state = st.session_state


def _keep_annotator() -> None:
    # Widget values vanish when another page is shown; the plain key survives page switches.
    state["annotator"] = state["label_annotator_input"]


def _reset_queue() -> None:
    state["label_seen"] = []
    state["label_grid_page"] = 0
    # a new epoch tells the labeller to drop what it preloaded from the old queue
    state["label_epoch"] = state.get("label_epoch", 0) + 1


def _label(store: Store, item_ids: Sequence[int], label: ClassInfo) -> None:
    try:
        saved = store.label_many(item_ids, label.id, annotator=state["annotator"])
    except StoreError as error:
        flash("error", str(error))
        return
    state["label_undo"].append([a.id for a in saved])
    state["label_seen"].extend(item_ids)
    for item_id in item_ids:
        state.pop(f"label_pick_{item_id}", None)
    suffix = "" if len(item_ids) == 1 else f" on {len(item_ids)} items"
    flash("success", f"Saved ✓ {label.name}{suffix}")


def _undo(store: Store) -> None:
    reverted = undo_last(store, "label_undo")
    if not reverted:
        return
    items = {a.item_id for a in reverted}
    state["label_seen"] = [i for i in state["label_seen"] if i not in items]
    flash("success", f"Undone ({len(reverted)} label{'s' if len(reverted) > 1 else ''})")


def _pick_all(item_ids: Sequence[int], value: bool) -> None:
    for item_id in item_ids:
        state[f"label_pick_{item_id}"] = value


def _turn_page(step: int) -> None:
    state["label_grid_page"] += step


def _defaults() -> None:
    state.setdefault("annotator", os.environ.get("USER") or "expert")
    state.setdefault("label_annotator_input", state["annotator"])
    state.setdefault("label_start_key", new_start_key())
    state.setdefault("label_undo", [])
    state.setdefault("label_rejected", [])
    if "label_seen" not in state:
        _reset_queue()


def _sidebar(store: Store, classes: list[ClassInfo]) -> QueueFilter:
    with st.sidebar:
        st.text_input("Annotator", key="label_annotator_input", on_change=_keep_annotator, max_chars=100)
        st.radio("Mode", ["One at a time", "Grid"], key="label_mode", horizontal=True)
        # Margin by default: typical, diverse items until a model exists, then its closest calls.
        state.setdefault("label_order", DEFAULT_ORDER)
        st.selectbox(
            "Queue order",
            list(QUEUE_ORDERS),
            key="label_order",
            on_change=_reset_queue,
            help="random: every item equally likely. cold_start: images typical of a group of "
            "similar-looking ones, each unlike the last (no model needed). The others rank by the "
            "latest model (cold_start until one exists): margin, entropy and least_confidence pick "
            "what it is unsure about; kcenter and cluster_uncertain also spread picks over the data; "
            "class_balance prefers classes with few labels.",
        )
        status = st.radio("Show", list(STATUS_FILTERS), key="label_status", horizontal=True)
        class_id = source = None
        if STATUS_FILTERS[status] is not False:
            names = {c.id: c.name for c in classes}
            class_id = st.selectbox(
                "Class",
                [None, *names],
                format_func=lambda i: "any" if i is None else names[i],
                key="label_class",
            )
            source = st.selectbox(
                "Label source", [None, *SOURCES], format_func=lambda s: s or "any", key="label_source"
            )
        _progress(store, classes)
    where = QueueFilter(labeled=STATUS_FILTERS[status], class_id=class_id, source=source)
    if state.get("label_where") != where:
        state["label_where"] = where
        _reset_queue()
    return where


def _progress(store: Store, classes: list[ClassInfo]) -> None:
    counts = store.label_counts().groupby("class_id")["count"].sum()
    total = store.count_items()
    labelled = int(counts.sum())
    st.subheader("Progress")
    # Labels of excluded items still count, so the share can pass 1.
    st.progress(min(labelled / total, 1.0) if total else 0.0, text=f"{labelled} of {total} items labelled")
    st.dataframe(
        {"class": [c.name for c in classes], "labels": [int(counts.get(c.id, 0)) for c in classes]},
        hide_index=True,
    )


@st.cache_resource(show_spinner=False)
def _ledger(root: str, db_url: str, _store: Store) -> EventLedger:
    # One per server process and workspace: a reload opens a new session, and its browser re-sends
    # what was not acknowledged, so the applied sequence numbers must outlive the session.
    return EventLedger(_store)


def _sent_update() -> Any:
    raw = state.get(LABELLER_KEY)
    return raw.get("update") if isinstance(raw, Mapping) else None


def _apply_update(store: Store) -> tuple[Update | None, EventLedger]:
    """Apply what the labeller sent (idempotent: a repeat applies nothing) and note per session
    which items were labelled or skipped, so the queue moves past them."""
    ledger = _ledger(str(store.workspace.root), store.workspace.db_url, store)
    try:
        update = parse_update(_sent_update())
    except EventError as error:
        flash("error", f"The labeller sent an update the server cannot read: {error}")
        return None, ledger
    if update is None:
        return None, ledger
    for done in ledger.apply(update, annotator=state["annotator"]):
        event = done.event
        if done.error is not None:
            state["label_rejected"] = [
                *state["label_rejected"][-REJECTED_KEPT + 1 :],
                {"client": update.client, "seq": event.seq, "error": done.error},
            ]
        elif event.kind == "undo":
            state["label_seen"] = [i for i in state["label_seen"] if i != event.item_id]
        else:
            state["label_seen"].append(event.item_id)
    return update, ledger


def _item_data(
    store: Store,
    item: ItemInfo,
    top: list[Suggestion],
    names: dict[int, str],
    *,
    send_image: bool,
    show_label: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": item.id,
        "name": item.original_name,
        "why": queue_reason(state["label_order"], item.id),
        "top": [asdict(s) for s in top],
        "now": None,
    }
    if send_image:
        out["src"] = image_uri(str(store.workspace.path(item.path)))
    current = store.current_label(item.id) if show_label else None
    if current is not None:
        name = names.get(current.class_id, "a deleted class")
        out["now"] = f"Now labelled {name} ({current.source}, by {current.annotator})"
    return out


def _upcoming(store: Store, where: QueueFilter, exclude: list[int], version: int | None) -> list[int]:
    """The next ``PRELOAD`` items: the session's ranked batch, ranked anew in the background as
    it runs low (and now when the queue changes or a new model version arrives)."""
    # labelled since the batch was ranked, here or elsewhere
    gone = set(store.current_labels()["item_id"].tolist()) if where.labeled is False else set()
    order, start = queue_order(state["label_order"]), state["label_start_key"]
    state["label_lookahead"], ids = lookahead(
        state.get("label_lookahead"),
        (state["label_order"], where, start, state["label_epoch"], version),
        rank=lambda ex: order(store, where=where, start_key=start, limit=PRELOAD, exclude=ex),
        fill=lambda n, ex: store.queue_ids(start_key=start, limit=n, where=where, exclude=ex),
        exclude=exclude,
        gone=gone,
        size=PRELOAD,
        low=PRELOAD // 2,
    )
    return ids


def _single(
    store: Store,
    classes: list[ClassInfo],
    where: QueueFilter,
    ready: bool,
    update: Update | None,
    ledger: EventLedger,
) -> None:
    """The labeller: keys, Skip, Undo and accepting the model's guess run in the browser, which
    shows the next preloaded image at once; this run applied the events it sent and refills it."""
    # Items the browser acted on that wait behind a gap: it has moved past them, so send others.
    high = ledger.high_water(update.client) if update is not None else None
    pending = [e.item_id for e in update.events if e.kind != "undo" and e.seq > (high or 0)] if update else []
    latest = store.versions.latest()
    ids = _upcoming(store, where, [*state["label_seen"], *pending], latest.id if latest else None)
    guesses = suggestions(store, latest, ids, classes)
    have = update.have if update is not None else frozenset()
    names = {c.id: c.name for c in classes}
    items = []
    budget = IMAGE_CHARS
    for item in store.items(ids):
        send = item.id not in have and budget > 0
        items.append(
            _item_data(
                store,
                item,
                guesses.get(item.id, []),
                names,
                send_image=send,
                show_label=where.labeled is not False,
            )
        )
        budget -= len(items[-1].get("src", ""))
    sent = _sent_update()
    data = {
        "classes": [{"id": c.id, "name": c.name, "key": c.shortcut} for c in classes],
        "items": items,
        "ready": ready,
        "annotator": state["annotator"],
        "model": f"Model v{latest.id}" if latest is not None else None,
        "empty": not items,
        "queue_key": f"{state['label_order']}|{where}|{state['label_start_key']}|{state['label_epoch']}",
        # n echoes the update's counter, so an answer to a repeated update still reaches the browser
        "ack": None
        if update is None
        else {"client": update.client, "seq": ledger.high_water(update.client), "n": sent.get("n")},
        "rejected": state["label_rejected"],
        "image_height": IMAGE_HEIGHT,
    }
    labeller(data, key=LABELLER_KEY)
    if not items and state["label_seen"]:
        st.button("Start over with the skipped items", on_click=_reset_queue)


def _grid(store: Store, classes: list[ClassInfo], where: QueueFilter, ready: bool) -> None:
    name = GRID_ORDER.get(state["label_order"], state["label_order"])
    if name != state["label_order"]:
        st.caption(
            f"Grid pages use cluster_uncertain rather than {state['label_order']}: the most uncertain "
            "image of each cluster, so a page is not filled with near-copies."
        )
    order = queue_order(name)
    size = st.sidebar.selectbox("Thumbnails per page", GRID_SIZES, key="label_grid_size")
    page = state["label_grid_page"]
    ids = order(store, where=where, start_key=state["label_start_key"], limit=size * (page + 1), exclude=())
    ids = ids[page * size :]
    if not ids:
        st.info("No items on this page.")
    columns = st.columns(GRID_COLUMNS)
    for index, item in enumerate(store.items(ids)):
        with columns[index % GRID_COLUMNS]:
            st.image(images.load(store.workspace.path(item.thumb_path)), width="stretch")
            st.checkbox(plain(item.original_name), key=f"label_pick_{item.id}")
    picked = [i for i in ids if state.get(f"label_pick_{i}")]
    names = {c.id: c for c in classes}
    bar = st.columns([2, 2, 1, 1, 1, 1], vertical_alignment="bottom")
    chosen = bar[0].selectbox(
        "Class", list(names), format_func=lambda i: names[i].name, key="label_grid_class"
    )
    bar[1].button(
        f"Assign to {len(picked)} selected",
        key="label_grid_assign",
        type="primary",
        disabled=not ready or not picked,
        on_click=_label,
        args=(store, picked, names[chosen] if chosen is not None else classes[0]),
    )
    bar[2].button("Select all", key="label_grid_all", on_click=_pick_all, args=(ids, True))
    bar[3].button("Select none", key="label_grid_none", on_click=_pick_all, args=(ids, False))
    bar[4].button("Previous", key="label_grid_prev", disabled=page == 0, on_click=_turn_page, args=(-1,))
    bar[5].button("Next", key="label_grid_next", disabled=len(ids) < size, on_click=_turn_page, args=(1,))
    st.button(
        "Undo",
        key="label_undo_button",
        shortcut="backspace",
        disabled=not ready or not state["label_undo"],
        on_click=_undo,
        args=(store,),
    )


def main() -> None:
    store = resources.store()
    classes = store.classes()
    _defaults()
    # Before anything is drawn, so that the progress and the queue already count these labels.
    update, ledger = _apply_update(store)
    where = _sidebar(store, classes)
    st.title("Label")
    show_flash()
    if not classes:
        st.info("Add classes on the Settings page first.")
        return
    ready = bool(state["annotator"].strip())
    if not ready:
        st.warning("Enter your name as annotator in the sidebar before labelling.")
    if state["label_mode"] == "Grid":
        _grid(store, classes, where, ready)
    else:
        _single(store, classes, where, ready, update, ledger)


main()
