"""Label page: one image at a time with a key per class, or a grid of thumbnails labelled in bulk.

Every action runs in a button callback, so the page drawn after it already shows its result: the
next item, and "Saved ✓" only once ``Store.label`` has returned (it commits before returning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from labelkit import images
from labelkit.queue import QUEUE_ORDERS, new_start_key, queue_order
from labelkit.queue import reason as queue_reason
from labelkit.store import ClassInfo, QueueFilter, Store, StoreError
from labelkit.store.schema import SOURCES
from labelkit.ui import resources
from labelkit.ui.common import flash, plain, show_flash, undo_last

DEFAULT_ORDER = "margin"
# A grid page is labelled as one batch: ranked by uncertainty alone it would hold near-copies of
# the same confusing image, so the grid takes the most uncertain item of each cluster instead.
GRID_ORDER = {o: "cluster_uncertain" for o in ("margin", "entropy", "least_confidence")}
GRID_COLUMNS = 6
IMAGE_HEIGHT = 560  # pixels on screen
GRID_SIZES = (24, 36, 48)
STATUS_FILTERS = {"Unlabelled": False, "Labelled": True, "All": None}

state = st.session_state


def _keep_annotator() -> None:
    # Widget values vanish when another page is shown; the plain key survives page switches.
    state["annotator"] = state["label_annotator_input"]


def _reset_queue() -> None:
    state["label_current"] = None
    state["label_seen"] = []
    state["label_grid_page"] = 0


def _label(store: Store, item_ids: Sequence[int], label: ClassInfo) -> None:
    try:
        saved = store.label_many(item_ids, label.id, annotator=state["annotator"])
    except StoreError as error:
        flash("error", str(error))
        return
    state["label_undo"].append([a.id for a in saved])
    state["label_seen"].extend(item_ids)
    state["label_current"] = None
    for item_id in item_ids:
        state.pop(f"label_pick_{item_id}", None)
    suffix = "" if len(item_ids) == 1 else f" on {len(item_ids)} items"
    flash("success", f"Saved ✓ {label.name}{suffix}")


def _skip(item_id: int) -> None:
    state["label_seen"].append(item_id)
    state["label_current"] = None


def _undo(store: Store) -> None:
    reverted = undo_last(store, "label_undo")
    if not reverted:
        return
    items = {a.item_id for a in reverted}
    state["label_seen"] = [i for i in state["label_seen"] if i not in items]
    state["label_current"] = reverted[0].item_id
    flash("success", f"Undone ({len(reverted)} label{'s' if len(reverted) > 1 else ''})")


def _pick_all(item_ids: Sequence[int], value: bool) -> None:
    for item_id in item_ids:
        state[f"label_pick_{item_id}"] = value


def _turn_page(step: int) -> None:
    state["label_grid_page"] += step


def _sidebar(store: Store, classes: list[ClassInfo]) -> QueueFilter:
    state.setdefault("annotator", os.environ.get("USER") or "expert")
    state.setdefault("label_annotator_input", state["annotator"])
    state.setdefault("label_start_key", new_start_key())
    state.setdefault("label_undo", [])
    if "label_current" not in state:
        _reset_queue()
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


def _single(store: Store, classes: list[ClassInfo], where: QueueFilter, ready: bool) -> None:
    order = queue_order(state["label_order"])
    if state["label_current"] is None:
        ids = order(
            store, where=where, start_key=state["label_start_key"], limit=1, exclude=state["label_seen"]
        )
        state["label_current"] = ids[0] if ids else None
    item_id = state["label_current"]
    undo_disabled = not ready or not state["label_undo"]
    if item_id is None:
        st.info("No more items match this filter.")
        if state["label_seen"]:
            st.button("Start over with the skipped items", on_click=_reset_queue)
        st.button(
            "Undo",
            key="label_undo_button",
            shortcut="backspace",
            disabled=undo_disabled,
            on_click=_undo,
            args=(store,),
        )
        return
    item = store.item(item_id)
    picture, controls = st.columns([3, 1])
    image = images.load(store.workspace.path(item.path))
    # Scale to a fixed height so tall photos fit the screen and tiny ones are big enough to judge;
    # Streamlit caps a width wider than the column at the column's width.
    width = round(IMAGE_HEIGHT * image.width / image.height)
    picture.image(image, caption=plain(item.original_name), width=width)
    _prediction(store, classes, item_id, picture)
    why = queue_reason(state["label_order"], item_id)
    if why:
        picture.caption(plain(f"Why this image: {why}"))
    with controls:
        current = store.current_label(item_id)
        if current is not None:
            name = next((c.name for c in classes if c.id == current.class_id), "a deleted class")
            st.caption(plain(f"Now labelled {name} ({current.source}, by {current.annotator})"))
        for c in classes:
            st.button(
                plain(c.name),
                key=f"label_class_{c.id}",
                shortcut=c.shortcut,
                disabled=not ready,
                width="stretch",
                on_click=_label,
                args=(store, [item_id], c),
            )
        st.button(
            "Skip", key="label_skip", shortcut="right", width="stretch", on_click=_skip, args=(item_id,)
        )
        st.button(
            "Undo",
            key="label_undo_button",
            shortcut="backspace",
            width="stretch",
            disabled=undo_disabled,
            on_click=_undo,
            args=(store,),
        )


def _prediction(store: Store, classes: list[ClassInfo], item_id: int, where: DeltaGenerator) -> None:
    """The latest model's class and confidence for the item (nothing before the first model)."""
    latest = store.versions.latest()
    predicted = store.versions.prediction(latest.id, item_id) if latest is not None else None
    if latest is None or predicted is None:
        return
    name = next((c.name for c in classes if c.id == predicted["class_id"]), "a deleted class")
    where.caption(plain(f"Model v{latest.id}: {name} ({predicted['confidence']:.0%})"))


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
        _single(store, classes, where, ready)


main()
