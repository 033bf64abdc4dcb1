"""The Export page under AppTest: a version's bundle is built and offered, and labels alone always are."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelkit.store import Store
from tests.test_export import SOURCES, trained_workspace
from tests.uitools import make_workspace, open_app

PAGE = "labelkit/ui/export.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    store, version_id = trained_workspace(tmp_path_factory.mktemp("ui_export") / "ws")
    yield store, version_id
    store.close()


def test_building_a_bundle_shows_its_download_button(monkeypatch, trained) -> None:
    store, version_id = trained
    at = open_app(monkeypatch, store.workspace, PAGE)
    assert not at.exception
    assert at.selectbox(key="export_version").value == version_id  # the latest by default
    assert not [b for b in at.get("download_button") if b.proto.label.startswith("Download labelkit-model")]
    at.button(key="export_build").click().run(timeout=180)
    assert not at.exception and not at.error
    offered = [b.proto.label for b in at.get("download_button")]
    assert any(label.startswith(f"Download labelkit-model-v{version_id}-") for label in offered)
    built = sorted((store.workspace.reports / "exports").glob("*.zip"))
    assert len(built) == 1
    with zipfile.ZipFile(built[0]) as archive:
        assert f"{built[0].stem}/model_card.json" in archive.namelist()
    assert "Download labels (CSV)" in offered
    by_source = ", ".join(f"{source} {n}" for source, n in SOURCES.items())
    assert f"{sum(SOURCES.values())} labelled items ({by_source})" in [m.value for m in at.markdown]


def test_without_a_model_version_the_page_says_how_to_get_one(monkeypatch, tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", items=3, classes=["a", "b"])
    at = open_app(monkeypatch, workspace, PAGE)
    assert not at.exception
    assert "No model version yet" in at.info[0].value
    labels_button = at.get("download_button")[0].proto
    assert labels_button.label == "Download labels (CSV)" and labels_button.disabled
