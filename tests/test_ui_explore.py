"""The Explore page under AppTest: a workspace with two trained versions shows the map, the round
trip heatmaps and the diagnostics; acting on a map selection labels or queues items; no version → a
message to train first."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from labelkit import explore
from labelkit.datasets import load_digits
from labelkit.demo import build_demo, source_index
from labelkit.store import Store
from labelkit.worker import WorkerSettings, run_round
from labelkit.workspace import Workspace
from tests.uitools import make_workspace, open_app

PAGE = "labelkit/ui/explore.py"
# one in-process round as small as tests/test_worker.py's
TINY = {"steps": 4, "batch_size": 8, "mu": 1, "checkpoint_every": 4, "log_every": 1, "aug_group": 8}


class FirstTwoCoordinates:
    """Stands in for UMAP, whose numba kernels take about a minute to compile in every process."""

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return x[:, :2] * 1.0

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x[:, :2] * 1.0


def _round(store: Store) -> int:
    store.jobs.enqueue("train", {"config": TINY, "image_size": 16})
    job = store.jobs.claim("test")
    assert job is not None
    version_id = run_round(
        store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False
    )
    assert version_id is not None
    store.jobs.finish(job.id, "done", model_version_id=version_id)
    return version_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """60 digits, 24 labelled from their file names, two versions with cached maps."""
    workspace = Workspace.resolve(tmp_path_factory.mktemp("explore") / "ws").ensure()
    store = Store.open(workspace)
    try:
        build_demo(store, limit=60)
        _, truth = load_digits()
        for row in store.item_table().head(24).itertuples():
            digit = truth[source_index(row.original_name)]
            store.label(int(row.item_id), store.class_by_name(str(digit)).id, annotator="t")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(explore, "make_reducer", lambda n_fit, seed: FirstTwoCoordinates())
            for _ in range(2):
                explore.ensure_projection(store, _round(store))
    finally:
        store.close()
    yield workspace


def test_the_page_shows_the_map_round_trips_of_both_versions_and_diagnostics(monkeypatch, trained) -> None:
    at = open_app(monkeypatch, trained, PAGE)
    assert not at.exception
    assert at.selectbox(key="explore_version").value == 2
    assert at.selectbox(key="explore_earlier").value == 1
    assert [h.value for h in at.subheader] == [
        "Map of the embeddings",
        "Round trip through the unlabelled data",
        "Diagnostics",
    ]
    # map, class round trip, per-item P^aba and visits for each of the two versions, confusion
    assert len(at.get("plotly_chart")) == 7
    for colour in explore.COLOR_BY:
        at.selectbox(key="explore_color").select(colour).run()
        assert not at.exception
    assert any("Walker accuracy" in m.label for m in at.metric)


def test_a_large_map_opens_as_an_image_and_the_toggle_makes_it_interactive(monkeypatch, trained) -> None:
    monkeypatch.setattr(explore, "INTERACTIVE_ITEMS", 59)  # the workspace has 60 items
    at = open_app(monkeypatch, trained, PAGE)
    assert not at.exception
    assert [png[:8] for png in _map_images(at)] == [b"\x89PNG\r\n\x1a\n"]  # the map, as an inline PNG
    assert len(at.get("plotly_chart")) == 6  # every chart but the map
    for colour in explore.COLOR_BY:
        at.selectbox(key="explore_color").select(colour).run()
        assert not at.exception and len(_map_images(at)) == 1
    at.toggle(key="explore_interactive").set_value(True).run()
    assert not at.exception
    assert not _map_images(at) and len(at.get("plotly_chart")) == 7


def _map_images(at: AppTest) -> list[bytes]:
    """The PNGs the page shows inline as the map."""
    html = "".join(h.value for h in at.html)
    found = re.findall(rf'<img src="data:image/png;base64,([^"]+)" alt="{explore.MAP_ALT}"', html)
    return [base64.b64decode(data) for data in found]


def _select(at: AppTest, trace: int, rows: list[int]) -> None:
    """What a lasso on the map leaves in the chart's state (Streamlit 1.67's event shape)."""
    points = [{"curve_number": trace, "point_index": r} for r in rows]
    at.session_state["explore_map"] = {
        "selection": {"points": points, "point_indices": rows, "box": [], "lasso": []}
    }
    at.run()


def test_a_selection_shows_its_thumbnails_and_can_be_labelled_or_queued(monkeypatch, trained) -> None:
    at = open_app(monkeypatch, trained, PAGE)
    at.selectbox(key="explore_color").select("Human label").run()
    store = Store.open(trained)
    try:
        unlabelled = store.item_table().query("class_id.isna()")["item_id"].tolist()
        frame = explore.map_frame(store, store.versions.get(2))
        _, point_ids = explore.map_figure(
            frame, "Human label", [c["name"] for c in store.versions.get(2).classes]
        )
        trace = len(point_ids) - 1  # the last trace holds the unlabelled items
        chosen = point_ids[trace][:3]
        assert set(chosen) <= set(unlabelled)
        _select(at, trace, [0, 1, 2])
        assert any(m.value == "**3 items selected**" for m in at.markdown)
        assert len(at.get("image")) == 3
        at.button(key="explore_queue").click().run()
        assert [item.priority for item in store.items(chosen)] == [1, 1, 1]
        assert [s.value for s in at.success] == ["Sent 3 items to the front of the labelling queue"]
        seven = store.class_by_name("7")
        at.selectbox(key="explore_class").select(seven).run()
        at.button(key="explore_label").click().run()
        assert not at.exception
        labels = {i: store.current_label(i) for i in chosen}
        assert {(c.class_id, c.source) for c in labels.values() if c} == {(seven.id, "human")}
        assert len([c for c in labels.values() if c]) == 3
        assert [s.value for s in at.success] == ["Labelled 3 items as 7"]
    finally:
        store.close()


def test_without_a_model_version_the_page_says_to_train_first(monkeypatch, tmp_path: Path) -> None:
    at = open_app(monkeypatch, make_workspace(tmp_path / "ws", items=3, classes=["a", "b"]), PAGE)
    assert not at.exception
    assert [i.value for i in at.info] == [
        "No model version yet: train one on the Train page first, then its map and round trip appear here."
    ]
    assert not at.get("plotly_chart")
