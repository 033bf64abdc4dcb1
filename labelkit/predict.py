"""Predicting with an exported bundle (see ``labelkit.export``): needs only the bundle's files.

No workspace, no database and none of labelkit's training code: the TorchScript or ONNX model
takes uint8 pixels, and images are decoded as import decodes them (``labelkit.images``) and resized
as training resized them, so a file predicts here as it predicted in the app.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelkit import images

BACKENDS = ("torchscript", "onnx")
CARD = "model_card.json"
BUNDLE_FORMAT = "labelkit-bundle"
SUPPORTED_BUNDLE_VERSIONS = frozenset({1})
# Files a folder is searched for; a file named explicitly is always tried, whatever its name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

Runner = Callable[[np.ndarray], np.ndarray]  # uint8 (N, C, H, W) → logits (N, K)


class BundleError(ValueError):
    """A path that is not a bundle labelkit can read; the message says why."""


@dataclass(frozen=True)
class Bundle:
    """An exported model: its card, and where its files are (a folder, or a folder inside a zip)."""

    source: Path
    card: dict[str, Any]
    member_prefix: str = ""  # inside a zip: the folder holding the files, with a trailing "/"

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.card["classes"]]

    @property
    def channels(self) -> int:
        return int(self.card["input"]["channels"])

    @property
    def image_size(self) -> int:
        return int(self.card["input"]["height"])

    @property
    def fit(self) -> str:
        """How images are brought to the input size ("squash" in bundles before the field existed)."""
        return str(self.card["input"].get("fit", "squash"))

    def read(self, name: str) -> bytes:
        if self.source.is_dir():
            return (self.source / name).read_bytes()
        with zipfile.ZipFile(self.source) as archive:
            return archive.read(self.member_prefix + name)


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder or .zip (as ``labelkit export`` writes them) and read its model card."""
    source = Path(path).expanduser()
    if source.is_dir():
        prefix = ""
        if not (source / CARD).is_file():
            raise BundleError(f"{source} is not a labelkit bundle: it has no {CARD}")
        raw = (source / CARD).read_bytes()
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            cards = sorted(
                (
                    n
                    for n in archive.namelist()
                    if n == CARD or (n.endswith(f"/{CARD}") and n.count("/") == 1)
                ),
                key=len,
            )
            if not cards:
                raise BundleError(f"{source} is not a labelkit bundle: the zip has no {CARD}")
            prefix = cards[0][: -len(CARD)]
            raw = archive.read(cards[0])
    elif source.exists():
        raise BundleError(f"{source} is neither a bundle folder nor a .zip")
    else:
        raise BundleError(f"bundle {source} not found")
    try:
        card = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source}: {CARD} is not valid JSON ({exc})") from None
    if card.get("format") != BUNDLE_FORMAT or card.get("bundle_version") not in SUPPORTED_BUNDLE_VERSIONS:
        raise BundleError(
            f"{source}: unsupported bundle (format {card.get('format')!r}, version "
            f"{card.get('bundle_version')!r}; this labelkit reads {BUNDLE_FORMAT} version(s) "
            f"{sorted(SUPPORTED_BUNDLE_VERSIONS)})"
        )
    return Bundle(source, card, prefix)


def _torchscript_runner(bundle: Bundle, device: str) -> Runner:
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    # torch 2.14 marks torch.jit deprecated; loading a TorchScript file is what this backend is for.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(io.BytesIO(bundle.read("model.pt")), map_location=device)
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits, _ = model(torch.from_numpy(x).to(device))
        return logits.float().cpu().numpy()

    return run


def _onnx_runner(bundle: Bundle, device: str) -> Runner:
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        # Without the provider onnxruntime would fall back to the CPU with only a log line.
        available = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise ValueError(
                f"device {device!r} needs onnxruntime-gpu; this onnxruntime offers {', '.join(available)}. "
                "Use --device cpu or --backend torchscript"
            )
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(bundle.read("model.onnx"), providers=providers)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"images": x})[0]

    return run


