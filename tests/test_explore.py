"""Explore data: round-trip probabilities on embeddings with a known answer, the cached UMAP map,
and the map frame's joins (labels, predictions, held-out correctness)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from labelkit import explore
from labelkit.explore import (
    RoundTripItems,
    class_round_trip,
    embed_2d,
    holdout_confusion,
    map_figure,
    map_frame,
    map_image,
    per_class_accuracy,
    projection,
    round_trip_items,
    visit_distribution,
)
from labelkit.store import Store
from labelkit.store.versions import VersionInfo
from labelkit.worker import ROUND_TRIP_SCALE
from tests.uitools import add_png_items


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _two_blobs(n: int, rng: np.random.Generator, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors near e1 (class 0) and ``n`` near e2 (class 1) in 8 dimensions."""
    centres = np.eye(8)[[0] * n + [1] * n]
    return _unit(centres + noise * rng.normal(size=centres.shape)), np.array([0] * n + [1] * n)


# ------------------------------------------------------------------------------- round trip
def test_round_trip_of_two_orthogonal_items_matches_the_softmax_by_hand() -> None:
    # With k = ROUND_TRIP_SCALE, a = k·[e1, e2], b = [e1, e2]: M = [[k, 0], [0, k]], so
    # P^{ab} = P^{ba} = [[s, 1-s], [1-s, s]] with s = e^k / (e^k + 1), and
    # P^{aba} = [[s² + (1-s)², 2s(1-s)], [2s(1-s), s² + (1-s)²]].
    e = np.eye(2)
    items = round_trip_items(e, np.array([0, 1]), e, per_class=5, seed=0)
    s = 1 / (1 + math.exp(-ROUND_TRIP_SCALE))
    stay, leave = s * s + (1 - s) ** 2, 2 * s * (1 - s)
    assert items.p_aba == pytest.approx(np.array([[stay, leave], [leave, stay]]), abs=1e-12)
    assert items.rows.tolist() == [0, 1] and items.labels.tolist() == [0, 1]


def test_separated_classes_give_a_near_identity_round_trip_and_mixed_labels_do_not() -> None:
    rng = np.random.default_rng(0)
    emb_a, labels = _two_blobs(10, rng)
    emb_b, _ = _two_blobs(20, rng)
    separated = class_round_trip(round_trip_items(emb_a, labels, emb_b, per_class=10, seed=0), 2)
    assert separated == pytest.approx(np.eye(2), abs=0.01)
    # the same points with labels that ignore the clusters: half of every walk ends in the other class
    shuffled = rng.permutation(labels)
    mixed = class_round_trip(round_trip_items(emb_a, shuffled, emb_b, per_class=10, seed=0), 2)
    assert np.diag(mixed).max() < 0.75
    assert mixed.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_class_round_trip_averages_start_rows_and_sums_end_columns_by_class() -> None:
    # items 0, 1 of class 0 and item 2 of class 1:
    # class 0 → 0: mean(0.5 + 0.3, 0.1 + 0.6) = 0.75, class 0 → 1: mean(0.2, 0.3) = 0.25
    # class 1 → 0: 0.4 + 0.4 = 0.8, class 1 → 1: 0.2; class 2 has no item: a row of NaN
    p_aba = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    items = RoundTripItems(rows=np.arange(3), labels=np.array([0, 0, 1]), p_aba=p_aba)
    matrix = class_round_trip(items, 3)
    assert matrix[:2, :2] == pytest.approx(np.array([[0.75, 0.25], [0.8, 0.2]]))
    assert matrix[:2, 2] == pytest.approx([0.0, 0.0])
    assert np.isnan(matrix[2]).all()


def test_round_trip_items_samples_per_class_sorted_by_class_and_repeatably() -> None:
    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(9, 4)))
    labels = np.array([1, 0, 1, 1, 0, 2, 1, 1, 0])
    items = round_trip_items(emb, labels, emb, per_class=2, seed=3)
    assert items.labels.tolist() == [0, 0, 1, 1, 2]
    assert (labels[items.rows] == items.labels).all()
    assert items.p_aba.shape == (5, 5) and items.p_aba.sum(axis=1) == pytest.approx(np.ones(5))
    again = round_trip_items(emb * 1.0, labels, emb, per_class=2, seed=3)
    assert again.rows.tolist() == items.rows.tolist()


