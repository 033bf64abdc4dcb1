"""The served app in headless Chromium: pressing a class key on the Label page stores a label."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelkit.store import Store
from labelkit.workspace import Workspace
from tests.served import CHROMIUM, chromium, served_app
from tests.uitools import make_workspace

LABEL_TIMEOUT_S = 30

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Workspace]]:
    if not CHROMIUM.exists():
        if os.environ.get("LABELKIT_REQUIRE_E2E"):
            pytest.fail(f"LABELKIT_REQUIRE_E2E is set but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing (scripts/ensure-chromium installs Debian's chromium)")
    workspace = make_workspace(tmp_path / "ws", items=5, classes=["a", "b"])
    with served_app(workspace.root, tmp_path / "streamlit.log") as base:
        yield base, workspace


def _labels_of_class(workspace: Workspace, class_name: str) -> list[int]:
    store = Store.open(workspace)
    try:
        wanted = store.class_by_name(class_name).id
        history = store.annotations()
        return history.loc[history["class_id"] == wanted, "item_id"].tolist()
    finally:
        store.close()


def test_pressing_1_on_the_label_page_stores_class_a(served: tuple[str, Workspace]) -> None:
    base, workspace = served
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/label")
        page.locator('[data-testid="stImage"] img').first.wait_for(state="visible", timeout=60_000)
        annotator = page.get_by_label("Annotator")
        if not annotator.input_value().strip():
            annotator.fill("e2e")
            annotator.press("Enter")
        page.locator("body").press("1")
        deadline = time.monotonic() + LABEL_TIMEOUT_S
        while not _labels_of_class(workspace, "a"):
            assert time.monotonic() < deadline, "no label of class a was stored after pressing 1"
            time.sleep(0.5)
        page.get_by_text("Saved ✓ a").wait_for(timeout=LABEL_TIMEOUT_S * 1000)
    assert len(_labels_of_class(workspace, "a")) == 1
