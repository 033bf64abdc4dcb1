"""What the Explore page shows, as data and plotly figures: a 2-D map of a model version's embeddings
with labels and predictions joined on, the learning-by-association round trip per item, and the
held-out diagnostics.

The map is UMAP (McInnes et al. 2018) fitted on at most ``sample`` items and extended to the rest
with ``transform``; the coordinates are cached in the version's folder (``umap.npy`` and
``umap_item_ids.npy``), so a version is projected once, by the worker after its round or by the
first page that asks.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from labelkit.atomic import write_atomically

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from labelkit.store import Store
    from labelkit.store.versions import VersionInfo

UMAP_FILE = "umap.npy"
UMAP_IDS_FILE = "umap_item_ids.npy"
# UMAP's fit is super-linear in the items it sees; beyond this many, fit a random sample and place
# the others with ``transform`` (linear, and the map looks the same at plotting resolution).
DEFAULT_SAMPLE = 50_000
TRANSFORM_CHUNK = 10_000  # rows per ``transform`` call, so the progress bar moves
# Above this many items the Explore page opens the map as an image (``map_image``): plotly.js takes
# seconds to draw tens of thousands of WebGL points (benchmarks/bench_explore_page.py), an image
# shows at once; the interactive map is a toggle away.
INTERACTIVE_ITEMS = 20_000
MAP_ALT = "Map of the embeddings"  # the map image's alt text (what screen readers and tests find)
UNLABELLED = "unlabelled"
NOT_HELD_OUT = "not held out"
COLOR_BY = {
    "Human label": "label",
    "Pseudo-label (predicted class)": "predicted",
    "Confidence": "confidence",
    "Uncertainty (entropy)": "entropy",
    "Held-out correctness": "holdout",
}
_CONTINUOUS = {"confidence", "entropy"}
_GREY = "#c8c8c8"

Progress = Callable[[float, str], None]


class Reducer(Protocol):
    def fit_transform(self, x: np.ndarray) -> np.ndarray: ...

    def transform(self, x: np.ndarray) -> np.ndarray: ...


def make_reducer(n_fit: int, seed: int) -> Reducer:
    """UMAP with its default 15 neighbours (fewer when fitting on fewer items) and a fixed seed."""
    import umap  # lazily: importing it and compiling its numba kernels takes about a minute

    return umap.UMAP(
        n_neighbors=max(2, min(15, n_fit - 1)),
        # spectral initialisation needs a connected neighbour graph, which tiny sets may lack
        init="spectral" if n_fit > 30 else "random",
        random_state=seed,
        n_jobs=1,  # a fixed seed makes UMAP single-threaded anyway; saying so silences its warning
    )


def embed_2d(
    embeddings: np.ndarray, *, sample: int = DEFAULT_SAMPLE, seed: int = 0, progress: Progress | None = None
) -> np.ndarray:
    """2-D coordinates (N, 2) of ``embeddings`` (N, D): fit on ``sample`` random rows, transform the rest."""
    n = len(embeddings)
    if n < 3:
        raise ValueError(f"a map needs at least 3 items, the version has {n}")
    if sample < 3:
        raise ValueError(f"sample must be at least 3, got {sample}")
    report = progress or (lambda fraction, text: None)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    rest = np.setdiff1d(np.arange(n), fit_rows)
    report(0.0, f"Fitting UMAP on {len(fit_rows):,} of {n:,} items…")
    reducer = make_reducer(len(fit_rows), seed)
    coords = np.empty((n, 2), dtype=np.float32)
    coords[fit_rows] = reducer.fit_transform(np.asarray(embeddings[fit_rows], dtype=np.float32))
    for start in range(0, len(rest), TRANSFORM_CHUNK):
        report((len(fit_rows) + start) / n, f"Placing the other items: {start:,} of {len(rest):,}…")
        rows = rest[start : start + TRANSFORM_CHUNK]
        coords[rows] = reducer.transform(np.asarray(embeddings[rows], dtype=np.float32))
    report(1.0, "Map ready")
    return coords


def _cached_projection(folder: Path) -> pd.DataFrame | None:
    coords_path, ids_path = folder / UMAP_FILE, folder / UMAP_IDS_FILE
    if not (coords_path.exists() and ids_path.exists()):
        return None
    coords, ids = np.load(coords_path), np.load(ids_path)
    if len(coords) != len(ids):
        return None
    return pd.DataFrame({"item_id": ids.astype(np.int64), "x": coords[:, 0], "y": coords[:, 1]})


def projection(
    store: Store,
    version: VersionInfo,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The version's map: one row per item it embedded, columns item_id, x, y.

    Computed once (see ``embed_2d`` for ``sample``) and cached in the version's folder; a cached map
    is returned as it is, whatever ``sample`` and ``seed`` are passed later.
    """
    folder = store.workspace.path(version.path)
    cached = _cached_projection(folder)
    if cached is not None:
        return cached
    item_ids = np.load(folder / "item_ids.npy")
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
    coords = embed_2d(embeddings, sample=sample, seed=seed, progress=progress)
    # the coordinates are written last: a reader that finds them finds their ids too
    write_atomically(folder / UMAP_IDS_FILE, lambda f: np.save(f, item_ids.astype(np.int64)), durable=True)
    write_atomically(folder / UMAP_FILE, lambda f: np.save(f, coords), durable=True)
    return pd.DataFrame({"item_id": item_ids.astype(np.int64), "x": coords[:, 0], "y": coords[:, 1]})


