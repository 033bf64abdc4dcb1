"""The app under a real Streamlit server, for the browser test and the page benchmarks, and the
settings to drive Debian's headless chromium with Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labelkit.workspace import ENV_WORKSPACE

REPO = Path(__file__).resolve().parents[1]
STREAMLIT = [sys.executable, "-m", "streamlit", "run"]
APP = REPO / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
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


class ServerError(RuntimeError):
    """The server exited or did not answer; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served_app(
    workspace_root: Path,
    log: Path,
    *,
    script: Path = APP,
    env: dict[str, str] | None = None,
    start_timeout: float = 90,
) -> Iterator[str]:
    """``streamlit run`` of ``script`` (the app by default) headless on a free local port for the
    workspace, with ``env`` added to the environment; yields the base URL once the health check
    answers, and stops the server on exit."""
    port = free_port()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*STREAMLIT, str(script), "--server.port", str(port), "--server.headless", "true"],
            cwd=REPO,
            env={**os.environ, ENV_WORKSPACE: str(workspace_root), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{base}/_stcore/health", server, log, start_timeout)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless chromium driven by Playwright (never a downloaded browser), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def served_browser(
    workspace_root: Path, *, script: Path = APP, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Any]]:
    """The served app (or ``script``; log in a temporary folder) and a headless chromium to open it in."""
    with (
        tempfile.TemporaryDirectory() as logs,
        served_app(workspace_root, Path(logs) / "streamlit.log", script=script, env=env) as base,
        chromium() as browser,
    ):
        yield base, browser


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise ServerError(f"streamlit did not answer {url} within {timeout} s:\n{log.read_text()}")
