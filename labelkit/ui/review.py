"""Review page: accept the latest model's confident predictions as pseudo-labels, send doubtful ones
to the front of the labelling queue, and look at human labels the model contradicts.

The model's full class probabilities come from its version folder (``probs.npy`` and ``item_ids.npy``,
written by the worker); the current labels from the store. Every action runs in a callback that
commits before the message that says it did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from labelkit import images
from labelkit.review import pseudo_label_candidates, suspect_labels
from labelkit.store import Store, StoreError
from labelkit.store.versions import VersionInfo
from labelkit.ui import resources
from labelkit.ui.common import flash, plain, show_flash, undo_last

GRID_COLUMNS = 6
GRID_SIZES = (24, 36, 48)
SUSPECTS_SHOWN = 24
HUMAN_SOURCES = ("human", "imported")  # labels a person gave; pseudo_accepted ones came from a model

state = st.session_state


@dataclass(frozen=True)
class ModelView:
    """The latest version's probabilities for the active items, with their current labels."""

    version: VersionInfo
    item_ids: np.ndarray  # (N,)
    probs: np.ndarray  # (N, C); column j is class ``class_ids[j]``
    class_ids: np.ndarray  # (C,)
    label: pd.Series  # (N,) current class id, <NA> where unlabelled
    source: pd.Series  # (N,) current label source, None where unlabelled


def _load(store: Store, version: VersionInfo) -> ModelView:
    folder = store.workspace.path(version.path)
    probs = np.load(folder / "probs.npy")
    item_ids = np.load(folder / "item_ids.npy")
    table = store.item_table().set_index("item_id")
    # Items excluded (or gone) since the model ran are not reviewed.
    active = table.reindex(item_ids)["status"].eq("active").to_numpy()
    kept = table.loc[item_ids[active]]
    return ModelView(
        version=version,
        item_ids=item_ids[active],
        probs=probs[active],
        class_ids=np.array([c["id"] for c in version.classes], dtype=np.int64),
        label=kept["class_id"].reset_index(drop=True),
        source=kept["source"].reset_index(drop=True),
    )


# ------------------------------------------------------------------------------------- callbacks
def _reset_grid() -> None:
    state["review_page"] = 0
    state.pop("review_pending", None)


def _turn_page(step: int) -> None:
    state["review_page"] += step


def _pick_all(item_ids: Sequence[int], value: bool) -> None:
    for item_id in item_ids:
        state[f"review_pick_{item_id}"] = value


def _ask_accept(groups: dict[int, list[int]]) -> None:
    state["review_pending"] = groups


def _cancel_accept() -> None:
    state.pop("review_pending", None)


@dataclass
class Accepted:
    """What one accept wrote: annotation ids, how many per class name, and the error that stopped it."""

    annotations: list[int]
    per_class: dict[str, int]
    failure: StoreError | None = None


def write_accepts(
    store: Store, version_id: int | None, groups: Mapping[int, Sequence[int]], annotator: str
) -> Accepted:
    """Save ``class id -> item ids`` as pseudo_accepted labels of the active, unlabelled items.

    Someone may have labelled an item since the page was drawn, or labels it right now in another
    session: the store skips labelled items inside its write transaction, so a pseudo-label never
    overwrites a label.
    """
    table = store.item_table().set_index("item_id")
    names = {c.id: c.name for c in store.classes()}
    out = Accepted([], {})
    try:
        for class_id, item_ids in groups.items():
            rows = table.reindex(list(item_ids))
            active = rows.index[rows["status"].eq("active")].tolist()
            if not active:
                continue
            saved = store.label_many(
                active,
                class_id,
                annotator=annotator,
                source="pseudo_accepted",
                model_version_id=version_id,
                only_unlabelled=True,
            )
            if saved:
                out.annotations.extend(a.id for a in saved)
                out.per_class[names.get(class_id, str(class_id))] = len(saved)
    except StoreError as error:
        out.failure = error
    return out


def _accept(store: Store, version_id: int, groups: Mapping[int, Sequence[int]]) -> None:
    state.pop("review_pending", None)
    result = write_accepts(store, version_id, groups, state["annotator"])
    annotations, accepted, failure = result.annotations, result.per_class, result.failure
    if annotations:
        state["review_undo"].append(annotations)
    for ids in groups.values():
        for item_id in ids:
            state.pop(f"review_pick_{item_id}", None)
    detail = ", ".join(f"{name}: {n}" for name, n in accepted.items())
    if failure is not None:
        flash("error", f"Stopped after {len(annotations)} accepted ({detail or 'none'}): {failure}")
    elif annotations:
        flash("success", f"Accepted {len(annotations)} pseudo-labels ({detail}).")
    else:
        flash("info", "Nothing accepted: those items have labels by now.")


