"""Export speed and bundle size on an MNIST workspace, and prediction throughput from the bundle.

    python benchmarks/bench_export.py --items 60000 --json bench-results/export.json

Builds a workspace of the first ``--items`` MNIST training images (real 28 × 28 PNGs through the
importer, from ``--data-root`` in torchvision's layout), labels ``--labels`` of them with their true
digit, trains one tiny in-process round (16 × 16 input, a few steps: the export does not care how
good the model is) and then measures:
- ``export_bundle`` (folder) with the time of each stage, and ``export_zip``;
- the size of every bundle file and of the zip;
- ``predict_files`` on ``--predict-files`` of the workspace's images with each backend.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from labelkit.datasets import load_mnist
from labelkit.demo import build_demo, source_index
from labelkit.export import export_bundle, export_zip
from labelkit.predict import BACKENDS, load_bundle, predict_files
from labelkit.store import Store
from labelkit.worker import WorkerSettings, run_round
from labelkit.workspace import Workspace

ROUND = {"steps": 6, "batch_size": 8, "mu": 1, "log_every": 1, "aug_group": 8, "checkpoint_every": 0}


def build(store: Store, data_root: str, items: int, labels: int) -> dict[str, float]:
    """The workspace and its model version; returns the setup timings."""
    t0 = time.perf_counter()
    build_demo(store, dataset="mnist", data_root=data_root, limit=items)
    t1 = time.perf_counter()
    _, truth = load_mnist(data_root)
    table = store.item_table().head(labels)
    digits = [truth[source_index(name)] for name in table["original_name"]]
    for digit in sorted(set(digits)):
        ids = [int(i) for i, d in zip(table["item_id"], digits, strict=True) if d == digit]
        store.label_many(ids, store.class_by_name(str(digit)).id, annotator="bench")
    store.jobs.enqueue("train", {"config": ROUND, "image_size": 16})
    job = store.jobs.claim("bench")
    assert job is not None
    run_round(store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False)
    return {"import_s": t1 - t0, "round_s": time.perf_counter() - t1}


def bench_export(store: Store, out: Path, imagefolder: bool) -> dict[str, Any]:
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    folder = export_bundle(
        store, None, out / "bundle", imagefolder=imagefolder,
        progress=lambda done, total, what: marks.append((what, time.perf_counter())),
    )  # fmt: skip
    folder_s = time.perf_counter() - t0
    stages: dict[str, float] = {}
    previous = t0
    for what, at in marks:
        stages[what] = stages.get(what, 0.0) + at - previous
        previous = at
    t1 = time.perf_counter()
    archive = export_zip(store, None, out / "bundle.zip", imagefolder=imagefolder)
    zip_s = time.perf_counter() - t1
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()
    }
    if imagefolder:
        files["imagefolder/"] = sum(
            p.stat().st_size for p in (folder / "imagefolder").rglob("*") if p.is_file()
        )
    return {
        "folder_s": folder_s,
        "stages_s": stages,
        "zip_s": zip_s,
        "file_bytes": files,
        "bundle_bytes": sum(files.values()),
        "zip_bytes": archive.stat().st_size,
        "bundle": str(folder),
    }


def bench_predict(store: Store, bundle: Path, n: int) -> dict[str, Any]:
    paths = [store.workspace.path(p) for p in store.item_table()["path"].head(n)]
    opened = load_bundle(bundle)
    out: dict[str, Any] = {"files": len(paths)}
    for backend in BACKENDS:
        t0 = time.perf_counter()
        table = predict_files(opened, paths, backend=backend)
        seconds = time.perf_counter() - t0
        out[backend] = {
            "s": seconds,
            "files_per_s": len(paths) / seconds,
            "errors": int((table["error"] != "").sum()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--labels", type=int, default=100, help="items labelled with their true digit")
    parser.add_argument("--data-root", default="/work/shared/datasets", help="folder holding MNIST/raw")
    parser.add_argument(
        "--imagefolder", action="store_true", help="include the ImageFolder copy of the labels"
    )
    parser.add_argument("--predict-files", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="labelkit-bench-export-") as tmp:
        store = Store.open(Workspace.resolve(Path(tmp) / "ws").ensure())
        setup = build(store, args.data_root, args.items, args.labels)
        exported = bench_export(store, Path(tmp), args.imagefolder)
        predicted = bench_predict(store, Path(exported.pop("bundle")), args.predict_files)
        store.close()

    result = {
        "benchmark": "export",
        "items": args.items,
        "labels": args.labels,
        "imagefolder": args.imagefolder,
        "setup": setup,
        "export": exported,
        "predict": predicted,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": args.threads,
        },
    }
    print(f"export benchmark: {args.items:,} MNIST items, {args.labels} labels, torch threads {args.threads}")
    print(f"  setup: import {setup['import_s']:.1f} s, one tiny round {setup['round_s']:.1f} s")
    print(f"  export_bundle {exported['folder_s']:.2f} s, export_zip {exported['zip_s']:.2f} s")
    for stage, seconds in exported["stages_s"].items():
        print(f"    {stage:<30} {seconds:8.2f} s")
    for name, size in exported["file_bytes"].items():
        print(f"    {name:<30} {size / 2**10:10.1f} KiB")
    print(f"  bundle {exported['bundle_bytes'] / 2**20:.2f} MiB, zip {exported['zip_bytes'] / 2**20:.2f} MiB")
    for backend in BACKENDS:
        row = predicted[backend]
        print(f"  predict {predicted['files']} files, {backend:<11} {row['files_per_s']:8.0f} files/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
