"""Explore page: a model version's embedding map (select points to label them or queue them), the
learning-by-association round trip per class and per item for two versions, and held-out diagnostics."""

from __future__ import annotations

import base64
import os
from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from labelkit import explore, images
from labelkit.selection import selected_item_ids
from labelkit.store import Store, StoreError
from labelkit.store.versions import VersionInfo
from labelkit.ui import resources
from labelkit.ui.common import flash, plain, show_flash

GRID_COLUMNS = 8
GRID_LIMIT = 48
PER_CLASS = 20  # labelled items per class in the per-item round-trip heatmap
SEED = 0

state = st.session_state


def _describe(version: VersionInfo) -> str:
    accuracy = version.metrics.get("holdout_accuracy")
    score = f", held-out accuracy {accuracy:.1%}" if accuracy is not None else ""
    return f"v{version.id} · {version.method} · {version.created_at:%Y-%m-%d %H:%M}{score}"


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _label_selection(store: Store, item_ids: list[int], class_id: int, name: str) -> None:
    annotator = state.get("annotator") or os.environ.get("USER") or "expert"
    try:
        # A lasso easily takes in labelled items too; they keep their labels (checked inside the
        # write transaction), relabelling one is the Label page's job.
        saved = store.label_many(
            item_ids, class_id, annotator=annotator, source="human", only_unlabelled=True
        )
    except StoreError as error:
        flash("error", str(error))
        return
    kept = len(set(item_ids)) - len(saved)
    flash(
        "success",
        f"Labelled {_items(len(saved))} as {name}"
        + (f"; {kept} already labelled kept their label" if kept else ""),
    )


def _queue_selection(store: Store, item_ids: list[int]) -> None:
    store.set_priority(item_ids, 1)
    flash("success", f"Sent {_items(len(item_ids))} to the front of the labelling queue")


# Reading the item table and the version's predictions and building a 60,000-point figure take
# seconds; both only change with a new annotation or a renamed class, so reruns (a selection, a
# colour change back) reuse them, keyed by what they depend on.
class MapKey(NamedTuple):
    root: str  # the workspace: the cache is shared by every session
    version_id: int
    last_annotation: int
    class_order: tuple[str, ...]  # class names in the version's order


@st.cache_data(max_entries=4, show_spinner=False)
def _cached_frame(key: MapKey, _store: Store) -> pd.DataFrame:
    return explore.map_frame(_store, _store.versions.get(key.version_id))


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_figure(key: MapKey, color_by: str, _frame: pd.DataFrame) -> tuple[object, list[list[int]]]:
    return explore.map_figure(_frame, color_by, list(key.class_order))


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_image(key: MapKey, color_by: str, _frame: pd.DataFrame) -> bytes:
    return explore.map_image(_frame, color_by, list(key.class_order))


def _map(store: Store, version: VersionInfo, names: dict[int, str]) -> pd.DataFrame | None:
    st.subheader("Map of the embeddings")
    folder = store.workspace.path(version.path)
    if not (folder / explore.UMAP_FILE).exists():
        bar = st.progress(0.0, text="Computing the map (UMAP; about a minute the first time)…")

        def advance(fraction: float, text: str) -> None:
            bar.progress(fraction, text=text)

        try:
            explore.projection(store, version, progress=advance)
        except ValueError as error:
            st.info(str(error))
            return None
        bar.empty()
    class_order = tuple(names[c["id"]] for c in version.classes)
    key = MapKey(str(store.workspace.root), version.id, store.last_annotation_id(), class_order)
    frame = _cached_frame(key, store)
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    color_by = left.selectbox("Colour by", list(explore.COLOR_BY), key="explore_color")
    interactive = len(frame) <= explore.INTERACTIVE_ITEMS or right.toggle(
        f"Interactive map: hover, click and lasso (drawing {len(frame):,} points takes a few seconds)",
        key="explore_interactive",
    )
    if not interactive:
        # Inline in the page message rather than st.image's separate media request, which the
        # browser fetched and decoded only after evaluating plotly.js for the charts further down
        # (seconds here); st.image would also re-encode the PNG as a JPEG twice the size.
        png = base64.b64encode(_cached_image(key, color_by, frame)).decode()
        st.html(f'<img src="data:image/png;base64,{png}" alt="{explore.MAP_ALT}" style="width: 100%">')
        st.caption(
            "Diamonds are labelled items, squares unlabelled. Turn on the interactive map to select items."
        )
        return frame
    fig, point_ids = _cached_figure(key, color_by, frame)
    st.caption(
        "Diamonds are labelled items, circles unlabelled. Hover for a file name; click a point to see its "
        "image, or draw a lasso or a box to select many."
    )
    # plotly hover labels cannot show images: a click selects the point and the grid below shows it
    event = st.plotly_chart(
        fig, on_select="rerun", selection_mode=("points", "lasso", "box"), key="explore_map"
    )
    _selection(store, frame, selected_item_ids(event, point_ids))
    return frame


