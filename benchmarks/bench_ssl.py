"""Compare SSL methods under the standard protocol: N labels per class drawn by seed, every train
image also unlabelled, accuracy of the EMA model on the test set.

    python benchmarks/bench_ssl.py --dataset digits --labels-per-class 4 \\
        --method supervised,fixmatch,fixmatch+association --steps 1000 --seed 0 --json out.json

``--method`` takes comma-separated runs; ``a+b`` trains methods a and b together in one run.
Prints a table and writes one JSON row per (method, seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MNIST_ROOT = "/work/shared/datasets"
CALIBRATION_STEPS = 20
COLUMNS = (
    "method",
    "dataset",
    "labels",
    "seed",
    "steps",
    "wall_s",
    "device",
    "imgs_per_s",
    "accuracy",
    "mask_rate",
    "pseudo_acc",
    "data_time_frac",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--data-root", default=DEFAULT_MNIST_ROOT, help="folder holding MNIST/raw/*.gz")
    parser.add_argument("--labels-per-class", type=int, default=4)
    parser.add_argument("--method", default="supervised,fixmatch", help="runs, comma-separated; a+b combines")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--minutes",
        type=float,
        help="a wall-clock budget per run instead of --steps: a short calibration run measures the "
        "time per step and the run gets as many steps as fit (its cosine schedule then ends on time)",
    )
    parser.add_argument("--seed", default="0", help="one seed or several, comma-separated")
    parser.add_argument("--model", default="cnn_small")
    parser.add_argument("--batch-size", type=int, default=32, help="labelled images per step (B)")
    parser.add_argument("--mu", type=int, default=3, help="unlabelled images per labelled one")
    parser.add_argument("--image-size", type=int, default=16, help="digits only: side after resizing 8×8")
    parser.add_argument(
        "--aug-group",
        type=int,
        default=1,
        help="images per RandAugment/Cutout draw (1: per image, as the paper)",
    )
    parser.add_argument(
        "--bn-sample",
        type=int,
        default=2048,
        help="plain images the EMA model's BatchNorm statistics are re-estimated on (0: keep the student's)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default, all cores; on a shared 2-core machine 2 threads "
        "ran a digits FixMatch run 4–5× slower than 1)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace, methods: tuple[str, ...], seed: int, steps: int) -> Any:
    from labelkit.config import TrainConfig

    return TrainConfig.from_dict(
        {
            "model": args.model,
            "methods": list(methods),
            "steps": steps,
            "batch_size": args.batch_size,
            "mu": args.mu,
            "hflip": False,  # digits: a mirrored 2 is not a 2
            "aug_group": args.aug_group,
            "seed": seed,
            "device": args.device,
            "num_threads": args.threads,
            "eval_every": 0,
            "log_every": max(1, steps // 20),
        }
    )


def _seconds_per_step(args: argparse.Namespace, methods: tuple[str, ...], data: Any, seed: int) -> float:
    """Wall time per step, timed between the logs at steps 10 and 10 + CALIBRATION_STEPS of a short
    run with the same settings, so set-up and the first slow steps are not counted."""
    from labelkit.train import train

    config = dataclasses.replace(_config(args, methods, seed, 10 + CALIBRATION_STEPS), log_every=10)
    stamps: dict[int, float] = {}
    train(
        config,
        dataclasses.replace(data, x_test=None, y_test=None),
        callback=lambda step, _: stamps.__setitem__(step, time.perf_counter()),
    )
    return (stamps[10 + CALIBRATION_STEPS] - stamps[10]) / CALIBRATION_STEPS


def run_one(args: argparse.Namespace, methods: tuple[str, ...], seed: int) -> dict[str, Any]:
    from labelkit.train import TrainData, resolve_device, train

    if args.dataset == "digits":
        data = TrainData.from_digits(
            labels_per_class=args.labels_per_class, seed=seed, image_size=args.image_size
        )
    else:
        data = TrainData.from_mnist(args.data_root, labels_per_class=args.labels_per_class, seed=seed)
    steps = args.steps
    if args.minutes is not None:
        steps = max(CALIBRATION_STEPS, int(args.minutes * 60 / _seconds_per_step(args, methods, data, seed)))
    start = time.perf_counter()
    result = train(_config(args, methods, seed, steps), data, bn_sample=args.bn_sample)
    wall = time.perf_counter() - start
    logs = [m for _, m in result.history]
    tail = logs[-max(1, len(logs) // 4) :]  # the last quarter of the run

    def mean(key: str, rows: list[dict[str, float]]) -> float | None:
        values = [r[key] for r in rows if key in r]
        return round(statistics.fmean(values), 4) if values else None

    return {
        "method": "+".join(methods),
        "dataset": args.dataset,
        "labels": args.labels_per_class * data.num_classes,
        "seed": seed,
        "steps": steps,
        "wall_s": round(wall, 1),
        "device": str(resolve_device(args.device)),
        "imgs_per_s": round(mean("train/imgs_per_s", logs) or 0.0, 1),
        "accuracy": round(logs[-1]["eval/acc"], 4),
        "mask_rate": mean("train/mask_rate", tail),
        "pseudo_acc": mean("train/pseudo_acc", tail),
        "data_time_frac": mean("train/data_time_frac", logs),
    }


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain-text table of ``rows`` (dicts) in ``columns`` order; None prints as a dash."""

    def cell(value: Any) -> str:
        return "–" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("-|-".join("-" * widths[c] for c in columns))
    lines += [" | ".join(cell(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def report(rows: list[dict[str, Any]], path: Path | None, columns: tuple[str, ...] = COLUMNS) -> None:
    """Print the table and, when ``path`` is given, write the rows there as JSON."""
    print(format_table(rows, columns))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [tuple(run.split("+")) for run in args.method.split(",") if run]
    seeds = [int(s) for s in args.seed.split(",") if s]
    rows = []
    for methods in runs:
        for seed in seeds:
            row = run_one(args, methods, seed)
            print(json.dumps(row), file=sys.stderr, flush=True)  # progress while the rest runs
            rows.append(row)
    report(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