def _reject(store: Store, item_ids: Sequence[int]) -> None:
    store.set_priority(item_ids, 1)
    state["review_rejected"].update(item_ids)
    for item_id in item_ids:
        state.pop(f"review_pick_{item_id}", None)
    flash(
        "success",
        f"Rejected {len(item_ids)} prediction(s): those items now come first in the labelling queue "
        "(Label page) for a human label.",
    )


def _undo(store: Store) -> None:
    reverted = undo_last(store, "review_undo")
    if reverted is None:
        return
    flash("success", f"Undone: {len(reverted)} pseudo-label(s) removed.")


# --------------------------------------------------------------------------------------- drawing
def _thumbs(store: Store, item_ids: Sequence[int], captions: Sequence[str]) -> list[DeltaGenerator]:
    """A grid of thumbnails; returns each one's cell, to put a widget under it."""
    items = store.items(item_ids)
    columns = st.columns(GRID_COLUMNS)
    cells = []
    for index, (item, caption) in enumerate(zip(items, captions, strict=True)):
        cell = columns[index % GRID_COLUMNS]
        cell.image(images.load(store.workspace.path(item.thumb_path)), caption=caption, width="stretch")
        cells.append(cell)
    return cells


def _confirm(store: Store, version_id: int, names: Mapping[int, str]) -> None:
    groups: dict[int, list[int]] = state["review_pending"]
    total = sum(len(ids) for ids in groups.values())
    detail = ", ".join(f"{names[c]}: {len(ids)}" for c, ids in groups.items())
    st.warning(plain(f"Accept {total} predictions as labels ({detail})?"))
    yes, no, _ = st.columns([1, 1, 4])
    yes.button(
        f"Yes, accept {total}",
        key="review_confirm_yes",
        type="primary",
        on_click=_accept,
        args=(store, version_id, groups),
    )
    no.button("Cancel", key="review_confirm_no", on_click=_cancel_accept)


def _pseudo_labels(store: Store, view: ModelView, names: Mapping[int, str]) -> None:
    st.subheader("Pseudo-labels for unlabelled items")
    threshold = st.slider(
        "Confidence threshold", 0.5, 1.0, 0.95, step=0.01, key="review_threshold", on_change=_reset_grid
    )
    table = pseudo_label_candidates(
        view.probs, labeled_mask=view.label.notna().to_numpy(), threshold=threshold
    )
    table["item_id"] = view.item_ids[table["position"]]
    table["class_id"] = view.class_ids[table["predicted"]]
    table = table[~table["item_id"].isin(state["review_rejected"])]
    unlabelled = int(view.label.isna().sum())
    st.write(
        f"**{len(table)}** of {unlabelled} unlabelled items are predicted with confidence ≥ {threshold:.0%}."
    )
    gone = table[~table["class_id"].isin(list(names))]
    if len(gone):
        st.caption(f"{len(gone)} of them are predicted as classes deleted since; they cannot be accepted.")
    table = table[table["class_id"].isin(list(names))]
    counts = table.groupby("class_id").size()
    classes = [c for c in view.class_ids.tolist() if c in names]
    chosen = st.selectbox(
        "Class",
        classes,
        format_func=lambda c: f"{names[c]} ({int(counts.get(c, 0))})",
        key="review_class",
        on_change=_reset_grid,
    )
    scope = st.radio(
        "Accept all above the threshold in",
        ["this class", "all classes"],
        key="review_scope",
        horizontal=True,
        on_change=_reset_grid,
    )
    chosen_rows = table[table["class_id"] == chosen]
    in_scope = chosen_rows if scope == "this class" else table
    groups = {int(c): rows["item_id"].tolist() for c, rows in in_scope.groupby("class_id")}
    if "review_pending" in state:
        _confirm(store, view.version.id, names)
    else:
        st.button(
            f"Accept all {len(in_scope)} above the threshold…",
            key="review_accept_all",
            disabled=in_scope.empty,
            on_click=_ask_accept,
            args=(groups,),
        )
    _grid(store, chosen_rows, view.version.id)