def _selection(store: Store, frame: pd.DataFrame, item_ids: list[int]) -> None:
    if not item_ids:
        return
    st.markdown(
        f"**{_items(len(item_ids))} selected**"
        + (f", the first {GRID_LIMIT} shown" if len(item_ids) > GRID_LIMIT else "")
    )
    classes = store.classes()
    left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    choice = left.selectbox("Class", classes, format_func=lambda c: c.name, key="explore_class")
    if choice is not None:
        middle.button(
            f"Label all as {plain(choice.name)}",
            key="explore_label",
            on_click=_label_selection,
            args=(store, item_ids, choice.id, choice.name),
        )
    right.button(
        "Send to labelling queue", key="explore_queue", on_click=_queue_selection, args=(store, item_ids)
    )
    rows = frame.set_index("item_id").loc[item_ids[:GRID_LIMIT]]
    cells = st.columns(GRID_COLUMNS)
    for n, row in enumerate(rows.itertuples()):
        # a labelled item shows its label, an unlabelled one the class the model predicts
        caption = row.label if isinstance(row.label, str) else f"→ {row.predicted}"
        with cells[n % GRID_COLUMNS]:
            st.image(
                images.load(store.workspace.path(row.thumb_path)), caption=plain(caption), width="stretch"
            )


def _walks(
    store: Store, version: VersionInfo, labelled: pd.DataFrame, order: dict[int, int]
) -> tuple[explore.RoundTripItems, np.ndarray]:
    """Per-item P^{aba} and the visit distribution of ``version`` on the ``labelled`` items."""
    ids = np.load(store.workspace.path(version.path) / "item_ids.npy")
    emb_a = explore.version_embeddings(store, version, labelled["item_id"].tolist())
    emb_b = explore.version_embeddings(store, version, np.setdiff1d(ids, labelled["item_id"]).tolist())
    classes = labelled["class_id"].map(order).to_numpy()
    items = explore.round_trip_items(emb_a, classes, emb_b, per_class=PER_CLASS, seed=SEED)
    return items, explore.visit_distribution(emb_a, emb_b, seed=SEED)


def _compared_labels(store: Store, versions: list[VersionInfo]) -> tuple[pd.DataFrame, list[int]]:
    """Items labelled now that every compared version embedded, of classes every version knows, so
    that both heatmaps show the same rows; and those classes in the first version's order."""
    labelled = store.current_labels()
    shared = set.intersection(*({int(c["id"]) for c in v.classes} for v in versions))
    for v in versions:
        present = np.load(store.workspace.path(v.path) / "item_ids.npy")
        labelled = labelled[labelled["item_id"].isin(present) & labelled["class_id"].isin(shared)]
    return labelled, [int(c["id"]) for c in versions[0].classes if int(c["id"]) in shared]


