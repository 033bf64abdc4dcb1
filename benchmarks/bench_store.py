"""Store and importer speed: what the labelling loop and an import feel like on a big workspace.

    python benchmarks/bench_store.py --items 100000 --labels 500 --import-images 2000 --json bench-results/store.json

Measures, on a workspace holding ``--items`` items:
- save: ``store.label`` (committed, durable) per keystroke;
- next: ``store.queue_ids(limit=1)`` + ``store.item`` — what the Label page fetches to show the next image;
- save+next: the two together, the latency a labeller feels;
and the import throughput of ``--import-images`` 32 × 32 PNG files from a folder.
Prints a table and writes JSON. ``--db-url`` runs the same against PostgreSQL.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labelkit.importer import import_path
from labelkit.store import NewItem, QueueFilter, Store
from labelkit.workspace import Workspace


def _fill(store: Store, n: int) -> None:
    """Insert ``n`` items quickly (rows only; the labelling loop never opens these files)."""
    batch = 5_000
    for start in range(0, n, batch):
        rows = []
        for i in range(start, min(start + batch, n)):
            digest = hashlib.sha256(f"bench-{i}-{secrets.token_hex(4)}".encode()).hexdigest()
            rows.append(
                NewItem(
                    digest,
                    f"images/{digest[:2]}/{digest}.png",
                    f"images/{digest[:2]}/{digest}.png",
                    f"{i}.png",
                    "bench",
                    32,
                    32,
                    "PNG",
                    "L",
                )
            )
        store.add_items(rows)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "n": len(ordered),
    }


def bench_labelling(store: Store, labels: int) -> dict[str, dict[str, float]]:
    classes = store.ensure_classes(["a", "b", "c"])
    save, nxt, both = [], [], []
    start_key = secrets.randbits(62)
    current = store.queue_ids(start_key=start_key, limit=1, where=QueueFilter(labeled=False))[0]
    for i in range(labels):
        t0 = time.perf_counter()
        store.label(current, classes[i % 3].id, annotator="bench")
        t1 = time.perf_counter()
        current = store.queue_ids(start_key=start_key, limit=1, where=QueueFilter(labeled=False))[0]
        store.item(current)
        t2 = time.perf_counter()
        save.append(t1 - t0)
        nxt.append(t2 - t1)
        both.append(t2 - t0)
    return {"save": _ms(save), "next": _ms(nxt), "save+next": _ms(both)}


def bench_import(store: Store, n: int, folder: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(buffer, format="PNG")
        (folder / f"{i:06d}.png").write_bytes(buffer.getvalue())
    t0 = time.perf_counter()
    report = import_path(store, folder)
    wall = time.perf_counter() - t0
    imported = report.counts()["imported"]
    return {"images": imported, "wall_s": wall, "images_per_s": imported / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=500, help="labels saved in the timed loop")
    parser.add_argument("--import-images", type=int, default=2_000)
    parser.add_argument("--db-url", help="e.g. postgresql+psycopg2://… (default: SQLite in a temp workspace)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="labelkit-bench-") as tmp:
        store = Store.open(Workspace.resolve(Path(tmp) / "ws", db_url=args.db_url))
        t0 = time.perf_counter()
        _fill(store, args.items)
        fill_s = time.perf_counter() - t0
        labelling = bench_labelling(store, args.labels)
        importing = bench_import(store, args.import_images, Path(tmp) / "pngs")
        dialect = store.dialect
        store.close()

    result = {
        "benchmark": "store",
        "dialect": dialect,
        "items": args.items,
        "fill_s": fill_s,
        "labelling": labelling,
        "import": importing,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }
    print(f"store benchmark: {args.items:,} items ({dialect}), {args.labels} labels")
    print(f"{'operation':<12} {'median ms':>10} {'p95 ms':>10}")
    for name, row in labelling.items():
        print(f"{name:<12} {row['median_ms']:>10.2f} {row['p95_ms']:>10.2f}")
    print(
        f"import: {importing['images']} PNGs (32 × 32) in {importing['wall_s']:.1f} s = "
        f"{importing['images_per_s']:.0f} images/s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