def test_visit_distribution_shows_the_walker_staying_near_the_labelled_class() -> None:
    # both labelled items sit on e1: each row of P^{ab} is [s, 1-s] over b = [e1, e2]
    s = 1 / (1 + math.exp(-ROUND_TRIP_SCALE))
    visit = visit_distribution(np.array([[1.0, 0.0], [1.0, 0.0]]), np.eye(2), seed=0)
    assert visit == pytest.approx([s, 1 - s], abs=1e-12)


# ------------------------------------------------------------------------------- the map
class FakeReducer:
    """Projects onto the first two coordinates and records how many rows each call saw."""

    def __init__(self, calls: list[tuple[str, int]]) -> None:
        self.calls = calls

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(("fit", len(x)))
        return x[:, :2] * 1.0

    def transform(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(("transform", len(x)))
        return x[:, :2] * 1.0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(explore, "make_reducer", lambda n_fit, seed: FakeReducer(seen))
    return seen


def test_embed_2d_fits_on_the_sample_and_transforms_the_rest_into_their_own_rows(calls, monkeypatch) -> None:
    monkeypatch.setattr(explore, "TRANSFORM_CHUNK", 16)
    x = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    progress: list[float] = []
    coords = embed_2d(x, sample=20, seed=0, progress=lambda f, text: progress.append(f))
    assert calls == [("fit", 20), ("transform", 16), ("transform", 14)]
    assert coords == pytest.approx(x[:, :2])
    assert progress[0] == 0.0 and progress[-1] == 1.0
    calls.clear()
    embed_2d(x, sample=50, seed=0)
    assert calls == [("fit", 50)]


def _version_folder(store: Store, n: int, *, seed: int = 0) -> tuple[VersionInfo, np.ndarray]:
    """A version folder with ``n`` items' embeddings (no database row: projection reads files only)."""
    folder = store.workspace.runs / "model-test"
    folder.mkdir(parents=True)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    emb = _unit(np.random.default_rng(seed).normal(size=(n, 6))).astype(np.float32)
    np.save(folder / "item_ids.npy", ids)
    np.save(folder / "embeddings.npy", emb)
    version = VersionInfo(
        id=1,
        created_at=pd.Timestamp.now(),
        status="ready",
        method="m",
        backbone="b",
        config={},
        metrics={},
        label_counts={},
        classes=[],
        device="cpu",
        path=str(folder.relative_to(store.workspace.root)),
        parent_id=None,
        num_items=n,
    )
    return version, emb


def test_projection_covers_every_item_and_is_computed_once(store: Store, calls, monkeypatch) -> None:
    version, emb = _version_folder(store, 40)
    first = projection(store, version, sample=25)
    assert first["item_id"].tolist() == list(range(100, 140))
    assert first[["x", "y"]].to_numpy() == pytest.approx(emb[:, :2])
    assert calls == [("fit", 25), ("transform", 15)]
    folder = store.workspace.path(version.path)
    written = (folder / explore.UMAP_FILE).stat().st_mtime_ns
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]

    def refuse(n_fit: int, seed: int) -> FakeReducer:
        raise AssertionError("the cached map was refitted")

    monkeypatch.setattr(explore, "make_reducer", refuse)
    again = projection(store, version, sample=10)
    pd.testing.assert_frame_equal(again, first)
    assert (folder / explore.UMAP_FILE).stat().st_mtime_ns == written


def test_projection_recomputes_when_the_cache_is_half_written(store: Store, calls) -> None:
    version, _ = _version_folder(store, 10)
    folder = store.workspace.path(version.path)
    np.save(folder / explore.UMAP_IDS_FILE, np.arange(100, 110))  # a crash before the coordinates landed
    assert len(projection(store, version)) == 10
    assert calls == [("fit", 10)]


def test_a_map_of_fewer_than_three_items_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least 3 items"):
        embed_2d(np.eye(2))


@pytest.mark.slow
def test_real_umap_places_two_separated_blobs_apart(store: Store) -> None:
    # ~1 min: umap's numba kernels compile on first use in every process
    version, _ = _version_folder(store, 4)  # folder only; the embeddings come next
    folder = store.workspace.path(version.path)
    emb, labels = _two_blobs(40, np.random.default_rng(0))
    np.save(folder / "item_ids.npy", np.arange(80))
    np.save(folder / "embeddings.npy", emb.astype(np.float32))
    coords = projection(store, version, sample=60)[["x", "y"]].to_numpy()
    centre0, centre1 = coords[labels == 0].mean(0), coords[labels == 1].mean(0)
    spread = max(coords[labels == c].std(0).max() for c in (0, 1))
    assert np.linalg.norm(centre0 - centre1) > 3 * spread