def ensure_projection(store: Store, version_id: int) -> None:
    """Compute and cache a version's map if it is not cached yet (for the worker, after a round)."""
    projection(store, store.versions.get(version_id))


def class_names(store: Store, version: VersionInfo) -> dict[int, str]:
    """Class id → name: today's names, and the version's own for classes deleted since."""
    return {int(c["id"]): str(c["name"]) for c in version.classes} | {c.id: c.name for c in store.classes()}


def map_frame(store: Store, version: VersionInfo, *, progress: Progress | None = None) -> pd.DataFrame:
    """One row per item on the version's map, with what the Explore page colours and hovers by.

    Columns: item_id, x, y, name (file name), thumb_path, label_id / label (current label; missing when
    unlabelled), source, labelled, predicted_id / predicted, confidence, margin, entropy, heldout
    (the item was held out of the version's training), correct (heldout items: predicted == label;
    NA for the others).
    """
    names = class_names(store, version)
    items = store.item_table()[["item_id", "original_name", "thumb_path", "class_id", "source"]]
    frame = (
        projection(store, version, progress=progress)
        .merge(items, on="item_id", how="inner")
        .merge(store.versions.predictions(version.id), on="item_id", how="left")
        .rename(columns={"original_name": "name", "class_id_x": "label_id", "class_id_y": "predicted_id"})
    )
    frame["label"] = frame["label_id"].map(lambda i: None if pd.isna(i) else names.get(int(i)))
    frame["predicted"] = frame["predicted_id"].map(lambda i: None if pd.isna(i) else names.get(int(i)))
    frame["labelled"] = frame["label_id"].notna()
    frame["heldout"] = frame["item_id"].isin(version.metrics.get("holdout_item_ids", [])) & frame["labelled"]
    same = frame["predicted_id"].to_numpy() == frame["label_id"].fillna(-1).to_numpy(dtype=np.int64)
    frame["correct"] = pd.array(np.where(frame["heldout"], same, pd.NA), dtype="boolean")
    return frame


