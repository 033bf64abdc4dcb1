"""What the user walks away with: the labels, and a model bundle that runs without labelkit.

A bundle is one folder (or a .zip of it) holding

- ``model.pt``: TorchScript; uint8 images (N, C, H, W) → (logits (N, K), unit embedding (N, D)),
  the input normalisation inside, so ``torch.jit.load`` is all a user needs;
- ``model.onnx``: the same function for onnxruntime, with a dynamic batch axis;
- ``state_dict.pt``: the version's checkpoint (weights, training config, classes) to rebuild the
  model with ``labelkit.models.build_model`` or fine-tune it;
- ``model_card.json``: classes, input contract, backbone, method and settings, labels by source,
  held-out accuracy with its 95 % interval, data fingerprint and versions;
- ``labels.csv`` / ``labels.json``: the current labels, human, imported and accepted
  pseudo-labels told apart; ``predictions.csv`` / ``.parquet``: the version's prediction per item;
- ``imagefolder/<class>/<sha256>.<ext>`` (on request): the labelled images in torchvision's layout.

``labelkit.predict`` reads bundles.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pandas as pd

from labelkit import tables
from labelkit.atomic import write_atomically
from labelkit.store import Store

if TYPE_CHECKING:
    import torch

    from labelkit.models import Classifier
    from labelkit.store.versions import VersionInfo

LABEL_FORMATS = ("csv", "json")
LABEL_COLUMNS = ["item_id", "path", "original_name", "sha256", "class", "source", "annotator", "labeled_at"]
PREDICTION_COLUMNS = [
    "item_id", "path", "original_name", "sha256", "predicted_class", "confidence", "margin", "entropy",
]  # fmt: skip
BUNDLE_FORMAT = "labelkit-bundle"
BUNDLE_VERSION = 1
CARD = "model_card.json"
ONNX_OPSET = 17
EXPORT_TOLERANCE = 1e-4  # largest |logit| difference the exported files may show against the model
CHECK_BATCH = 5  # images in the export check; not the traced batch size, so the dynamic axis is tested

# (done, total, what is happening) — the page draws a bar, the CLI a tqdm line.
ExportProgress = Callable[[int, int, str], None]


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why, for a person."""