RUNNERS: dict[str, Callable[[Bundle, str], Runner]] = {
    "torchscript": _torchscript_runner,
    "onnx": _onnx_runner,
}


def pixels(path: Path, *, channels: int, size: int, fit: str = "squash") -> np.ndarray:
    """One image file as the model's uint8 input (C, S, S), prepared as in training (``fit``:
    "squash" or "crop", see ``labelkit.cache.decode_for``); raises ``images.ImageError`` or
    ``OSError`` with the reason a file cannot be used."""
    return images.decode_for(path, images.ImageSpec(size, channels, fit))


def expand_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files named directly, and the image files under folders (recursively, hidden ones skipped,
    in sorted order)."""
    listed = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out: list[Path] = []
    for entry in map(Path, listed):
        if entry.is_dir():
            out.extend(
                p
                for p in sorted(entry.rglob("*"))
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(entry).parts)
            )
        else:
            out.append(entry)
    return out


def _batches(
    paths: list[Path], bundle: Bundle, batch_size: int
) -> Iterator[tuple[list[Path], list[np.ndarray], dict[Path, str]]]:
    """Decoded images in batches, with the error of each file that could not be used."""
    ready: list[Path] = []
    arrays: list[np.ndarray] = []
    errors: dict[Path, str] = {}
    for path in paths:
        try:
            arrays.append(pixels(path, channels=bundle.channels, size=bundle.image_size, fit=bundle.fit))
            ready.append(path)
        except (images.ImageError, OSError) as exc:
            errors[path] = (
                str(exc) if isinstance(exc, images.ImageError) else f"cannot read: {exc.strerror or exc}"
            )
        if len(ready) == batch_size:
            yield ready, arrays, errors
            ready, arrays, errors = [], [], {}
    if ready or errors:
        yield ready, arrays, errors


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_files(
    bundle: Bundle,
    inputs: str | Path | Sequence[str | Path],
    *,
    top_k: int = 1,
    backend: str = "torchscript",
    device: str = "cpu",
    batch_size: int = 64,
) -> pd.DataFrame:
    """Predict a class for every image file in ``inputs`` (files and/or folders).

    Returns one row per file, in input order: ``path``, ``class`` and ``confidence`` (the top
    class and its probability; higher is surer), ``margin`` (top-1 minus top-2 probability; smaller
    is less sure), ``entropy`` (nats; higher is less sure), ``class_2``/``prob_2`` … up to
    ``top_k``, and ``error`` (empty when predicted; the reason otherwise, the other columns empty).
    A file that cannot be used never stops the others.
    """
    if backend not in RUNNERS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    k = len(bundle.class_names)
    if not 1 <= top_k <= k:
        raise ValueError(f"top_k must be between 1 and the number of classes ({k}); got {top_k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    paths = expand_inputs(inputs)
    run = RUNNERS[backend](bundle, device)
    names = np.asarray(bundle.class_names, dtype=object)
    rows: dict[Path, dict[str, Any]] = {}
    for ready, arrays, errors in _batches(paths, bundle, batch_size):
        rows.update((p, {"error": reason}) for p, reason in errors.items())
        if not ready:
            continue
        probs = _softmax(run(np.stack(arrays)))
        order = np.argsort(-probs, axis=1, kind="stable")
        top = np.take_along_axis(probs, order, axis=1)
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
        for i, path in enumerate(ready):
            row: dict[str, Any] = {
                "class": names[order[i, 0]],
                "confidence": top[i, 0],
                "margin": top[i, 0] - top[i, 1],
                "entropy": entropy[i],
            }
            for rank in range(1, top_k):
                row[f"class_{rank + 1}"] = names[order[i, rank]]
                row[f"prob_{rank + 1}"] = top[i, rank]
            rows[path] = {**row, "error": ""}
    columns = ["path", "class", "confidence", "margin", "entropy"]
    columns += [f"{name}_{rank}" for rank in range(2, top_k + 1) for name in ("class", "prob")]
    table = pd.DataFrame([{"path": str(p), **rows[p]} for p in paths], columns=[*columns, "error"])
    table["error"] = table["error"].fillna("")
    return table
