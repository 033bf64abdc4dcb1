"""Predicting from a bundle alone: the app's predictions come back, bad files get an error row."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelkit import cli
from labelkit.export import export_bundle
from labelkit.predict import BundleError, load_bundle, pixels, predict_files
from labelkit.store import Store
from tests.test_export import trained_workspace


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    root = tmp_path_factory.mktemp("predict")
    store, version_id = trained_workspace(root / "ws")
    bundle = export_bundle(store, version_id, root / "bundle")
    yield store, bundle
    store.close()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("backend", ["torchscript", "onnx"])
def test_labelkit_predict_reproduces_the_app_s_stored_predictions(trained, tmp_path, backend) -> None:
    store, bundle = trained
    out = tmp_path / "predictions.csv"
    status = cli.main(
        [
            "predict",
            "--model",
            str(bundle),
            str(store.workspace.images),
            "--out",
            str(out),
            "--backend",
            backend,
        ]
    )
    assert status == 0
    table = pd.read_csv(out, dtype={"class": str}, keep_default_na=False)
    items = store.item_table()
    by_sha = dict(zip(items["sha256"], items["item_id"], strict=True))
    table["item_id"] = [by_sha[Path(p).stem] for p in table["path"]]
    version = store.versions.latest()
    assert version is not None
    stored = store.versions.predictions(version.id).set_index("item_id").loc[table["item_id"]]
    names = {c.id: c.name for c in store.classes()}
    assert len(table) == len(items) and (table["error"] == "").all()
    assert table["class"].tolist() == [names[c] for c in stored["class_id"]]
    np.testing.assert_allclose(table["confidence"], stored["confidence"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(table["margin"], stored["margin"], atol=1e-5, rtol=0)


def test_without_out_the_csv_goes_to_stdout_and_the_count_to_stderr(trained, capsys) -> None:
    store, bundle = trained
    one = next(store.workspace.images.rglob("*.png"))
    assert cli.main(["predict", "--model", str(bundle), str(one)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "path,class,confidence,margin,entropy,error"
    assert captured.out.splitlines()[1].startswith(f"{one},")
    assert "1 file(s) predicted, 0 could not be read" in captured.err


def test_bad_files_get_an_error_row_and_the_rest_are_still_predicted(trained, tmp_path) -> None:
    store, bundle = trained
    good = sorted(store.workspace.images.rglob("*.png"))[:2]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(good[0], folder / "a_good.png")
    (folder / "b_text.png").write_text("not an image")
    (folder / "c_empty.jpg").write_bytes(b"")
    (folder / "d_truncated.png").write_bytes(good[1].read_bytes()[:60])
    (folder / "e_colour.png").write_bytes(_png(Image.new("RGBA", (40, 30), (200, 10, 10, 128))))
    (folder / "notes.txt").write_text("not an image name: a folder search skips it")
    table = predict_files(load_bundle(bundle), [folder, tmp_path / "missing.png"])
    assert [Path(p).name for p in table["path"]] == [
        "a_good.png", "b_text.png", "c_empty.jpg", "d_truncated.png", "e_colour.png", "missing.png",
    ]  # fmt: skip
    errors = dict(zip([Path(p).name for p in table["path"]], table["error"], strict=True))
    assert errors["a_good.png"] == errors["e_colour.png"] == ""
    assert "not an image" in errors["b_text.png"]
    assert "empty file" in errors["c_empty.jpg"]
    assert "truncated" in errors["d_truncated.png"]
    assert "No such file" in errors["missing.png"]
    predicted = table["error"] == ""
    assert table.loc[predicted, "class"].notna().all() and table.loc[~predicted, "class"].isna().all()


def test_top_k_lists_the_next_classes_in_falling_probability_and_all_ten_sum_to_one(trained) -> None:
    store, bundle = trained
    files = sorted(store.workspace.images.rglob("*.png"))[:4]
    table = predict_files(load_bundle(bundle), files, top_k=10, backend="onnx")
    probs = table[["confidence"] + [f"prob_{r}" for r in range(2, 11)]].to_numpy(dtype=float)
    assert (np.diff(probs, axis=1) <= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(table["margin"], probs[:, 0] - probs[:, 1], atol=1e-12)
    classes = table[["class"] + [f"class_{r}" for r in range(2, 11)]].to_numpy()
    assert all(sorted(row) == [str(d) for d in range(10)] for row in classes)


def test_a_zip_bundle_predicts_exactly_like_its_folder(trained, tmp_path) -> None:
    store, bundle = trained
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in bundle.iterdir():
            zf.write(f, f"my-model/{f.name}")
    files = sorted(store.workspace.images.rglob("*.png"))[:5]
    from_zip = predict_files(load_bundle(archive), files)
    pd.testing.assert_frame_equal(from_zip, predict_files(load_bundle(bundle), files))


def test_transparent_pixels_are_white_as_import_shows_them(tmp_path) -> None:
    path = tmp_path / "clear.png"
    path.write_bytes(_png(Image.new("RGBA", (32, 32), (0, 0, 0, 0))))
    array = pixels(path, channels=1, size=16)
    assert array.shape == (1, 16, 16) and array.dtype == np.uint8 and (array == 255).all()
    assert pixels(path, channels=3, size=8).shape == (3, 8, 8)


def test_predicting_loads_no_training_code_and_no_workspace(trained, tmp_path) -> None:
    store, bundle = trained
    alone = shutil.copytree(bundle, tmp_path / "elsewhere")
    image = next(store.workspace.images.rglob("*.png"))
    script = (
        "import sys, labelkit.predict as p\n"
        f"t = p.predict_files(p.load_bundle({str(alone)!r}), [{str(image)!r}], backend='onnx')\n"
        f"t2 = p.predict_files(p.load_bundle({str(alone)!r}), [{str(image)!r}])\n"
        "print(t['error'].tolist() + t2['error'].tolist())\n"
        "print(sorted(m for m in sys.modules if m.startswith('labelkit')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    errors, modules = done.stdout.splitlines()[-2:]
    assert errors == "['', '']"
    assert json.loads(modules.replace("'", '"')) == ["labelkit", "labelkit.images", "labelkit.predict"]


def test_load_bundle_says_what_is_wrong(tmp_path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match=r"has no model_card\.json"):
        load_bundle(tmp_path)
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("x/readme.txt", "hi")
    with pytest.raises(BundleError, match=r"the zip has no model_card\.json"):
        load_bundle(tmp_path / "x.zip")
    (tmp_path / "model_card.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(BundleError, match="unsupported bundle"):
        load_bundle(tmp_path)


def test_predict_options_are_checked_with_the_valid_choices(trained) -> None:
    _, bundle = trained
    opened = load_bundle(bundle)
    with pytest.raises(ValueError, match="torchscript, onnx"):
        predict_files(opened, [], backend="tensorflow")
    with pytest.raises(ValueError, match=r"between 1 and the number of classes \(10\)"):
        predict_files(opened, [], top_k=11)


def test_a_gpu_that_is_not_there_is_refused_rather_than_silently_replaced_by_the_cpu(trained) -> None:
    import onnxruntime
    import torch

    _, bundle = trained
    opened = load_bundle(bundle)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match="needs onnxruntime-gpu"):
            predict_files(opened, [], backend="onnx", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            predict_files(opened, [], backend="torchscript", device="cuda")
