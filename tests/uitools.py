"""Helpers for the UI tests: a workspace holding generated PNG items, and the app under AppTest."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from labelkit.store import NewItem, Store
from labelkit.workspace import ENV_WORKSPACE, Workspace

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SIZE = 16


def unescaped(markdown: str) -> str:
    """Text a page passed through ``plain()``, as the user reads it (Markdown escapes removed)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def png_bytes(index: int) -> bytes:
    """A small grey PNG unique to ``index`` (its pixels spell the index, so digests differ)."""
    image = Image.new("L", (SIZE, SIZE), color=0)
    image.putdata([(index * 37 + p * (index % 7 + 1)) % 256 for p in range(SIZE * SIZE)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def add_png_items(store: Store, count: int) -> list[int]:
    """Write ``count`` PNGs into the workspace's images folder and register them; returns item ids."""
    new = []
    for index in range(count):
        data = png_bytes(index)
        digest = hashlib.sha256(data).hexdigest()
        relative = f"images/{digest}.png"
        store.workspace.path(relative).write_bytes(data)
        new.append(
            NewItem(
                sha256=digest,
                path=relative,
                thumb_path=relative,
                original_name=f"item{index}.png",
                origin="test",
                width=SIZE,
                height=SIZE,
                format="PNG",
                mode="L",
            )
        )
    ids = store.add_items(new)
    return [ids[item.sha256] for item in new]


def make_workspace(root: Path, *, items: int, classes: Sequence[str]) -> Workspace:
    """A fresh workspace at ``root`` with ``items`` PNG items and the given classes (keys 1, 2, …)."""
    workspace = Workspace.resolve(root).ensure()
    store = Store.open(workspace)
    try:
        store.ensure_classes(classes)
        add_png_items(store, items)
    finally:
        store.close()
    return workspace


def open_app(monkeypatch: pytest.MonkeyPatch, workspace: Workspace, page: str | None = None) -> AppTest:
    """Run the app on ``workspace`` once, then switch to ``page`` (a file under the repo) if given."""
    monkeypatch.setenv(ENV_WORKSPACE, str(workspace.root))
    at = AppTest.from_file(APP, default_timeout=30).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def add_model_version(
    store: Store, item_ids: Sequence[int], probs: Sequence[Sequence[float]], *, metrics: dict | None = None
) -> int:
    """Record a model version as the worker does, without training. ``probs`` (one row per item of
    ``item_ids``, one column per class in ``store.classes()`` order) go to the version folder, with
    the rows scaled to unit length as embeddings; their argmax, confidence, margin and entropy go to
    the predictions table. Returns the version id."""
    p = np.asarray(probs, dtype=np.float64)
    classes = store.classes()
    folder = f"runs/model-test-{len(store.versions.all()) + 1}"
    store.workspace.path(folder).mkdir(parents=True)
    np.save(store.workspace.path(folder) / "probs.npy", p.astype(np.float32))
    np.save(store.workspace.path(folder) / "item_ids.npy", np.asarray(item_ids, dtype=np.int64))
    # Unit-length rows, like the model's embeddings; queue orders such as k-center read them.
    np.save(
        store.workspace.path(folder) / "embeddings.npy",
        (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32),
    )
    top2 = np.sort(p, axis=1)[:, -2:]
    predictions = pd.DataFrame(
        {
            "item_id": list(item_ids),
            "class_id": [classes[j].id for j in p.argmax(axis=1)],
            "confidence": top2[:, 1],
            "margin": top2[:, 1] - top2[:, 0],
            "entropy": -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1),
        }
    )
    return store.versions.add(
        method="fixmatch",
        backbone="cnn_small",
        config={},
        metrics=metrics or {},
        label_counts={},
        classes=[{"id": c.id, "name": c.name} for c in classes],
        device="cpu",
        path=folder,
        parent_id=None,
        predictions=predictions,
    )
