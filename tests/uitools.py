"""Helpers for the UI tests: a workspace holding generated PNG items, and the app under AppTest."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from labelkit.store import NewItem, Store
from labelkit.workspace import ENV_WORKSPACE, Workspace

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SIZE = 16


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
