"""Demo workspaces built offline: scikit-learn's handwritten digits, or MNIST from a folder on disk.

The images go through the normal importer (as PNG files), so the demo exercises the same path as a
user's own photos. Classes are created, labels are not: labelling is the point of the demo.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from labelkit import datasets
from labelkit.importer import ImportReport, Progress, import_uploads
from labelkit.store import Store

DATASETS = ("digits", "mnist")
DIGIT_CLASSES = [str(d) for d in range(10)]
NAME = "{prefix}-{index:05d}.png"  # the index is the image's position in its source dataset


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def build_demo(
    store: Store,
    *,
    dataset: str = "digits",
    data_root: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Fill ``store`` with a demo dataset: classes 0–9 and unlabelled images.

    ``digits``: the 1,797 scikit-learn digits, upscaled to 32 × 32. ``mnist``: the MNIST training
    images from ``data_root`` in torchvision's layout (``DIR/MNIST/raw``), first ``limit`` of them;
    downloads only with ``download=True``.
    """
    if dataset == "digits":
        images, _ = datasets.load_digits(size=32)
        prefix = "digit"
    elif dataset == "mnist":
        if data_root is None:
            raise ValueError("the mnist demo needs data_root (the folder holding MNIST/raw)")
        images, _ = datasets.load_mnist(data_root, train=True, download=download)
        prefix = "mnist"
    else:
        raise ValueError(f"unknown demo dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        images = images[:limit]
    store.ensure_classes(DIGIT_CLASSES)
    uploads = ((NAME.format(prefix=prefix, index=i), _png(image[0])) for i, image in enumerate(images))
    return import_uploads(store, list(uploads), progress=progress)


def source_index(original_name: str) -> int:
    """Position in its source dataset of a demo image, from the name ``build_demo`` gave it
    (``digit-00042.png`` → 42): how a simulated expert looks up the true class."""
    return int(original_name.split("-")[1].split(".")[0])
