"""Datasets as uint8 arrays: scikit-learn's digits (ships with the wheel), MNIST from disk, and a
labelkit workspace (its images and current labels).

Nothing here downloads unless asked to (``download=True``).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from labelkit.cache import ImageSpec
    from labelkit.store import Store

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


@dataclass(frozen=True)
class WorkspaceArrays:
    """A workspace's active items as arrays. ``y_lb`` indexes ``class_ids`` / ``class_names``
    (the classes in their display order)."""

    x_lb: np.ndarray  # (N_lb, C, S, S) uint8
    y_lb: np.ndarray  # (N_lb,) int64
    lb_ids: np.ndarray  # (N_lb,) item ids
    x_ulb: np.ndarray  # (N_ulb, C, S, S) uint8: active items without a current label
    ulb_ids: np.ndarray  # (N_ulb,) item ids
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    unreadable: tuple[tuple[int, str], ...]  # (item id, error) of images that could not be read


def read_image(path: Path, *, image_size: int, channels: int) -> np.ndarray:
    """One stored image as uint8 (C, S, S), decoded exactly as import saw it (EXIF orientation,
    16-bit range, alpha on white, CMYK), grey (L) or RGB, resized to S × S (bicubic; the aspect
    ratio is not kept, so nothing is cropped away)."""
    from labelkit.images import ImageSpec, decode_for

    return decode_for(path, ImageSpec(image_size, channels, "squash"))


def load_workspace(
    store: Store,
    *,
    image: ImageSpec | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> WorkspaceArrays:
    """Labelled (any current label: human, imported or accepted pseudo-label) and unlabelled active
    items of a workspace at ``image`` (or ``image_size`` × ``channels``, squashed), read through the
    workspace's image cache: each original is decoded once, ever, not once per round.

    Items whose current label points at a deleted class count as unlabelled. Images that fail to
    open are left out and reported in ``unreadable`` rather than failing the whole load.
    """
    from labelkit.cache import ImageCache, ImageSpec

    if image is None:
        if image_size is None or channels is None:
            raise ValueError("give image=ImageSpec(...) or both image_size and channels")
        image = ImageSpec(image_size, channels, "squash")
    if image.channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {image.channels}")
    if image.size < 8:
        raise ValueError(f"image_size must be at least 8, got {image.size}")
    classes = store.classes()
    index = {c.id: i for i, c in enumerate(classes)}
    table = store.item_table()
    table = table[table["status"] == "active"]
    ids, pixels, failed = ImageCache(store, image).load(table["item_id"].tolist())
    labels = table.set_index("item_id")["class_id"].reindex(ids)
    labelled = labels.notna().to_numpy() & labels.fillna(-1).astype(int).isin(list(index)).to_numpy()
    y = np.asarray([index[int(c)] for c in labels[labelled]], dtype=np.int64)
    return WorkspaceArrays(
        x_lb=pixels[labelled],
        y_lb=y,
        lb_ids=ids[labelled],
        x_ulb=pixels[~labelled],
        ulb_ids=ids[~labelled],
        class_ids=tuple(c.id for c in classes),
        class_names=tuple(c.name for c in classes),
        unreadable=tuple(failed),
    )