# ------------------------------------------------------------------------------- the frame
@pytest.fixture
def recorded(store: Store, calls) -> tuple[Store, VersionInfo, list[int]]:
    """Six items, classes a and b; a version that predicts a, a, b, b, a, b with items 1–3 held out.

    Current labels: 0 → a, 1 → a (held out, right), 2 → a (held out, wrong), 3 → b (held out, right).
    """
    store.ensure_classes(["a", "b"])
    ids = add_png_items(store, 6)
    a, b = store.class_by_name("a").id, store.class_by_name("b").id
    store.label_many(ids[:3], a, annotator="t")
    store.label(ids[3], b, annotator="t")
    folder = store.workspace.runs / "model-x"
    folder.mkdir(parents=True)
    np.save(folder / "item_ids.npy", np.array(ids))
    np.save(folder / "embeddings.npy", _unit(np.random.default_rng(0).normal(size=(6, 4))).astype(np.float32))
    predicted = [a, a, b, b, a, b]
    version_id = store.versions.add(
        method="fixmatch",
        backbone="tiny",
        config={},
        metrics={"holdout_item_ids": ids[1:4]},
        label_counts={},
        classes=[{"id": a, "name": "a"}, {"id": b, "name": "b"}],
        device="cpu",
        path=str(folder.relative_to(store.workspace.root)),
        parent_id=None,
        predictions=pd.DataFrame(
            {
                "item_id": ids,
                "class_id": predicted,
                "confidence": [0.9, 0.8, 0.6, 0.7, 0.55, 0.95],
                "margin": [0.8, 0.6, 0.2, 0.4, 0.1, 0.9],
                "entropy": [0.3, 0.5, 0.67, 0.6, 0.69, 0.2],
            }
        ),
    )
    return store, store.versions.get(version_id), ids


def test_map_frame_joins_labels_predictions_and_held_out_correctness(recorded) -> None:
    store, version, ids = recorded
    frame = map_frame(store, version).set_index("item_id").loc[ids]
    assert (
        frame["label"].tolist()[:4] == ["a", "a", "a", "b"]
        and frame["label"].isna().tolist()[4:] == [True] * 2
    )
    assert frame["predicted"].tolist() == ["a", "a", "b", "b", "a", "b"]
    assert frame["labelled"].tolist() == [True] * 4 + [False] * 2
    assert frame["heldout"].tolist() == [False, True, True, True, False, False]
    assert frame["correct"].tolist() == [pd.NA, True, False, True, pd.NA, pd.NA]
    assert frame["name"].tolist() == [f"item{i}.png" for i in range(6)]
    assert frame["entropy"].tolist() == pytest.approx([0.3, 0.5, 0.67, 0.6, 0.69, 0.2])


def test_holdout_confusion_and_per_class_accuracy_count_only_held_out_items(recorded) -> None:
    store, version, _ = recorded
    confusion = holdout_confusion(map_frame(store, version), ["a", "b"])
    # held out: label a predicted a, label a predicted b, label b predicted b
    assert confusion.to_numpy().tolist() == [[1, 1], [0, 1]]
    accuracy = per_class_accuracy(confusion)
    assert accuracy["accuracy"].tolist() == [0.5, 1.0] and accuracy["held out"].tolist() == [2, 1]