# ------------------------------------------------------------------------------------------ labels
def labels_table(
    store: Store, *, sources: tuple[str, ...] | None = None, items: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per labelled item; ``source`` keeps human, imported and accepted pseudo-labels apart.

    ``items``: ``store.item_table()`` when the caller already has it (it is the slow part).
    """
    items = store.item_table() if items is None else items
    names = {c.id: c.name for c in store.classes()}
    labelled = items[items["class_id"].notna()].copy()
    if sources is not None:
        labelled = labelled[labelled["source"].isin(sources)]
    labelled["class"] = labelled["class_id"].map(lambda cid: names.get(int(cid)))
    labelled["labeled_at"] = pd.to_datetime(labelled["labeled_at"]).map(
        lambda t: t.isoformat() if pd.notna(t) else None
    )
    return labelled[LABEL_COLUMNS].reset_index(drop=True)


def _write_table(table: pd.DataFrame, path: Path, fmt: str) -> None:
    writers: dict[str, Callable[[BinaryIO], object]] = {
        "csv": lambda handle: tables.to_csv(table, handle),
        "json": lambda handle: handle.write(
            json.dumps(table.to_dict(orient="records"), indent=1, default=str).encode("utf-8")
        ),
        "parquet": lambda handle: table.to_parquet(handle, index=False),
    }
    if fmt not in writers:
        raise ValueError(f"unknown table format {fmt!r}")
    write_atomically(path, writers[fmt], durable=False)


def write_labels(store: Store, out: str | os.PathLike[str], *, fmt: str) -> int:
    """Write the labels as CSV or JSON (a list of objects); returns the number of rows."""
    if fmt not in LABEL_FORMATS:
        raise ValueError(f"format must be one of {', '.join(LABEL_FORMATS)}; got {fmt!r}")
    table = labels_table(store)
    _write_table(table, Path(out), fmt)
    return len(table)


# ---------------------------------------------------------------------------------------- the model
def resolve_version(store: Store, version_id: int | None) -> VersionInfo:
    """The model version to export: ``version_id``, or the latest ready one when None."""
    if version_id is None:
        latest = store.versions.latest()
        if latest is None:
            raise ExportError(
                "no model version to export yet: label some items and train a round first "
                "(the Train page, or `labelkit worker --once`)"
            )
        return latest
    try:
        return store.versions.get(version_id)
    except LookupError:
        known = ", ".join(str(v.id) for v in store.versions.all()) or "none"
        raise ExportError(f"no model version {version_id}; versions: {known}") from None


def load_version_model(store: Store, version: VersionInfo) -> tuple[Classifier, dict[str, Any]]:
    """The version's model in eval mode, rebuilt from its ``model.pt``, and that checkpoint."""
    import torch

    from labelkit.backbones import WeightsNotFound
    from labelkit.models import from_checkpoint

    path = store.workspace.path(version.path) / "model.pt"
    if not path.is_file():
        raise ExportError(f"model version {version.id}: its checkpoint {path} is missing")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return from_checkpoint(checkpoint), checkpoint
    except WeightsNotFound as error:
        raise ExportError(f"model version {version.id}: {error}") from None


def inference_module(model: Classifier) -> torch.nn.Module:
    """``model`` as a function of uint8 images (N, C, H, W) → (logits, embedding): what the bundle's
    TorchScript and ONNX files compute, normalisation included."""
    from torch import nn

    class UInt8Classifier(nn.Module):
        def __init__(self, inner: Classifier) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.inner(self.inner.normalize(x))
            return out.logits, out.embedding

    return UInt8Classifier(model).eval()


def _write_model_files(model: Classifier, folder: Path, channels: int, size: int) -> dict[str, Any]:
    """model.pt (TorchScript) and model.onnx, each checked against the model itself on a batch of
    another size than the traced one; returns the check's largest differences."""
    import onnxruntime
    import torch

    module = inference_module(model)
    example = torch.randint(
        0, 256, (2, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    # torch 2.14 marks TorchScript and the TorchScript-based ONNX exporter deprecated. They are the
    # formats the bundle promises (the dynamo exporter gave the same logits but took 10-20 s instead
    # of under 1 s on a CPU); the check below verifies what they wrote.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(folder / "model.pt"))
        torch.onnx.export(
            module,
            (example,),
            str(folder / "model.onnx"),
            input_names=["images"],
            output_names=["logits", "embedding"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        check = torch.randint(
            0,
            256,
            (CHECK_BATCH, channels, size, size),
            dtype=torch.uint8,
            generator=torch.Generator().manual_seed(1),
        )
        reference = module(check)[0].numpy()
        scripted = torch.jit.load(str(folder / "model.pt"))(check)[0].numpy()
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"images": check.numpy()})[0]
    diffs = {
        "torchscript_max_abs_logit_diff": float(np.abs(scripted - reference).max()),
        "onnx_max_abs_logit_diff": float(np.abs(onnx_logits - reference).max()),
    }
    worst = max(diffs.values())
    if not worst <= EXPORT_TOLERANCE:
        raise ExportError(
            f"an exported model disagrees with the trained one: {diffs} (tolerance {EXPORT_TOLERANCE})"
        )
    return {"images": CHECK_BATCH, "tolerance": EXPORT_TOLERANCE, **diffs}


# ------------------------------------------------------------------------------------------- card
def data_fingerprint(sha256s: Iterable[str]) -> str:
    """sha256 of the sorted item sha256 hex digests, one per line: names the exact set of images a
    version saw, independent of order and of item ids."""
    digest = hashlib.sha256()
    for sha in sorted(sha256s):
        digest.update(f"{sha}\n".encode("ascii"))
    return digest.hexdigest()


def _held_out(metrics: dict[str, Any]) -> dict[str, Any]:
    n = int(metrics.get("holdout_labels", 0))
    if "holdout_accuracy" not in metrics:
        return {"n": n, "note": metrics.get("holdout_note", "no held-out evaluation")}
    return {
        "n": n,
        "accuracy": metrics["holdout_accuracy"],
        "ci95": metrics["holdout_ci95"],
        "interval": "Wilson score interval, 95 %",
    }


def model_card(
    version: VersionInfo, checkpoint: dict[str, Any], *, item_sha256s: list[str], export_check: dict[str, Any]
) -> dict[str, Any]:
    """Everything a user of the bundle needs to know about the model, as JSON-ready data."""
    import torch

    from labelkit import __version__

    channels, size = int(checkpoint["in_channels"]), int(checkpoint["image_size"])
    fit = str(checkpoint.get("fit", "squash"))
    state = checkpoint["state_dict"]
    pairs = zip(checkpoint["class_ids"], checkpoint["class_names"], strict=True)
    classes = [{"index": i, "id": int(cid), "name": name} for i, (cid, name) in enumerate(pairs)]
    return {
        "format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "model_version": version.id,
        "classes": classes,
        "input": {
            "dtype": "uint8",
            "layout": "NCHW",
            "channels": channels,
            "color": "L" if channels == 1 else "RGB",
            "height": size,
            "width": size,
            "value_range": [0, 255],
            "fit": fit,
            "preprocessing": (
                f"decode, apply EXIF orientation, convert to {'L' if channels == 1 else 'RGB'} "
                "(transparency on white), "
                + (
                    f"resize bicubic so the short side is {size}, then crop the centre {size} x {size}"
                    if fit == "crop"
                    else f"resize bicubic to {size} x {size} without keeping the aspect ratio"
                )
            ),
            "normalization": {
                "mean": [float(v) for v in state["input_mean"]],
                "std": [float(v) for v in state["input_std"]],
                "formula": "(x / 255 - mean) / std per channel; done inside model.pt and model.onnx",
            },
        },
        "outputs": {
            "logits": "(N, num_classes) float32; softmax gives class probabilities in the order of classes",
            "embedding": f"(N, {int(state['classifier.weight'].shape[1])}) float32, unit L2 norm (the pooled features)",
        },
        "backbone": version.backbone,
        "pretrained_weights": checkpoint.get("weights"),
        "method": version.method,
        "settings": version.config,
        "label_counts_by_source": version.label_counts,
        "train_labels": version.metrics.get("train_labels"),
        "held_out": _held_out(version.metrics),
        "data_fingerprint": {
            "sha256": data_fingerprint(item_sha256s),
            "items": len(item_sha256s),
            "recipe": "sha256 over the sorted item sha256 hex digests used in training, one per line",
        },
        "trained_on": version.device,
        "created_at": version.created_at.isoformat(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labelkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "onnx_opset": ONNX_OPSET,
        "export_check": export_check,
    }


# ------------------------------------------------------------------------------------ predictions
def predictions_table(store: Store, version: VersionInfo, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """The version's prediction for every item it predicted, with the item's file and class name."""
    items = store.item_table() if items is None else items
    names = {int(c["id"]): c["name"] for c in version.classes}
    table = store.versions.predictions(version.id).merge(
        items[["item_id", "path", "original_name", "sha256"]], on="item_id", how="left"
    )
    table["predicted_class"] = table["class_id"].map(lambda cid: names[int(cid)])
    return table[PREDICTION_COLUMNS]


# ------------------------------------------------------------------------------------ imagefolder
def _folder_names(classes: Iterable[tuple[int, str]]) -> dict[int, str]:
    """A folder name per class id, safe on every file system and distinct even where two class
    names differ only in characters a file system refuses."""
    taken: set[str] = set()
    out: dict[int, str] = {}
    for cid, name in classes:
        safe = tables.safe_name(name)
        if safe.lower() in taken:  # case-insensitive file systems merge "Cat" and "cat"
            safe = f"{safe}-{cid}"
        taken.add(safe.lower())
        out[cid] = safe
    return out


def _copy_imagefolder(
    store: Store, labels: pd.DataFrame, items: pd.DataFrame, folder: Path, tick: Callable[[str], None]
) -> None:
    class_ids = items.set_index("item_id").loc[labels["item_id"], "class_id"].astype(int).tolist()
    folders = _folder_names((c.id, c.name) for c in store.classes())
    for row, cid in zip(labels.itertuples(index=False), class_ids, strict=True):
        tick("copying labelled images")
        if cid not in folders:  # a label on a class deleted since: no class folder to put it in
            continue
        target = folder / folders[cid]
        target.mkdir(parents=True, exist_ok=True)
        source = store.workspace.path(row.path)
        shutil.copyfile(source, target / f"{row.sha256}{source.suffix.lower()}")


# ----------------------------------------------------------------------------------------- bundle
def export_bundle(
    store: Store,
    version_id: int | None,
    out_dir: str | os.PathLike[str],
    *,
    imagefolder: bool = False,
    progress: ExportProgress | None = None,
) -> Path:
    """Write the bundle of a model version (the latest when ``version_id`` is None) to ``out_dir``.

    ``out_dir`` must not exist or be empty. Everything is written to a hidden sibling folder that is
    renamed to ``out_dir`` at the end, so ``out_dir`` holds a complete bundle or nothing.
    """
    version = resolve_version(store, version_id)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty folder; choose a new one")
    items = store.item_table()
    labels = labels_table(store, items=items)
    total = 6 + (len(labels) if imagefolder else 0)
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, what)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        model, checkpoint = load_version_model(store, version)
        shutil.copyfile(store.workspace.path(version.path) / "model.pt", tmp / "state_dict.pt")
        tick("reading the labels and the model")
        channels, size = int(checkpoint["in_channels"]), int(checkpoint["image_size"])
        check = _write_model_files(model, tmp, channels, size)
        tick("writing TorchScript and ONNX")
        used = np.load(store.workspace.path(version.path) / "item_ids.npy")
        shas = items.set_index("item_id").loc[used, "sha256"].tolist()
        card = model_card(version, checkpoint, item_sha256s=shas, export_check=check)
        (tmp / CARD).write_text(json.dumps(card, indent=1, default=str), encoding="utf-8")
        tick("writing the model card")
        _write_table(labels, tmp / "labels.csv", "csv")
        _write_table(labels, tmp / "labels.json", "json")
        tick("writing the labels")
        predictions = predictions_table(store, version, items)
        _write_table(predictions, tmp / "predictions.csv", "csv")
        _write_table(predictions, tmp / "predictions.parquet", "parquet")
        tick("writing the predictions")
        if imagefolder:
            _copy_imagefolder(store, labels, items, tmp / "imagefolder", tick)
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace cannot replace a folder on every OS
        os.replace(tmp, out)
        tick("done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_zip(
    store: Store,
    version_id: int | None,
    out_zip: str | os.PathLike[str],
    *,
    imagefolder: bool = False,
    progress: ExportProgress | None = None,
) -> Path:
    """The bundle as one .zip whose single top-level folder is named after the file; written to a
    temporary file renamed into place, so ``out_zip`` is complete or absent."""
    out = Path(out_zip).expanduser().resolve()
    if out.suffix.lower() != ".zip":
        raise ExportError(f"a zip bundle's name must end in .zip, got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as scratch:
        folder = export_bundle(
            store, version_id, Path(scratch) / out.stem, imagefolder=imagefolder, progress=progress
        )
        partial = Path(scratch) / out.name
        # Model weights barely compress; deflate still shrinks the CSV/JSON tables several-fold.
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{out.stem}/{path.relative_to(folder).as_posix()}")
        os.replace(partial, out)
    return out
