"""Model bundles: exported models agree with the trained one, and the card, labels and predictions
describe the workspace they came from."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch

from labelkit import __version__, cli
from labelkit import export as export_module
from labelkit.datasets import load_digits, load_workspace
from labelkit.demo import build_demo, source_index
from labelkit.export import ExportError, data_fingerprint, export_bundle, export_zip
from labelkit.models import build_model
from labelkit.store import Store
from labelkit.worker import WorkerSettings, run_round
from labelkit.workspace import Workspace

# As tests/test_worker.py: a round small enough for a busy 2-core machine, on 16 × 16 images.
TINY = {"steps": 6, "batch_size": 8, "mu": 1, "checkpoint_every": 2, "log_every": 1, "aug_group": 8}
ITEMS = 60
SOURCES = {"human": 18, "imported": 2, "pseudo_accepted": 2}  # labels of the first items, in this order


def trained_workspace(root: Path) -> tuple[Store, int]:
    """A digits workspace of ``ITEMS`` items, the first 22 labelled with their true digit (by the
    sources in ``SOURCES``), and one model version trained in-process; returns (store, version id)."""
    store = Store.open(Workspace.resolve(root).ensure())
    build_demo(store, limit=ITEMS)
    _, truth = load_digits()
    sources = [source for source, n in SOURCES.items() for _ in range(n)]
    for row, source in zip(store.item_table().itertuples(), sources, strict=False):
        digit = truth[source_index(row.original_name)]
        store.label(int(row.item_id), store.class_by_name(str(digit)).id, annotator="t", source=source)
    store.jobs.enqueue("train", {"config": TINY, "image_size": 16})
    job = store.jobs.claim("test")
    assert job is not None
    version_id = run_round(
        store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False
    )
    assert version_id is not None
    return store, version_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    store, version_id = trained_workspace(tmp_path_factory.mktemp("export") / "ws")
    yield store, version_id
    store.close()


@pytest.fixture(scope="module")
def bundle(trained: tuple[Store, int]) -> Path:
    store, version_id = trained
    return export_bundle(store, version_id, store.workspace.root.parent / "bundle")


def _eager_model(store: Store, version_id: int) -> torch.nn.Module:
    """The version's model rebuilt from its checkpoint, independently of labelkit.export."""
    checkpoint = torch.load(
        store.workspace.path(store.versions.get(version_id).path) / "model.pt", weights_only=True
    )
    model = build_model(
        checkpoint["config"]["model"],
        num_classes=len(checkpoint["class_names"]),
        in_channels=checkpoint["in_channels"],
        image_size=checkpoint["image_size"],
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_onnx_give_the_trained_model_s_logits_on_the_workspace_images(
    trained, bundle
) -> None:
    store, version_id = trained
    data = load_workspace(store, image_size=16, channels=1)
    x = torch.from_numpy(np.concatenate([data.x_lb, data.x_ulb]))
    model = _eager_model(store, version_id)
    with torch.no_grad():
        eager = model(model.normalize(x))
        scripted = torch.jit.load(str(bundle / "model.pt"))(x)
    session = onnxruntime.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_embedding = session.run(["logits", "embedding"], {"images": x.numpy()})
    assert len(x) == ITEMS  # a batch of 60 though the export traced 2 images: the batch axis is dynamic
    np.testing.assert_allclose(scripted[0].numpy(), eager.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_logits, eager.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scripted[1].numpy(), eager.embedding.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_embedding, eager.embedding.numpy(), atol=1e-4, rtol=0)
    # The eager model is the one whose predictions the app stored.
    folder = store.workspace.path(store.versions.get(version_id).path)
    assert np.load(folder / "item_ids.npy").tolist() == [*data.lb_ids, *data.ulb_ids]
    np.testing.assert_allclose(
        eager.logits.softmax(1).numpy(), np.load(folder / "probs.npy"), atol=1e-5, rtol=0
    )


def test_data_fingerprint_is_the_sha256_of_the_sorted_digests_one_per_line() -> None:
    assert data_fingerprint(["bb", "aa"]) == hashlib.sha256(b"aa\nbb\n").hexdigest()
    assert data_fingerprint(["aa", "bb"]) == data_fingerprint(["bb", "aa"])
    assert data_fingerprint(["aa"]) != data_fingerprint(["aa", "bb"])


def test_the_model_card_describes_classes_input_training_labels_and_held_out_accuracy(
    trained, bundle
) -> None:
    store, version_id = trained
    version = store.versions.get(version_id)
    card = json.loads((bundle / "model_card.json").read_text())
    assert [c["name"] for c in card["classes"]] == [str(d) for d in range(10)]
    assert [c["id"] for c in card["classes"]] == [c.id for c in store.classes()]
    assert {k: card["input"][k] for k in ("dtype", "layout", "channels", "height", "width")} == {
        "dtype": "uint8", "layout": "NCHW", "channels": 1, "height": 16, "width": 16,
    }  # fmt: skip
    state = torch.load(bundle / "state_dict.pt", weights_only=True)["state_dict"]
    assert card["input"]["normalization"]["mean"] == pytest.approx(state["input_mean"].tolist())
    assert card["input"]["normalization"]["std"] == pytest.approx(state["input_std"].tolist())
    assert (card["backbone"], card["method"], card["settings"]["steps"]) == (
        "cnn_small",
        "fixmatch",
        TINY["steps"],
    )
    assert card["label_counts_by_source"] == SOURCES
    held = card["held_out"]
    assert held["n"] == version.metrics["holdout_labels"] > 0
    assert held["n"] + card["train_labels"] == sum(SOURCES.values())
    assert held["accuracy"] == version.metrics["holdout_accuracy"]
    assert held["ci95"][0] <= held["accuracy"] <= held["ci95"][1]
    every_item = "".join(f"{sha}\n" for sha in sorted(store.item_table()["sha256"]))
    assert card["data_fingerprint"]["sha256"] == hashlib.sha256(every_item.encode()).hexdigest()
    assert card["data_fingerprint"]["items"] == ITEMS
    assert card["created_at"] == version.created_at.isoformat()
    assert card["labelkit_version"] == __version__
    assert card["export_check"]["onnx_max_abs_logit_diff"] <= 1e-4


def test_labels_files_have_one_row_per_labelled_item_with_their_source(trained, bundle) -> None:
    store, _ = trained
    labels = pd.read_csv(bundle / "labels.csv")
    assert len(labels) == sum(SOURCES.values()) and labels["item_id"].is_unique
    assert labels["source"].value_counts().to_dict() == SOURCES
    records = json.loads((bundle / "labels.json").read_text())
    assert [r["item_id"] for r in records] == labels["item_id"].tolist()
    for item_id, name in zip(labels["item_id"], labels["class"].astype(str), strict=True):
        assert store.current_label(int(item_id)).class_id == store.class_by_name(name).id


def test_predictions_files_have_the_stored_prediction_of_every_item(trained, bundle) -> None:
    store, version_id = trained
    table = pd.read_csv(bundle / "predictions.csv", dtype={"predicted_class": str})
    stored = store.versions.predictions(version_id)
    items = store.item_table()
    assert table["item_id"].tolist() == stored["item_id"].tolist() == items["item_id"].tolist()
    names = {c.id: c.name for c in store.classes()}
    assert table["predicted_class"].tolist() == [names[c] for c in stored["class_id"]]
    np.testing.assert_allclose(table["confidence"], stored["confidence"], rtol=1e-12)
    np.testing.assert_allclose(table["entropy"], stored["entropy"], rtol=1e-12)
    assert table["sha256"].tolist() == items["sha256"].tolist()
    assert table["path"].tolist() == items["path"].tolist()
    pd.testing.assert_frame_equal(pd.read_parquet(bundle / "predictions.parquet"), table, check_dtype=False)


def test_a_zip_bundle_with_imagefolder_holds_each_labelled_image_under_its_class(trained, tmp_path) -> None:
    store, version_id = trained
    out = export_zip(store, version_id, tmp_path / "b.zip", imagefolder=True)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        copies = [n for n in names if n.startswith("b/imagefolder/")]
        labels = pd.read_csv(io.BytesIO(archive.read("b/labels.csv")), dtype={"class": str})
        assert {"b/model.pt", "b/model.onnx", "b/state_dict.pt", "b/model_card.json"} <= set(names)
        expected = {f"b/imagefolder/{row['class']}/{row['sha256']}.png" for _, row in labels.iterrows()}
        assert set(copies) == expected and len(copies) == sum(SOURCES.values())
        first = copies[0]
        assert hashlib.sha256(archive.read(first)).hexdigest() == Path(first).stem
    assert [p.name for p in tmp_path.iterdir()] == ["b.zip"]  # no scratch left behind


def test_class_folder_names_are_safe_and_distinct() -> None:
    folders = export_module._folder_names(
        [(1, "a/b"), (2, "a_b"), (3, "Cat"), (4, "cat"), (5, ".."), (6, "x: y")]
    )
    assert folders == {1: "a_b", 2: "a_b-2", 3: "Cat", 4: "cat-4", 5: "_", 6: "x_ y"}
    # a valid 400-byte class name (Errno 36 before), two that agree in their first 200 bytes, CON
    long = export_module._folder_names([(1, "ü" * 200), (2, "ü" * 199 + "x"), (3, "CON")])
    assert len(long[1].encode()) <= 200 and long[2] == long[1] + "-2" and long[3] == "CON_"


def test_labels_csv_defuses_formula_class_names_and_annotators(store: Store, tmp_path) -> None:
    from labelkit.store import NewItem

    formula = store.add_class('=HYPERLINK("http://evil","x")')
    ids = store.add_items(
        [NewItem("ab" * 32, "images/a.png", "images/a.png", "@a.png", "t", 8, 8, "PNG", "L")]
    )
    store.label(ids["ab" * 32], formula.id, annotator="+bob")
    export_module.write_labels(store, tmp_path / "labels.csv", fmt="csv")
    row = pd.read_csv(tmp_path / "labels.csv").iloc[0]
    assert (
        row["class"] == "'" + formula.name
        and row["annotator"] == "'+bob"
        and row["original_name"] == "'@a.png"
    )
    export_module.write_labels(
        store, tmp_path / "labels.json", fmt="json"
    )  # JSON keeps the names as they are
    assert json.loads((tmp_path / "labels.json").read_text())[0]["class"] == formula.name


def test_export_without_a_model_version_fails_with_a_clear_message(store: Store, tmp_path, capsys) -> None:
    with pytest.raises(ExportError, match="no model version to export yet"):
        export_bundle(store, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    status = cli.main(["--workspace", str(store.workspace.root), "export", "--out", str(tmp_path / "out")])
    assert status == 2 and "no model version to export yet" in capsys.readouterr().err


def test_export_of_an_unknown_version_names_the_known_ones(trained, tmp_path) -> None:
    store, version_id = trained
    with pytest.raises(ExportError, match=f"no model version 999; versions: {version_id}"):
        export_bundle(store, 999, tmp_path / "out")


def test_export_refuses_a_folder_that_holds_files(trained, tmp_path) -> None:
    store, version_id = trained
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_bundle(store, version_id, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_an_export_that_fails_midway_leaves_no_bundle_and_no_partial_files(
    trained, tmp_path, monkeypatch
) -> None:
    store, version_id = trained

    def broken(*args: object, **kwargs: object) -> pd.DataFrame:
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "predictions_table", broken)
    with pytest.raises(OSError, match="disk full"):
        export_bundle(store, version_id, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
