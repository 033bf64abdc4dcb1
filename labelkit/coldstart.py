"""Embeddings for the cold start: something to cluster before any model or label exists.

The "encoder" here involves no training: every image is shrunk to a small grey thumbnail, its pixels
standardised and projected on their principal components (PCA). Items close in this space look
alike (brightness, layout, coarse shapes), so k-means over it finds typical and diverse *looking*
items, but it knows nothing of semantics: two photos of the same fish on different backgrounds can
land far apart. It is a better first batch than the random ring, and it is replaced by the model's
own embeddings as soon as a first version is trained.

The vectors are cached in the workspace's ``runs/coldstart/`` folder and recomputed when items
have been added or removed since.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from labelkit import images

if TYPE_CHECKING:
    from labelkit.store import Store

Progress = Callable[[int, int], None]

FOLDER = "coldstart"
IDS_FILE = "item_ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"
# The PCA basis is fitted on a sample: 5,000 rows of 256 pixels pin down 64 components well, and
# the SVD then costs well under a second however large the workspace is.
PCA_SAMPLE = 5_000
SEED = 0
_lock = threading.Lock()


def pixel_embeddings(
    store: Store, *, size: int = 16, dim: int = 64, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw-pixel PCA embeddings of every active item.

    Each image is read as import decoded it, converted to grey, resized to ``size`` × ``size``
    (bicubic) and flattened; every pixel position is standardised over the items, the rows are
    projected on the top ``dim`` principal components of a seeded sample of at most ``PCA_SAMPLE``
    rows and L2-normalised. Files that cannot be read any more are skipped.

    Returns
    -------
    item_ids : np.ndarray, shape (N,), int64
        The items embedded, ascending.
    embeddings : np.ndarray, shape (N, min(dim, ...)), float32
        One unit-length row per item (a row of zeros only if the item equals the mean image).
        Fewer than ``dim`` columns when there are fewer sampled items or pixels than ``dim``.
    """
    table = store.item_table()
    table = table[table["status"] == "active"]
    ids: list[int] = []
    rows: list[np.ndarray] = []
    total = len(table)
    for done, (item_id, path) in enumerate(zip(table["item_id"], table["path"], strict=True), start=1):
        try:
            image = images.load(store.workspace.path(path))
        except (OSError, images.ImageError):
            # A file deleted or damaged after import: it still gets labelled from the ring.
            continue
        grey = image.convert("L").resize((size, size), Image.Resampling.BICUBIC)
        rows.append(np.asarray(grey, dtype=np.float32).reshape(-1))
        ids.append(int(item_id))
        if progress is not None and (done % 256 == 0 or done == total):
            progress(done, total)
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)

    x = np.stack(rows)
    # A pixel that never changes (a fixed border) has zero spread; it carries no information.
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    rng = np.random.default_rng(SEED)
    sample = x if len(x) <= PCA_SAMPLE else x[rng.choice(len(x), PCA_SAMPLE, replace=False)]
    _, _, vt = np.linalg.svd(sample - sample.mean(axis=0), full_matrices=False)
    z = x @ vt[:dim].T
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return np.asarray(ids, dtype=np.int64), z.astype(np.float32)


def _stamp(store: Store) -> dict[str, int]:
    """What the cache covers: the number of active items and the highest item id."""
    table = store.item_table()
    return {
        "items": int((table["status"] == "active").sum()),
        "max_item_id": int(table["item_id"].max()) if len(table) else 0,
    }


def ensure_cold_start(store: Store, progress: Progress | None = None) -> Path:
    """The folder holding the cold-start embeddings (``item_ids.npy``, ``embeddings.npy``), computed
    now when missing or when items were added or removed since they were."""
    folder = store.workspace.runs / FOLDER
    with _lock:
        stamp = _stamp(store)
        meta = folder / META_FILE
        if meta.exists() and json.loads(meta.read_text()) == stamp:
            return folder
        item_ids, embeddings = pixel_embeddings(store, progress=progress)
        # Written beside the folder and swapped in, so a reader never sees half of a new cache.
        token = secrets.token_hex(4)
        tmp = folder.with_name(f".{FOLDER}.{token}.tmp")
        tmp.mkdir(parents=True)
        np.save(tmp / IDS_FILE, item_ids)
        np.save(tmp / EMBEDDINGS_FILE, embeddings)
        (tmp / META_FILE).write_text(json.dumps(stamp))
        old = folder.with_name(f".{FOLDER}.{token}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_cold_start(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids (N,), embeddings (N, D)) from a folder written by ``ensure_cold_start``."""
    with _lock:  # not while this process swaps in a new cache
        return np.load(folder / IDS_FILE), np.load(folder / EMBEDDINGS_FILE)