def holdout_confusion(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Counts of held-out items by current label (rows) and predicted class (columns), over ``names``."""
    held = frame[frame["heldout"]]
    table = pd.crosstab(
        pd.Categorical(held["label"], names), pd.Categorical(held["predicted"], names), dropna=False
    )
    table.index.name, table.columns.name = "label", "predicted"
    return table


def per_class_accuracy(confusion: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy per class (diagonal over row total; NaN for a class with no held-out item)."""
    totals = confusion.sum(axis=1)
    right = pd.Series(np.diag(confusion.to_numpy()), index=confusion.index)
    return pd.DataFrame(
        {"class": confusion.index, "held out": totals.to_numpy(), "accuracy": (right / totals).to_numpy()}
    )


# ----------------------------------------------------------------------------- the round trip
@dataclass(frozen=True)
class RoundTripItems:
    """P^{aba} between sampled labelled items, rows and columns ordered by class (Haeusser et al. 2017, Fig. 2)."""

    rows: np.ndarray  # (n,) indices into the labelled embeddings that were sampled
    labels: np.ndarray  # (n,) their classes, ascending
    p_aba: np.ndarray  # (n, n): probability that a walk a → b → a from row i ends at column j


def _unlabelled_sample(emb_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from labelkit.worker import ROUND_TRIP_SAMPLE

    if len(emb_b) > ROUND_TRIP_SAMPLE:
        emb_b = emb_b[np.sort(rng.choice(len(emb_b), ROUND_TRIP_SAMPLE, replace=False))]
    return np.asarray(emb_b, dtype=np.float64)


def round_trip_items(
    emb_a: np.ndarray, labels_a: np.ndarray, emb_b: np.ndarray, *, per_class: int, seed: int
) -> RoundTripItems:
    """The walker's round-trip probabilities for up to ``per_class`` labelled items of each class.

    ``emb_a`` (N, D) labelled unit embeddings with class indices ``labels_a`` (N,) in 0..C-1, and
    ``emb_b`` (M, D) unlabelled ones; scaled and sampled as
    the worker's round-trip statistics are (``labelkit.worker.ROUND_TRIP_SCALE`` / ``_SAMPLE``), with
    the same functions the association loss uses. The same arguments give the same sample, so two
    versions' embeddings of the same items in the same order are compared on the same rows.
    """
    import torch

    from labelkit.ssl.losses import association_probabilities
    from labelkit.worker import ROUND_TRIP_SCALE

    labels_a = np.asarray(labels_a)
    rng = np.random.default_rng(seed)
    rows = np.concatenate(
        [
            np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
            for members in (np.flatnonzero(labels_a == c) for c in np.unique(labels_a))
        ]
    )
    a = torch.from_numpy(np.asarray(emb_a[rows], dtype=np.float64)) * ROUND_TRIP_SCALE
    b = torch.from_numpy(_unlabelled_sample(emb_b, rng))
    _, _, p_aba = association_probabilities(a, b)
    return RoundTripItems(rows=rows, labels=labels_a[rows], p_aba=p_aba.numpy())


def class_round_trip(items: RoundTripItems, num_classes: int) -> np.ndarray:
    """Class × class round-trip matrix of the sampled items (``round_trip_by_class``; NaN rows for absent classes)."""
    import torch

    from labelkit.ssl.losses import round_trip_by_class

    labels = torch.from_numpy(items.labels.astype(np.int64))
    return round_trip_by_class(torch.from_numpy(items.p_aba), labels, num_classes).numpy()


def visit_distribution(emb_a: np.ndarray, emb_b: np.ndarray, *, seed: int) -> np.ndarray:
    """P^{visit}_j = mean_i P^{ab}_ij (Haeusser et al. 2017, Eq. 5) over the worker's unlabelled sample.

    Sums to 1; ``M · P^{visit}`` is 1 for every item when the walker visits all of them evenly.
    """
    import torch

    from labelkit.ssl.losses import walk_probabilities
    from labelkit.worker import ROUND_TRIP_SCALE

    a = torch.from_numpy(np.asarray(emb_a, dtype=np.float64)) * ROUND_TRIP_SCALE
    b = torch.from_numpy(_unlabelled_sample(emb_b, np.random.default_rng(seed)))
    return walk_probabilities(a, b).mean(0).numpy()


def version_embeddings(store: Store, version: VersionInfo, item_ids: Sequence[int]) -> np.ndarray:
    """Rows of the version's embeddings for ``item_ids``, in that order (KeyError for an item it lacks)."""
    folder = store.workspace.path(version.path)
    row_of = {int(i): r for r, i in enumerate(np.load(folder / "item_ids.npy"))}
    rows = np.array([row_of[int(i)] for i in item_ids], dtype=np.int64)
    return np.asarray(np.load(folder / "embeddings.npy", mmap_mode="r")[rows])


# ----------------------------------------------------------------------------- figures
def _palette(n: int) -> list[str]:
    import plotly.express as px

    colours = px.colors.qualitative.Plotly if n <= 10 else px.colors.qualitative.Alphabet
    return [colours[i % len(colours)] for i in range(n)]


def _colour_groups(
    frame: pd.DataFrame, column: str, names: Sequence[str]
) -> tuple[pd.Series, list[str], list[str]]:
    """For a categorical colouring: each row's group, the groups in legend order and their colours."""
    if column == "holdout":
        groups = frame["correct"].map({True: "correct", False: "wrong"}).fillna(NOT_HELD_OUT)
        return groups, ["correct", "wrong", NOT_HELD_OUT], ["#2ca02c", "#d62728", _GREY]
    return frame[column].fillna(UNLABELLED), [*names, UNLABELLED], [*_palette(len(names)), _GREY]


def _rgb(colour: str) -> tuple[int, int, int]:
    """'#rrggbb' or 'rgb(r, g, b)' (plotly's two colour spellings) → (r, g, b)."""
    import plotly.colors

    if colour.startswith("#"):
        return plotly.colors.hex_to_rgb(colour)
    r, g, b = plotly.colors.unlabel_rgb(colour)
    return round(r), round(g), round(b)


# Marker footprints as pixel offsets: a 3 × 3 square for unlabelled items, a diamond of radius 3 for
# labelled ones, as the interactive map draws circles and diamonds.
_DOT = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_DIAMOND = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if abs(dy) + abs(dx) <= 3]
_LEGEND_WIDTH = 190


def map_image(
    frame: pd.DataFrame, color_by: str, names: Sequence[str], *, width: int = 1200, height: int = 620
) -> bytes:
    """The map of ``map_frame`` rows as a PNG, every point in the colour ``map_figure`` gives it,
    with a legend (or colour bar) on the right.

    A browser shows this at once for any number of points, where plotly.js takes seconds to draw
    tens of thousands. Unlabelled items are drawn first, labelled ones (larger) on top; within each,
    in a fixed shuffled order, so no class hides another by drawing last.
    """
    from PIL import Image, ImageDraw, ImageFont

    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}, got {color_by!r}")
    if width <= _LEGEND_WIDTH + 40 or height < 100:
        raise ValueError(f"the map image needs width > {_LEGEND_WIDTH + 40} and height ≥ 100 pixels")
    column = COLOR_BY[color_by]
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    legend: list[tuple[str, tuple[int, int, int]]] = []
    if column in _CONTINUOUS:
        import plotly.colors

        values = frame[column].to_numpy(dtype=float)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        lut = np.array([_rgb(c) for c in plotly.colors.sample_colorscale("Viridis", np.linspace(0, 1, 256))])
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        rgb = lut[np.rint(np.nan_to_num(scaled) * 255).astype(int)]
    else:
        groups, order, colours = _colour_groups(frame, column, names)
        table = {g: _rgb(c) for g, c in zip(order, colours, strict=True)}
        rgb = np.array([table[g] for g in groups], dtype=np.int64).reshape(-1, 3)
        present = set(groups)
        legend = [(g, table[g]) for g in order if g in present]

    # data → pixels, with a margin so the footprints stay inside the plot area
    margin, plot_width = 8, width - _LEGEND_WIDTH
    x, y = frame["x"].to_numpy(dtype=float), frame["y"].to_numpy(dtype=float)

    def pixels(v: np.ndarray, size: int) -> np.ndarray:
        span = float(v.max() - v.min()) or 1.0
        return np.rint(margin + (v - v.min()) / span * (size - 1 - 2 * margin)).astype(int)

    px_, py_ = pixels(x, plot_width), (height - 1) - pixels(y, height)
    labelled = frame["labelled"].to_numpy(dtype=bool)
    shuffled = np.random.default_rng(0).permutation(len(frame))
    for layer, footprint in ((~labelled, _DOT), (labelled, _DIAMOND)):
        rows = shuffled[layer[shuffled]]
        for dy, dx in footprint:
            canvas[py_[rows] + dy, px_[rows] + dx] = rgb[rows]

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    left = plot_width + 12
    if column in _CONTINUOUS:
        bar = np.repeat(lut[::-1].astype(np.uint8)[:, None, :], 16, axis=1)  # high values on top
        image.paste(Image.fromarray(bar), (left, 40))
        draw.text((left, 14), column, fill=(0, 0, 0), font=font)
        draw.text((left + 22, 40), f"{high:.2f}", fill=(0, 0, 0), font=font)
        draw.text((left + 22, 40 + 256 - 14), f"{low:.2f}", fill=(0, 0, 0), font=font)
    else:
        rows_fit = (height - 20) // 20
        shown = legend if len(legend) <= rows_fit else legend[: rows_fit - 1]
        for n, (group, colour) in enumerate(shown):
            top = 10 + 20 * n
            draw.rectangle((left, top + 2, left + 11, top + 13), fill=colour)
            draw.text((left + 18, top), str(group)[:22], fill=(0, 0, 0), font=font)
        if len(shown) < len(legend):
            draw.text(
                (left, 10 + 20 * len(shown)), f"+ {len(legend) - len(shown)} more", fill=(0, 0, 0), font=font
            )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def map_figure(frame: pd.DataFrame, color_by: str, names: Sequence[str]) -> tuple[go.Figure, list[list[int]]]:
    """A Scattergl map of ``map_frame`` rows coloured by one of ``COLOR_BY``; labelled items are diamonds.

    Returns the figure and, per trace, the item id of each point (for ``selected_item_ids``).
    A colour group is drawn as up to two traces (labelled, unlabelled) sharing its legend entry: a
    fixed symbol per trace and hover data without the constant "unlabelled" keep a 60,000-point
    figure about half the size of one with per-point symbols and labels.
    """
    import plotly.graph_objects as go

    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}, got {color_by!r}")
    column = COLOR_BY[color_by]
    continuous = column in _CONTINUOUS
    fig = go.Figure()
    point_ids: list[list[int]] = []

    def add(part: pd.DataFrame, name: str, marker: dict[str, Any]) -> None:
        shown = False
        for labelled, symbol in ((True, "diamond"), (False, "circle")):
            rows = part[part["labelled"] == labelled]
            if not len(rows):
                continue
            confidence = rows["confidence"].round(3)
            predicted = rows["predicted"].fillna("—")
            if labelled:
                custom = np.column_stack([rows["name"], rows["label"], predicted, confidence])
                hover = "%{customdata[0]}<br>label: %{customdata[1]}<br>predicted: %{customdata[2]}"
                hover += " (confidence %{customdata[3]:.2f})<extra></extra>"
            else:
                custom = np.column_stack([rows["name"], predicted, confidence])
                hover = f"%{{customdata[0]}}<br>label: {UNLABELLED}<br>predicted: %{{customdata[1]}}"
                hover += " (confidence %{customdata[2]:.2f})<extra></extra>"
            # float32: half the bytes of the float64 column in the typed array plotly sends
            colour = {"color": rows[column].astype("float32"), "coloraxis": "coloraxis"} if continuous else {}
            fig.add_trace(
                go.Scattergl(
                    x=rows["x"],
                    y=rows["y"],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=not shown and not continuous,
                    customdata=custom,
                    hovertemplate=hover,
                    marker={"size": 6, "symbol": symbol, "line": {"width": 0}, **marker, **colour},
                )
            )
            point_ids.append(rows["item_id"].tolist())
            shown = True

    if continuous:
        add(frame, color_by, {})
        fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": column}}})
    else:
        groups, order, colours = _colour_groups(frame, column, names)
        for group, colour in zip(order, colours, strict=True):
            part = frame[groups == group]
            if len(part):
                add(part, group, {"color": colour, "opacity": 0.5 if colour == _GREY else 0.85})
    fig.update_layout(
        dragmode="lasso",
        height=620,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"itemsizing": "constant"},
        xaxis={"showticklabels": False, "title": None},
        yaxis={"showticklabels": False, "title": None},
    )
    return fig, point_ids