def test_map_figure_traces_map_back_to_item_ids_for_every_colouring(recorded) -> None:
    store, version, ids = recorded
    frame = map_frame(store, version)
    by_label, point_ids = map_figure(frame, "Human label", ["a", "b"])
    assert [t.name for t in by_label.data] == ["a", "b", "unlabelled"]
    assert point_ids == [ids[:3], [ids[3]], ids[4:]]
    assert [t.marker.symbol for t in by_label.data] == ["diamond", "diamond", "circle"]
    assert [t.showlegend for t in by_label.data] == [True, True, True]
    assert by_label.data[0].customdata[0].tolist() == ["item0.png", "a", "a", 0.9]
    by_holdout, point_ids = map_figure(frame, "Held-out correctness", ["a", "b"])
    # "not held out" holds labelled items (diamonds) and unlabelled ones (circles): one legend entry
    assert [t.name for t in by_holdout.data] == ["correct", "wrong", "not held out", "not held out"]
    assert [t.marker.symbol for t in by_holdout.data][2:] == ["diamond", "circle"]
    assert [t.showlegend for t in by_holdout.data][2:] == [True, False]
    assert point_ids[1] == [ids[2]] and point_ids[3] == ids[4:]
    by_entropy, point_ids = map_figure(frame, "Uncertainty (entropy)", ["a", "b"])
    assert len(by_entropy.data) == 2 and sorted(point_ids[0] + point_ids[1]) == ids
    assert all(t.marker.coloraxis == "coloraxis" for t in by_entropy.data)
    with pytest.raises(ValueError, match="Human label"):
        map_figure(frame, "colour", ["a", "b"])


def test_item_round_trip_figure_draws_class_boundaries_and_names_each_block() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    items = RoundTripItems(rows=np.arange(6), labels=labels, p_aba=np.full((6, 6), 1 / 6))
    fig = explore.item_round_trip_figure(items, ["salmon", "trout", "cod"], title="t")
    horizontal = sorted(s.y0 for s in fig.layout.shapes if s.yref == "y")
    vertical = sorted(s.x0 for s in fig.layout.shapes if s.xref == "x")
    assert horizontal == vertical == [1.5, 4.5]  # between rows 1|2 and 4|5
    # every line spans the plot along the other axis
    assert all((s.x0, s.x1) == (0, 1) for s in fig.layout.shapes if s.yref == "y")
    assert list(fig.layout.xaxis.tickvals) == [0.5, 3.0, 5.0]
    assert list(fig.layout.yaxis.ticktext) == ["salmon", "trout", "cod"]


def _three_points() -> pd.DataFrame:
    # a labelled salmon and an unlabelled item on the same spot at (0, 0); one unlabelled at (10, 10)
    return pd.DataFrame(
        {
            "x": [0.0, 0.0, 10.0],
            "y": [0.0, 0.0, 10.0],
            "labelled": [True, False, False],
            "label": ["salmon", None, None],
            "predicted": ["salmon", "salmon", "trout"],
            "confidence": [0.2, 0.5, 0.9],
            "entropy": [0.1, 0.1, 0.1],
            "correct": [None, None, None],
        }
    )


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_map_image_draws_each_point_in_its_group_colour_with_labelled_items_on_top() -> None:
    width, height = 600, 300
    image = _pixels(
        map_image(_three_points(), "Human label", ["salmon", "trout"], width=width, height=height)
    )
    assert image.shape == (height, width, 3)
    salmon, grey = explore._palette(2)[0], explore._GREY
    rgb = [explore._rgb(c) for c in (salmon, grey)]
    # (0, 0) is the bottom-left corner of the plot area, 8 pixels in; (10, 10) the top-right one,
    # the plot area being the image less the legend on the right
    right = width - explore._LEGEND_WIDTH - 1 - 8
    assert tuple(image[height - 1 - 8, 8]) == rgb[0]  # the labelled salmon hides the grey item under it
    assert tuple(image[height - 1 - 8 - 3, 8]) == rgb[0]  # its diamond reaches 3 pixels up
    assert tuple(image[8, right]) == rgb[1]  # the unlabelled item at (10, 10)
    assert tuple(image[height // 2, width // 4]) == (255, 255, 255)  # nothing in between


def test_map_image_colours_continuous_values_from_the_lowest_to_the_highest_viridis_colour() -> None:
    import plotly.colors

    low, high = (explore._rgb(c) for c in plotly.colors.sample_colorscale("Viridis", [0.0, 1.0]))
    image = _pixels(map_image(_three_points(), "Confidence", ["salmon", "trout"], width=600, height=300))
    assert tuple(image[300 - 1 - 8, 8]) == low  # confidence 0.2, the lowest, drawn on top as labelled
    assert tuple(image[8, 600 - explore._LEGEND_WIDTH - 1 - 8]) == high  # 0.9, the highest


def test_map_image_refuses_an_unknown_colouring() -> None:
    with pytest.raises(ValueError, match="color_by must be one of"):
        map_image(_three_points(), "Shoe size", ["salmon"])
