"""Datasets as uint8 arrays: scikit-learn's digits (ships with the wheel) and MNIST from disk.

Nothing here downloads unless asked to (``download=True``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_digits(*, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as ``(images (N, 1, S, S) uint8, labels (N,) int64)``.

    The originals are 8 × 8 with values 0–16; ``size`` resizes them (bicubic) for backbones that want
    larger inputs.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if size is not None and size != images.shape[-1]:
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in images]
        )
    return images[:, None], bunch.target.astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    if magic not in (2049, 2051):
        raise ValueError(f"{path}: not an IDX label (2049) or image (2051) file (magic {magic})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({array.size} values for shape {shape})")
    return array.reshape(shape)


def _find(raw: Path, stem: str) -> Path:
    for candidate in (raw / f"{stem}.gz", raw / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {stem}(.gz) not found in {raw}; expected torchvision's layout ROOT/MNIST/raw/ "
        "(pass download=True / --download to fetch it)"
    )


def load_mnist(
    root: str | Path, *, train: bool = True, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from torchvision's layout ``ROOT/MNIST/raw/*.gz`` as ``(images (N, 1, 28, 28), labels)``.

    Reads the IDX files directly so a read-only folder works. Only with ``download=True`` does it go
    through ``torchvision.datasets.MNIST``, which downloads into ``ROOT`` (and extracts there).
    """
    root = Path(root).expanduser()
    if download:
        from torchvision.datasets import MNIST

        dataset = MNIST(str(root), train=train, download=True)
        return dataset.data.numpy()[:, None].copy(), dataset.targets.numpy().astype(np.int64)
    raw = root / "MNIST" / "raw"
    image_stem, label_stem = MNIST_FILES[train]
    images = _read_idx(_find(raw, image_stem))
    labels = _read_idx(_find(raw, label_stem)).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"MNIST in {raw}: {len(images)} images but {len(labels)} labels")
    return images[:, None].copy(), labels


def balanced_subset(labels: np.ndarray, per_class: int, *, seed: int) -> np.ndarray:
    """Indices of ``per_class`` items of every class, drawn without replacement by ``seed``; sorted."""
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(f"class {cls} has {len(members)} items, fewer than {per_class} per class")
        picked.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picked))
