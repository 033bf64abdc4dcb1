"""Keyboard labelling on the Label page in headless Chromium (issue 15): does every label land on
the image that was on screen when its key went down, and how soon is the next image shown?

    python benchmarks/bench_label_page.py --keys 300 --interval-ms 20 --json bench-results/label_fast.json
    python benchmarks/bench_label_page.py --keys 300 --interval-ms 400 --worker --json bench-results/label_human.json

Builds the demo workspace (the 1,797 digits of ``make run``, classes "0".."9" on keys 0..9) in a
temporary folder, serves the app, opens /label and presses ``--keys`` random digit keys, one every
``--interval-ms``. A listener that sees each key before the labeller records which item's image was
displayed; once every event is acknowledged, the database's annotations are compared with those
presses: ``misapplied`` (a label on another item or of another class than pressed over it),
``lost`` (a press over an image whose label is not stored), ``unbound`` (presses with no image on
screen). ``next_image_*_ms``: from the key going down (the labeller's keydown handler) to the frame
that paints the next image, over the label presses. ``--worker`` runs the background trainer on the
same workspace meanwhile (a round starts every 20 new labels), as a user would have it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from labelkit.demo import build_demo  # noqa: E402
from labelkit.store import Store  # noqa: E402
from labelkit.workspace import Workspace  # noqa: E402
from tests.e2e.labeller_drive import (  # noqa: E402
    digit_keys,
    median,
    next_image_ms,
    open_labeller,
    percentile,
    press_keys,
    verdict,
    wait_saved,
)
from tests.served import served_browser  # noqa: E402


def run(keys: int, interval_ms: float, *, worker: bool, seed: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace.resolve(Path(folder) / "demo").ensure()
        store = Store.open(workspace)
        try:
            build_demo(store)
        finally:
            store.close()
        trainer = None
        if worker:
            trainer = subprocess.Popen(
                [sys.executable, "-m", "labelkit", "--workspace", str(workspace.root), "worker"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            with served_browser(workspace.root) as (base, browser):
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                open_labeller(page, base)
                started = time.perf_counter()
                presses = press_keys(page, digit_keys(keys, seed=seed), interval_ms)
                pressing_s = time.perf_counter() - started
                saved = wait_saved(page, timeout_s=300)
                settle_s = time.perf_counter() - started - pressing_s
                latencies = next_image_ms(page)
                result = verdict(workspace, presses, since_id=0)
                store = Store.open(workspace)
                try:
                    # rounds the worker finished while the keys were pressed (it trains every 20 labels)
                    versions = len(store.versions.all())
                    jobs = Counter(f"{j.kind} {j.status}" for j in store.jobs.recent(100))
                finally:
                    store.close()
        finally:
            if trainer is not None:
                trainer.terminate()
                trainer.wait(timeout=30)
    return {
        **result,
        "all_acknowledged": saved,
        "keys": keys,
        "interval_ms": interval_ms,
        "worker": worker,
        "model_versions_at_the_end": versions,
        "worker_jobs_at_the_end": dict(jobs),
        "pressing_s": round(pressing_s, 2),
        # Playwright's press is a round trip to the browser: on a loaded machine it takes longer
        # than the interval asked for, and the presses come as fast as it can send them
        "achieved_interval_ms": round(pressing_s / keys * 1000, 1),
        "acknowledged_after_last_key_s": round(settle_s, 2),
        "next_image_median_ms": round(median(latencies), 1),
        "next_image_p95_ms": round(percentile(latencies, 95), 1),
        "next_image_max_ms": round(max(latencies), 1) if latencies else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300, help="key presses")
    parser.add_argument("--interval-ms", type=float, default=20, help="time between presses")
    parser.add_argument("--worker", action="store_true", help="train in the background meanwhile")
    parser.add_argument("--seed", type=int, default=0, help="of the random digit keys")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    if args.keys < 1 or args.interval_ms < 0:
        parser.error("--keys must be at least 1 and --interval-ms not negative")
    result = run(args.keys, args.interval_ms, worker=args.worker, seed=args.seed)
    width = max(map(len, result))
    for name, value in result.items():
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