def _grid(store: Store, rows: pd.DataFrame, version_id: int) -> None:
    size = st.sidebar.selectbox(
        "Thumbnails per page", GRID_SIZES, key="review_grid_size", on_change=_reset_grid
    )
    pages = max(1, -(-len(rows) // size))
    page = min(state["review_page"], pages - 1)
    shown = rows.iloc[page * size : (page + 1) * size]
    ids = shown["item_id"].tolist()
    cells = _thumbs(store, ids, [f"{c:.1%}" for c in shown["confidence"]])
    for cell, item_id in zip(cells, ids, strict=True):
        cell.checkbox("select", key=f"review_pick_{item_id}", label_visibility="collapsed")
    picked = [i for i in ids if state.get(f"review_pick_{i}")]
    class_of = dict(zip(shown["item_id"], shown["class_id"], strict=True))
    groups: dict[int, list[int]] = {}
    for item_id in picked:
        groups.setdefault(int(class_of[item_id]), []).append(item_id)
    bar = st.columns(6, vertical_alignment="bottom")
    bar[0].button(
        f"Accept {len(picked)} selected",
        key="review_accept_selected",
        type="primary",
        disabled=not picked,
        on_click=_accept,
        args=(store, version_id, groups),
    )
    bar[1].button(
        f"Reject {len(picked)} selected",
        key="review_reject_selected",
        disabled=not picked,
        on_click=_reject,
        args=(store, picked),
        help="Rejected items come first in the labelling queue, for a human label.",
    )
    bar[2].button("Select all", key="review_all", on_click=_pick_all, args=(ids, True))
    bar[3].button("Select none", key="review_none", on_click=_pick_all, args=(ids, False))
    bar[4].button("Previous", key="review_prev", disabled=page == 0, on_click=_turn_page, args=(-1,))
    bar[5].button("Next", key="review_next", disabled=page >= pages - 1, on_click=_turn_page, args=(1,))
    st.caption(f"Page {page + 1} of {pages}; highest confidence first.")


def _disagreements(store: Store, view: ModelView, names: Mapping[int, str]) -> None:
    st.subheader("Labels the model disagrees with")
    column = {int(c): j for j, c in enumerate(view.class_ids)}
    # Class index of each human label; -1 for no label, a model's label, or a class the model lacks.
    labels = view.label.map(column).fillna(-1).astype(np.int64).where(view.source.isin(HUMAN_SOURCES), -1)
    labels = labels.to_numpy()
    try:
        suspects = suspect_labels(labels, view.probs, labeled_mask=labels >= 0)
    except ValueError as error:
        st.info(plain(f"Cannot check the labels yet: {error}"))
        return
    if suspects.empty:
        st.success("The model agrees with every human label it can judge.")
        return
    st.caption(
        f"{len(suspects)} label(s), most suspicious first (showing up to {SUSPECTS_SHOWN}). The model trained "
        "on most of these labels, so it tends to agree with them: a disagreement is worth a second look."
    )
    shown = suspects.head(SUSPECTS_SHOWN)
    captions = []
    for row in shown.itertuples():
        given = names.get(int(view.class_ids[row.label]), "a deleted class")
        said = names.get(int(view.class_ids[row.predicted]), "a deleted class")
        source = view.source.iloc[row.position]
        captions.append(plain(f"labelled {given} ({source}); model: {said} {row.predicted_confidence:.0%}"))
    _thumbs(store, view.item_ids[shown["position"]].tolist(), captions)


def main() -> None:
    store = resources.store()
    state.setdefault("annotator", os.environ.get("USER") or "expert")
    state.setdefault("review_undo", [])
    state.setdefault("review_rejected", set())
    state.setdefault("review_page", 0)
    st.title("Review")
    show_flash()
    version = store.versions.latest()
    if version is None:
        st.info("No model yet: request a training round on the Train page.")
        return
    try:
        view = _load(store, version)
    except FileNotFoundError as error:
        st.error(plain(f"Model v{version.id}'s files are missing ({error}); train a new round."))
        return
    names = {c.id: c.name for c in store.classes()}
    st.caption(
        plain(
            f"Model v{version.id}: {version.method} on {version.backbone}, trained {version.created_at:%Y-%m-%d %H:%M}."
        )
    )
    st.sidebar.caption(plain(f"Accepting as {state['annotator']} (set the name on the Label page)."))
    st.button(
        "Undo last accept",
        key="review_undo_button",
        disabled=not state["review_undo"],
        on_click=_undo,
        args=(store,),
    )
    _pseudo_labels(store, view, names)
    _disagreements(store, view, names)


main()