def _round_trip(
    store: Store, version: VersionInfo, earlier: VersionInfo | None, names: dict[int, str]
) -> None:
    st.subheader("Round trip through the unlabelled data")
    st.caption(
        "A walker steps from a labelled item to an unlabelled one and back (Haeusser et al. 2017). "
        "Row i, column j: how often a walk from class i ends at class j; the diagonal is the walker's accuracy."
    )
    stats = version.metrics.get("round_trip")
    if stats:
        left, right = st.columns([3, 2])
        left.plotly_chart(
            explore.matrix_figure(
                np.array(stats["matrix"], dtype=float),
                [names[int(c["id"])] for c in version.classes],
                title=f"v{version.id}: class round trip",
                x_title="ends at",
                y_title="starts at",
            ),
            key="explore_class_round_trip",
        )
        right.metric("Walker accuracy (mean diagonal)", f"{stats['walker_accuracy']:.1%}")
        right.metric("Visit entropy ratio (1 = an even walk)", f"{stats['visit_entropy_ratio']:.2f}")
        right.caption(f"Over {stats['unlabelled_sample']:,} unlabelled items, as recorded after training.")
    versions = [v for v in (version, earlier) if v is not None]
    labelled, kept = _compared_labels(store, versions)
    if labelled["class_id"].nunique() < 2:
        st.info("The per-item round trip needs labelled items of two classes in every version compared.")
        return
    order = {class_id: n for n, class_id in enumerate(kept)}
    kept_names = [names[c] for c in kept]
    for column, v in zip(st.columns(len(versions)), versions, strict=True):
        items, visit = _walks(store, v, labelled, order)
        column.plotly_chart(
            explore.item_round_trip_figure(items, kept_names, title=f"v{v.id}: P^aba between labelled items"),
            key=f"explore_items_{v.id}",
        )
        column.plotly_chart(
            explore.visit_figure(visit, title=f"v{v.id}: visits per unlabelled item"),
            key=f"explore_visit_{v.id}",
        )


def _diagnostics(
    store: Store, version: VersionInfo, frame: pd.DataFrame | None, names: dict[int, str]
) -> None:
    st.subheader("Diagnostics")
    class_order = [names[c["id"]] for c in version.classes]
    left, right = st.columns(2)
    with left:
        if frame is None or not frame["heldout"].any():
            st.info(version.metrics.get("holdout_note", "This version held no labels out of training."))
        else:
            confusion = explore.holdout_confusion(frame, class_order)
            st.plotly_chart(
                explore.matrix_figure(
                    confusion.to_numpy(),
                    class_order,
                    title="Held-out confusion",
                    x_title="predicted",
                    y_title="label",
                ),
                key="explore_confusion",
            )
            st.dataframe(
                explore.per_class_accuracy(confusion),
                hide_index=True,
                column_config={
                    "accuracy": st.column_config.ProgressColumn(
                        min_value=0.0, max_value=1.0, format="percent"
                    )
                },
            )
    with right:
        counts = store.label_counts()
        st.markdown("**Labels per class and source**")
        if counts.empty:
            st.info("No labels yet.")
        else:
            st.bar_chart(counts, x="class_name", y="count", color="source", horizontal=True)
        history = version.metrics.get("train_history") or []
        if history:
            curves = pd.DataFrame([{"step": step, **values} for step, values in history]).set_index("step")
            st.markdown("**Training curves**")
            # losses and rates (accuracy, mask rate) apart: they live on different scales
            losses = [c for c in curves.columns if "loss" in c]
            rates = [c for c in curves.columns if c.endswith(("acc", "rate"))]
            for columns in (losses, rates):
                if columns:
                    st.line_chart(curves[columns], height=220)


def main() -> None:
    st.title("Explore")
    show_flash()
    store = resources.store()
    versions = [v for v in store.versions.all() if v.status == "ready"]
    if not versions:
        st.info(
            "No model version yet: train one on the Train page first, then its map and round trip appear here."
        )
        return
    by_id = {v.id: v for v in reversed(versions)}  # newest first
    left, right = st.columns(2)
    chosen = left.selectbox(
        "Model version", list(by_id), format_func=lambda i: _describe(by_id[i]), key="explore_version"
    )
    version = by_id[chosen]
    earlier_ids = [i for i in by_id if i < chosen]
    earlier_id = right.selectbox(
        "Compare with",
        earlier_ids,
        format_func=lambda i: _describe(by_id[i]),
        key="explore_earlier",
        index=0 if earlier_ids else None,
        placeholder="no earlier version",
        disabled=not earlier_ids,
    )
    earlier = by_id.get(earlier_id) if earlier_id is not None else None
    names = explore.class_names(store, version)
    frame = _map(store, version, names)
    _round_trip(store, version, earlier, names)
    _diagnostics(store, version, frame, names)


main()
