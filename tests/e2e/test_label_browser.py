"""The served app in headless Chromium: pressing a class key on the Label page stores a label."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelkit.store import Store
from labelkit.workspace import ENV_WORKSPACE, Workspace
from tests.uitools import make_workspace

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 90
LABEL_TIMEOUT_S = 30

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer {url} within {START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Workspace]]:
    if not CHROMIUM.exists():
        if os.environ.get("LABELKIT_REQUIRE_E2E"):
            pytest.fail(f"LABELKIT_REQUIRE_E2E is set but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing (scripts/ensure-chromium installs Debian's chromium)")
    workspace = make_workspace(tmp_path / "ws", items=5, classes=["a", "b"])
    port = _free_port()
    log = tmp_path / "streamlit.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--server.headless",
                "true",
            ],
            cwd=REPO,
            env={**os.environ, ENV_WORKSPACE: str(workspace.root)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{base}/_stcore/health", server, log)
        yield base, workspace
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _labels_of_class(workspace: Workspace, class_name: str) -> list[int]:
    store = Store.open(workspace)
    try:
        wanted = store.class_by_name(class_name).id
        history = store.annotations()
        return history.loc[history["class_id"] == wanted, "item_id"].tolist()
    finally:
        store.close()


def test_pressing_1_on_the_label_page_stores_class_a(served: tuple[str, Workspace]) -> None:
    from playwright.sync_api import sync_playwright

    base, workspace = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
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
        finally:
            browser.close()
    assert len(_labels_of_class(workspace, "a")) == 1
