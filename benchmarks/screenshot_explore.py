"""Screenshot of the Explore page (map and round-trip heatmap) for the docs, from a real round.

    python -m benchmarks.screenshot_explore --out docs/explore.png   (from the repository root)

Builds a digits workspace, labels ``--labels`` items from their file names, trains two short rounds
in-process, computes the real UMAP maps, serves the app and photographs the Explore page in
headless Chromium (``/usr/bin/chromium``; no browser is downloaded). The PNG is reduced to a
256-colour palette so it stays small.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from labelkit.datasets import load_digits
from labelkit.demo import build_demo, source_index
from labelkit.explore import ensure_projection
from labelkit.store import Store
from labelkit.worker import WorkerSettings, run_round
from labelkit.workspace import Workspace
from tests.served import served_browser

REPO = Path(__file__).resolve().parents[1]
ROUND = {"steps": 120, "batch_size": 32, "mu": 2, "checkpoint_every": 1000, "log_every": 10}


def build(root: Path, *, items: int, labels: int) -> Workspace:
    workspace = Workspace.resolve(root).ensure()
    store = Store.open(workspace)
    try:
        build_demo(store, limit=items)
        _, truth = load_digits()
        table = store.item_table()
        for n, row in enumerate(table.itertuples()):
            if n >= labels:
                break
            digit = truth[source_index(row.original_name)]
            store.label(int(row.item_id), store.class_by_name(str(digit)).id, annotator="docs")
        for steps in (ROUND["steps"] // 3, ROUND["steps"]):
            job_id = store.jobs.enqueue("train", {"config": {**ROUND, "steps": steps}, "image_size": 16})
            job = store.jobs.claim("docs")
            assert job is not None and job.id == job_id
            version_id = run_round(
                store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False
            )
            assert version_id is not None
            store.jobs.finish(job.id, "done", model_version_id=version_id)
            print(
                f"version {version_id}: {store.versions.get(version_id).metrics.get('holdout_accuracy')}",
                flush=True,
            )
            ensure_projection(store, version_id)
    finally:
        store.close()
    return workspace


def photograph(workspace: Workspace, out: Path, *, width: int, height: int) -> None:
    raw = out.with_suffix(".raw.png")
    with served_browser(workspace.root) as (base, browser):
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{base}/explore")
        page.locator(".js-plotly-plot").nth(1).wait_for(state="visible", timeout=120_000)
        page.get_by_text("Walker accuracy").first.wait_for(timeout=60_000)
        time.sleep(3)  # plotly draws the WebGL points after the element appears
        page.screenshot(path=str(raw), full_page=False)
    Image.open(raw).convert("RGB").quantize(colors=256).save(out, optimize=True)
    raw.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "explore.png")
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--labels", type=int, default=80)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = build(Path(tmp) / "ws", items=args.items, labels=args.labels)
        photograph(workspace, args.out, width=args.width, height=args.height)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
