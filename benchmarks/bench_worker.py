"""The background worker as the expert feels it.

    python benchmarks/bench_worker.py --demo-limit 1797 --labels 50 --steps 300 --json bench-results/worker.json

1. Latency from a batch of new labels to refreshed predictions for every item: a digits demo
   workspace, ``--labels`` labels from the oracle, then one ``labelkit worker --once`` round
   (process start, loading, training ``--steps``, held-out evaluation, inference over every item,
   the version recorded); then ``--more-labels`` further labels and a second round, which
   warm-starts from the first. Each round: time until its version is recorded (predictions
   readable) and until the worker exits (after drawing the Explore map).
2. Responsiveness: the Label page's save-and-next (``store.label`` + the next queue item) median
   and p95 with no worker, and again while a worker process trains on the same workspace.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from labelkit.datasets import load_digits
from labelkit.demo import build_demo, source_index
from labelkit.store import QueueFilter, Store
from labelkit.workspace import Workspace


def _oracle_labels(store: Store, n: int) -> None:
    """Label ``n`` more unlabelled items with their true digit."""
    _, truth = load_digits()
    table = store.item_table()
    for row in table[table["class_id"].isna()].head(n).itertuples():
        digit = truth[source_index(row.original_name)]
        store.label(int(row.item_id), store.class_by_name(str(digit)).id, annotator="oracle")


def _save_and_next(store: Store, n: int) -> dict[str, float]:
    classes = store.classes()
    samples = []
    for i in range(n):
        current = store.queue_ids(start_key=i * 7919, limit=1, where=QueueFilter(labeled=False))[0]
        t0 = time.perf_counter()
        store.label(current, classes[i % len(classes)].id, annotator="bench")
        nxt = store.queue_ids(start_key=i * 7919, limit=1, where=QueueFilter(labeled=False))
        store.item(nxt[0])
        samples.append(time.perf_counter() - t0)
        time.sleep(0.02)  # a person does not press keys back to back
    ordered = sorted(samples)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (n - 1))],
        "n": n,
    }


def _timed_round(store: Store, ws: Path, steps: int) -> dict[str, Any]:
    """One ``worker --once`` round: seconds until its version is recorded, and until the process ends."""
    before = store.versions.latest()
    job = store.jobs.enqueue("train", {"config": {"steps": steps}})
    t0 = time.perf_counter()
    proc = _worker(ws, "--once")
    to_version = None
    while proc.poll() is None:
        latest = store.versions.latest()
        if to_version is None and latest is not None and (before is None or latest.id != before.id):
            to_version = time.perf_counter() - t0
        time.sleep(0.2)
    to_exit = time.perf_counter() - t0
    output = proc.stdout.read() if proc.stdout else ""
    info = store.jobs.get(job)
    if info.status != "done":
        print(output, file=sys.stderr)
        raise SystemExit(f"round failed: {info.status} {info.error}")
    assert info.model_version_id is not None
    version = store.versions.get(info.model_version_id)
    return {
        "labels_to_predictions_s": to_version if to_version is not None else to_exit,
        "labels_to_map_s": to_exit,
        "round_wall_s_in_worker": version.metrics.get("wall_s"),
        "warm_start": version.metrics.get("warm_start"),
        "device": version.device,
        "holdout_accuracy": version.metrics.get("holdout_accuracy"),
        "holdout_ci95": version.metrics.get("holdout_ci95"),
        "holdout_labels": version.metrics.get("holdout_labels"),
        "items_predicted": version.num_items,
    }


def _worker(ws: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labelkit", "-w", str(ws), "worker", "--auto-min-new-labels", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo-limit", type=int, default=1797)
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--more-labels", type=int, default=20, help="labels added before the warm round")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--keystrokes", type=int, default=100, help="save-and-next samples per condition")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="labelkit-bench-") as tmp:
        ws = Path(tmp) / "ws"
        store = Store.open(Workspace.resolve(ws))
        build_demo(store, limit=args.demo_limit)
        _oracle_labels(store, args.labels)

        # 1. latency of a first (cold) round, then of a warm-started one after more labels
        first = _timed_round(store, ws, args.steps)
        _oracle_labels(store, args.more_labels)
        second = _timed_round(store, ws, args.steps)

        # 2. responsiveness, idle and while a worker trains
        idle = _save_and_next(store, args.keystrokes)
        store.jobs.enqueue("train", {"config": {"steps": 100_000, "checkpoint_every": 1_000}})
        busy_worker = _worker(ws)
        deadline = time.monotonic() + 120
        while store.jobs.active()[0].progress.get("phase") != "training" and time.monotonic() < deadline:
            time.sleep(0.5)
        busy = _save_and_next(store, args.keystrokes)
        busy_worker.send_signal(signal.SIGTERM)
        busy_worker.communicate(timeout=120)
        store.close()

    result = {
        "benchmark": "worker",
        "items": args.demo_limit,
        "labels": args.labels,
        "more_labels": args.more_labels,
        "steps": args.steps,
        "first_round": first,
        "warm_round": second,
        "save_and_next_idle": idle,
        "save_and_next_while_training": busy,
        "slowdown_median": busy["median_ms"] / idle["median_ms"],
    }
    print(f"worker benchmark: {args.demo_limit} items, {args.steps} steps per round, {first['device']}")
    print(
        f"{'round':<28} {'labels':>6} {'→ predictions s':>16} {'→ map s':>8} {'in worker s':>12} {'held-out acc (95 % CI)':>28}"
    )
    for name, labels, r in (
        ("first", args.labels, first),
        ("warm-started", args.labels + args.more_labels, second),
    ):
        ci = r["holdout_ci95"] or [float("nan")] * 2
        acc = f"{r['holdout_accuracy']:.3f} ({ci[0]:.2f}–{ci[1]:.2f}, n={r['holdout_labels']})"
        print(
            f"{name:<28} {labels:>6} {r['labels_to_predictions_s']:>16.1f} {r['labels_to_map_s']:>8.1f} "
            f"{r['round_wall_s_in_worker']:>12.1f} {acc:>28}"
        )
    print(f"{'save+next':<24} {'median ms':>10} {'p95 ms':>10}")
    print(f"{'idle':<24} {idle['median_ms']:>10.2f} {idle['p95_ms']:>10.2f}")
    print(f"{'while worker trains':<24} {busy['median_ms']:>10.2f} {busy['p95_ms']:>10.2f}")
    print(f"slowdown (median): {result['slowdown_median']:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