def matrix_figure(
    matrix: np.ndarray, names: Sequence[str], *, title: str, x_title: str, y_title: str
) -> go.Figure:
    """A class × class heatmap with its values written in the cells (NaN cells stay blank)."""
    import plotly.graph_objects as go

    values = np.asarray(matrix, dtype=float)
    text = [["" if np.isnan(v) else f"{v:.2g}" for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(names),
            y=list(names),
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate=f"{y_title} %{{y}} → {x_title} %{{x}}: %{{z}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": x_title, "type": "category"},
        yaxis={"title": y_title, "type": "category", "autorange": "reversed"},
    )
    return fig


def visit_figure(visit: np.ndarray, *, title: str) -> go.Figure:
    """Histogram of ``M · P^{visit}`` over the unlabelled sample: a spike at 1 is an even walk, mass
    near 0 is items the walker never reaches."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=np.asarray(visit) * len(visit), nbinsx=30, marker={"color": "#636efa"}))
    fig.update_layout(
        title=title,
        height=220,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        bargap=0.05,
        xaxis={"title": "visits relative to an even walk"},
        yaxis={"title": "unlabelled items"},
    )
    return fig


def item_round_trip_figure(items: RoundTripItems, names: Sequence[str], *, title: str) -> go.Figure:
    """Heatmap of P^{aba} between the sampled labelled items, with lines between classes: a good
    embedding shows bright blocks on the diagonal."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(z=items.p_aba, colorscale="Viridis", hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>")
    )
    edges = np.flatnonzero(np.diff(items.labels)) + 0.5
    # one horizontal and one vertical line per class boundary, across the whole plot; set at once:
    # add_hline / add_vline re-validate every shape on each call (a second for ten classes)
    line = {"type": "line", "line": {"color": "white", "width": 1}}
    shapes = [
        {**line, "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": e, "y1": e} for e in edges
    ] + [{**line, "yref": "y domain", "y0": 0, "y1": 1, "xref": "x", "x0": e, "x1": e} for e in edges]
    starts = np.concatenate([[0], np.ceil(edges).astype(int)])
    ends = np.concatenate([np.ceil(edges).astype(int), [len(items.labels)]])
    ticks = ((starts + ends - 1) / 2).tolist()
    labels = [names[int(items.labels[s])] for s in starts]
    axis = {"tickvals": ticks, "ticktext": labels, "showgrid": False}
    fig.update_layout(
        title=title,
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis=axis,
        yaxis={**axis, "autorange": "reversed"},
        shapes=shapes,
    )
    return fig
