"""Driving the Label page's labeller in headless Chromium, and checking what it stored.

Shared by the browser test and ``benchmarks/bench_label_page.py``. A listener the page registers
before the labeller's (window, capture phase: it sees every key first) records which item's image
is on screen at each key press; the database then says where each label landed.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelkit.store import Store
from labelkit.workspace import Workspace

ANNOTATOR = "e2e"
# The image on screen: the <img> in the labeller's frame (its DOM lives in a shadow root).
RECORDER = """() => {
  window.__presses = [];
  window.addEventListener("keydown", (e) => {
    const L = window.__labeller;
    const img = L && L.dom ? L.dom.frame.querySelector("img") : null;
    window.__presses.push({ key: e.key, item_id: img ? Number(img.dataset.itemId) : null, t: performance.now() });
  }, true);
}"""


@dataclass(frozen=True)
class Press:
    key: str
    item_id: int | None  # the item shown when the key went down; None when no image was on screen


def open_labeller(page: Any, base: str, *, timeout_ms: int = 90_000) -> None:
    """Open the Label page, wait until the labeller shows an image, name the annotator, take the
    focus off the text box (keys typed there are text, not labels) and start recording presses."""
    page.goto(f"{base}/label")
    page.wait_for_function("() => window.__labeller && window.__labeller.current", timeout=timeout_ms)
    annotator = page.get_by_label("Annotator")
    if annotator.input_value() != ANNOTATOR:
        annotator.fill(ANNOTATOR)
        annotator.press("Enter")
    # events carry the name the labeller last heard from the server: wait for the new one
    page.wait_for_function(
        f"() => window.__labeller.ready && window.__labeller.annotator === {ANNOTATOR!r}", timeout=timeout_ms
    )
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.evaluate(RECORDER)


def press_keys(page: Any, keys: list[str], interval_ms: float) -> list[Press]:
    """Press ``keys`` one every ``interval_ms``; returns what was on screen at each press."""
    start = time.perf_counter()
    for index, key in enumerate(keys):
        page.keyboard.press(key)
        # a fixed schedule, not a sleep after each press: the press itself takes time
        wait = start + (index + 1) * interval_ms / 1000 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    return [Press(p["key"], p["item_id"]) for p in page.evaluate("() => window.__presses")]


def wait_saved(page: Any, *, timeout_s: float = 120) -> bool:
    """Wait until the server has acknowledged every event; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.evaluate("() => window.__labeller.outbox.length") == 0:
            return True
        time.sleep(0.2)
    return False


def digit_keys(count: int, seed: int = 0) -> list[str]:
    return [str(d) for d in np.random.default_rng(seed).integers(0, 10, size=count)]


def verdict(workspace: Workspace, presses: list[Press], since_id: int) -> dict[str, int]:
    """Where the labels of ``presses`` landed, from the annotations after ``since_id``:
    misapplied (a label on another item or of another class than the key pressed over it),
    lost (a press over an image without its label by ``ANNOTATOR``), unbound (presses with no
    image on screen)."""
    store = Store.open(workspace)
    try:
        by_key = {c.shortcut: c.id for c in store.classes()}
        history = store.annotations(since_id=since_id)
    finally:
        store.close()
    history = history[history["reverts_id"].isna()]
    others = int((history["annotator"] != ANNOTATOR).sum())
    history = history[history["annotator"] == ANNOTATOR]
    expected = Counter((p.item_id, by_key[p.key]) for p in presses if p.item_id is not None)
    landed = Counter(zip(history["item_id"].astype(int), history["class_id"].astype(int), strict=True))
    return {
        "presses": len(presses),
        "labels": int(sum(landed.values())),
        "misapplied": int(sum((landed - expected).values())),
        "lost": int(sum((expected - landed).values())),
        "unbound": sum(p.item_id is None for p in presses),
        "distinct_items": len({p.item_id for p in presses if p.item_id is not None}),
        "by_another_annotator": others,  # labels stored under another name than the one typed
    }


def next_image_ms(page: Any) -> list[float]:
    """Per label press: from the key going down to the next image painted (the labeller's log)."""
    log = page.evaluate("() => window.__labeller.log")
    return [e["t_shown"] - e["t_key"] for e in log if e["kind"] == "label" and e["t_shown"] is not None]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")
