"""The Home page under AppTest: the workspace summary, and imports from uploads and server paths."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from labelkit.store import Store
from tests.uitools import make_workspace, open_app, png_bytes


@pytest.fixture
def store(tmp_path: Path):
    opened = Store.open(make_workspace(tmp_path / "ws", items=3, classes=["a", "b"]))
    yield opened
    opened.close()


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_summary_counts_items_labels_by_source_and_per_class(monkeypatch, store: Store) -> None:
    items = store.queue_ids(start_key=0, limit=3)
    a = store.class_by_name("a").id
    store.label_many(items[:2], a, annotator="ana")
    store.label(items[2], a, annotator="import", source="imported")
    at = open_app(monkeypatch, store.workspace)
    assert metrics(at) == {"Items": "3", "Labelled": "3", "Labelled (human)": "2", "Labelled (imported)": "1"}
    per_class = at.dataframe[0].value
    assert per_class.to_dict("list") == {"class": ["a", "b"], "labels": [3, 0]}
    assert not at.exception


def test_uploads_are_imported_and_the_report_lists_rejected_files(monkeypatch, store: Store) -> None:
    at = open_app(monkeypatch, store.workspace)
    at.file_uploader(key="home_uploads").set_value(
        [
            ("new.png", png_bytes(100), "image/png"),
            ("again.png", png_bytes(0), "image/png"),  # the workspace already holds image 0
            ("broken.png", b"not a picture", "image/png"),
        ]
    )
    at.run()
    at.button(key="home_upload_button").click().run()
    assert not at.exception
    assert metrics(at)["Items"] == "4"
    assert {k: metrics(at)[k] for k in ("Imported", "Duplicate", "Rejected")} == {
        "Imported": "1",
        "Duplicate": "1",
        "Rejected": "1",
    }
    rejected = at.dataframe[-1].value
    assert rejected["source"].tolist() == ["broken.png"]
    assert rejected["reason"].iloc[0]
    assert at.get("download_button")[0].proto.label == "Download the full report (CSV)"


def test_a_server_zip_with_class_folders_imports_labelled_items(monkeypatch, store: Store, tmp_path) -> None:
    archive = tmp_path / "fish.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("trout/1.png", png_bytes(200))
        z.writestr("salmon/2.png", png_bytes(201))
    at = open_app(monkeypatch, store.workspace)
    at.text_input(key="home_path").input(str(archive))
    at.radio(key="home_labels").set_value("folders")
    at.run()
    at.button(key="home_path_button").click().run()
    assert not at.exception
    assert metrics(at)["Labelled (imported)"] == "2"
    assert {c.name for c in store.classes()} == {"a", "b", "trout", "salmon"}


def test_a_missing_server_path_is_an_error_message_not_a_crash(monkeypatch, store: Store, tmp_path) -> None:
    at = open_app(monkeypatch, store.workspace)
    at.text_input(key="home_path").input(str(tmp_path / "nowhere")).run()
    at.button(key="home_path_button").click().run()
    assert "does not exist" in at.error[0].value
    assert not at.exception


def test_upload_box_offers_images_and_zip(monkeypatch, store: Store) -> None:
    at = open_app(monkeypatch, store.workspace)
    uploader = at.file_uploader(key="home_uploads")
    assert uploader.accept_multiple_files
    assert {".png", ".jpg", ".zip"} <= set(uploader.allowed_type)
