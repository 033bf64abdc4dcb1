"""The Home page under AppTest: the workspace summary, and imports from uploads and server paths."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from labelkit.store import Store
from labelkit.workspace import ENV_IMPORT_ROOTS, ImportRootError, Workspace
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
    monkeypatch.setenv(ENV_IMPORT_ROOTS, str(tmp_path))
    at = open_app(monkeypatch, store.workspace)
    at.text_input(key="home_path").input(str(archive))
    at.radio(key="home_labels").set_value("folders")
    at.run()
    at.button(key="home_path_button").click().run()
    assert not at.exception
    assert metrics(at)["Labelled (imported)"] == "2"
    assert {c.name for c in store.classes()} == {"a", "b", "trout", "salmon"}


def test_a_missing_server_path_is_an_error_message_not_a_crash(monkeypatch, store: Store, tmp_path) -> None:
    monkeypatch.setenv(ENV_IMPORT_ROOTS, str(tmp_path))
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


def test_server_import_is_off_until_roots_are_configured(monkeypatch, store: Store) -> None:
    monkeypatch.delenv(ENV_IMPORT_ROOTS, raising=False)
    at = open_app(monkeypatch, store.workspace)
    assert any(ENV_IMPORT_ROOTS in i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "home_path"]


def test_server_import_refuses_paths_and_links_outside_the_roots(monkeypatch, store: Store, tmp_path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "photos").mkdir(parents=True)
    (allowed / "photos" / "a.png").write_bytes(png_bytes(300))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.png").write_bytes(png_bytes(301))
    (secret / "labels.csv").write_text("filename,label\ns.png,x\n")
    (allowed / "door").symlink_to(secret, target_is_directory=True)
    monkeypatch.setenv(ENV_IMPORT_ROOTS, str(allowed))
    at = open_app(monkeypatch, store.workspace)
    before = store.count_items()
    for path in (secret, allowed / "door", allowed / ".." / "secret", allowed / "door" / "s.png"):
        at.text_input(key="home_path").input(str(path)).run()
        at.button(key="home_path_button").click().run()
        assert "outside the folders the server imports from" in at.error[0].value, path
        assert not at.exception
    # a labels CSV outside the roots is refused too, before anything is imported
    at.text_input(key="home_path").input(str(allowed / "photos"))
    at.radio(key="home_labels").set_value("csv").run()
    at.text_input(key="home_labels_csv").input(str(allowed / "door" / "labels.csv")).run()
    at.button(key="home_path_button").click().run()
    assert "outside the folders" in at.error[0].value
    assert store.count_items() == before
    # inside the roots it imports
    at.radio(key="home_labels").set_value("none").run()
    at.button(key="home_path_button").click().run()
    assert not at.exception and store.count_items() == before + 1


def test_workspace_server_path_resolves_links_before_checking(tmp_path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "out").symlink_to("/etc")
    ws = Workspace.resolve(tmp_path / "ws", import_roots=[tmp_path / "root"])
    assert ws.server_path(tmp_path / "root" / "x") == (tmp_path / "root" / "x").resolve()
    with pytest.raises(ImportRootError):
        ws.server_path(tmp_path / "root" / "out" / "passwd")
    with pytest.raises(ImportRootError, match="is off"):
        Workspace.resolve(tmp_path / "ws", import_roots=[]).server_path(tmp_path / "root")
