"""The prepared GPU check (issues 13 and 17): prove the CUDA paths and measure the GPU figures.

    benchmarks/device_check.sh [--out DIR]          # a machine with an NVIDIA GPU, no network, ≤ 8 min
    benchmarks/device_check.sh --dry --out DIR      # the same steps on CPU at tiny sizes (CI, < 1 min)

Steps, in order, each recorded even when another fails:

1. ``gpu_tests``: ``pytest -m gpu`` over the test files that hold gpu-marked tests;
2. ``resume``: a FixMatch round on digits stopped halfway through ``stop``, then resumed from its
   run folder's checkpoint (``torch.load(map_location=cuda)``) to the end;
3. ``embedding``: images/s of the default photo backbone (EfficientNet-Lite0, its packaged ImageNet
   weights) at 224 px, batch 256, fp32 and bf16 autocast, uint8 on the host to features on the host;
4. ``mnist``: MNIST, 10 labels per class, FixMatch: wall time to 99 % test accuracy, or the accuracy
   reached in the time budget (the cosine schedule is sized to the budget, as bench_ssl --minutes);
5. ``data_wait``: ``train/data_time_frac`` (sampling + augmentation ÷ step time) as the loop logs it,
   and again with ``CUDA_LAUNCH_BLOCKING=1``: the loop times the data step without a GPU sync, so
   only with synchronous kernels does the share include the GPU's time for augmentation.

Everything goes to ``DIR/device_check.json`` (rewritten after each step, so a run cut short keeps
what it measured); pytest's log and JUnit XML lie beside it. Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each step is: the real run on a GPU, or the dry run on CPU."""

    device: str
    digits_steps: int
    digits_batch: int
    digits_size: int
    embed_batch: int
    embed_warmup: int
    embed_batches: int
    mnist_seconds: float
    mnist_labels_per_class: int
    mnist_batch: int
    mnist_mu: int
    mnist_evals: int  # test-set evaluations over the run (each one a chance to stop at the target)
    data_wait_steps: int
    pytest_timeout: int


FULL = Sizes("cuda", 200, 32, 16, 256, 3, 10, 150.0, 10, 64, 7, 15, 60, 170)
DRY = Sizes("cpu", 6, 4, 8, 2, 1, 1, 1.0, 2, 4, 2, 2, 4, 170)
TARGET_ACC = 0.99


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry", action="store_true", help="tiny sizes on CPU, fake MNIST (what CI runs)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the JSON (default: $OUT, else bench-results/)"
    )
    parser.add_argument(
        "--mnist-root", type=Path, default=ROOT / ".mnist", help="folder holding MNIST/raw/*.gz"
    )
    parser.add_argument("--mnist-seconds", type=float, help="MNIST training budget (default: 150; dry: 1)")
    parser.add_argument(
        "--deadline", type=float, default=450.0, help="seconds for the whole check; MNIST gets what is left"
    )
    parser.add_argument(
        "--steps", default="gpu_tests,resume,embedding,mnist,data_wait", help="which steps, comma-separated"
    )
    parser.add_argument("--data-wait-child", help=argparse.SUPPRESS)  # JSON; the launch-blocking run
    return parser.parse_args(argv)


# ---------------------------------------------------------------- steps
def step_gpu_tests(sizes: Sizes, out: Path, dry: bool) -> dict[str, Any]:
    """``pytest -m gpu`` on every test file that marks a test ``gpu``. On the GPU none may skip."""
    import xml.etree.ElementTree as ET

    files = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text()
    )
    if not files:
        return {"ok": False, "error": "no test file marks a test with pytest.mark.gpu"}
    junit = out / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu"]
    command += ["--junitxml", str(junit), *files]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=sizes.pytest_timeout, check=False
        )
        log, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        log, rc = (
            f"{expired.stdout or ''}{expired.stderr or ''}\ntimed out after {sizes.pytest_timeout} s",
            -1,
        )
    (out / "gpu_tests.log").write_text(log if isinstance(log, str) else str(log))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        if suite is not None:
            counts = {k: int(suite.get(k, 0)) for k in counts}
    # Without CUDA (dry) every gpu test skips; on the GPU a skip means a path went unproven.
    ok = rc == 0 and counts["tests"] > 0 and (dry or counts["skipped"] == 0)
    return {"ok": ok, "rc": rc, "files": files, **counts, "tail": log[-1500:]}


def _digits_config(sizes: Sizes, steps: int) -> Any:
    from labelkit.config import TrainConfig

    return TrainConfig.from_dict(
        {
            "model": "cnn_small",
            "methods": ["fixmatch"],
            "steps": steps,
            "batch_size": sizes.digits_batch,
            "mu": 3 if sizes.device == "cuda" else 2,
            "hflip": False,
            "device": sizes.device,
            "eval_every": 0,
            "checkpoint_every": 0,
            "log_every": max(1, steps // 10),
            "num_threads": 0 if sizes.device == "cuda" else 1,
        }
    )


def step_resume(sizes: Sizes, out: Path, dry: bool) -> dict[str, Any]:
    """Stop a round halfway (``stop``), resume it from its checkpoint, check it finishes whole."""
    from labelkit.train import CHECKPOINT, TrainData, train

    data = TrainData.from_digits(labels_per_class=4, seed=0, image_size=sizes.digits_size)
    steps = sizes.digits_steps
    config = _digits_config(sizes, steps)
    polls = 0

    def stop_halfway() -> bool:
        nonlocal polls
        polls += 1
        return polls > steps // 2  # polled before each step: steps // 2 of them run

    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        first = train(config, data, run_dir=run_dir, stop=stop_halfway)
        t1 = time.perf_counter()
        saved = Path(run_dir) / CHECKPOINT
        checkpoint_bytes = saved.stat().st_size if saved.exists() else 0
        resumed = train(config, data, run_dir=run_dir)
        t2 = time.perf_counter()
    logged = [s for s, _ in resumed.history]
    device = str(next(resumed.student.parameters()).device)
    ok = (
        first.stopped
        and first.step == steps // 2
        and checkpoint_bytes > 0
        and resumed.step == steps
        and not resumed.stopped
        and logged == sorted(set(logged))
        and logged[-1] == steps
        and device.startswith(sizes.device)
    )
    return {
        "ok": ok,
        "steps": steps,
        "stopped_at": first.step,
        "resumed_to": resumed.step,
        "device": device,
        "checkpoint_bytes": checkpoint_bytes,
        "first_s": round(t1 - t0, 2),
        "resumed_s": round(t2 - t1, 2),
        "accuracy": round(resumed.history[-1][1]["eval/acc"], 4),
    }


def step_embedding(sizes: Sizes, out: Path, dry: bool) -> dict[str, Any]:
    """Images/s of the default photo backbone at its input size, uint8 host batch → features on the
    host (what the embedding cache does per batch), in fp32 and under bf16 autocast."""
    import torch

    from labelkit.backbones import DEFAULT_PHOTO_BACKBONE, preprocessing, resolve_weights
    from labelkit.models import build_model

    device = torch.device(sizes.device)
    weights = resolve_weights(DEFAULT_PHOTO_BACKBONE)
    size = preprocessing(DEFAULT_PHOTO_BACKBONE)["image_size"]
    model = build_model(
        DEFAULT_PHOTO_BACKBONE,
        num_classes=2,
        in_channels=3,
        image_size=size,
        pretrained=weights,
        head_on_embedding=True,
    ).eval()
    model = model.to(device)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (sizes.embed_batch, 3, size, size), dtype=torch.uint8, generator=gen)
    if device.type == "cuda":
        batch = batch.pin_memory()

    def embed(x: Any, bf16: bool, channels_last: bool) -> Any:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            x = model.normalize(x.to(device, non_blocking=True))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return model(x).features.float().cpu()

    rows = []
    reference = None
    for name, bf16, channels_last in (
        ("fp32", False, False),
        ("bf16", True, False),
        ("bf16_channels_last", True, True),
    ):
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        for _ in range(sizes.embed_warmup):
            feats = embed(batch, bf16, channels_last)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(sizes.embed_batches):
            feats = embed(batch, bf16, channels_last)  # .cpu() waits for the GPU
        seconds = time.perf_counter() - t0
        if reference is None:
            reference = feats
        agreement = float(torch.nn.functional.cosine_similarity(feats, reference, dim=1).min())
        rows.append(
            {
                "precision": name,
                "images_per_s": round(sizes.embed_batch * sizes.embed_batches / seconds, 1),
                "min_cosine_to_fp32": round(agreement, 5),
            }
        )
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {
        # bf16 features must still be the fp32 ones (cosine ≥ 0.99 on every image of the batch)
        "ok": all(r["min_cosine_to_fp32"] >= 0.99 for r in rows),
        "backbone": DEFAULT_PHOTO_BACKBONE,
        "weights": weights.source,
        "image_size": size,
        "batch": sizes.embed_batch,
        "timed_batches": sizes.embed_batches,
        "rows": rows,
        "peak_gpu_gib": round(peak, 2) if peak is not None else None,
    }


def write_fake_mnist(root: Path, train: int = 300, test: int = 100) -> None:
    """scikit-learn's digits at 28 px written as MNIST's gzipped IDX files (the dry run reads them
    through the real MNIST reader)."""
    import numpy as np

    from labelkit.datasets import MNIST_FILES, load_digits

    x, y = load_digits(size=28)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for is_train, (start, stop) in ((True, (0, train)), (False, (train, train + test))):
        images, labels = x[start:stop, 0], y[start:stop].astype(np.uint8)
        image_stem, label_stem = MNIST_FILES[is_train]
        header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
        (raw / f"{image_stem}.gz").write_bytes(gzip.compress(header + images.tobytes()))
        header = (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
        (raw / f"{label_stem}.gz").write_bytes(gzip.compress(header + labels.tobytes()))


def step_mnist(sizes: Sizes, out: Path, dry: bool, *, root: Path, seconds: float) -> dict[str, Any]:
    """MNIST-100 FixMatch: time to 99 % test accuracy, else the accuracy reached in ``seconds``."""
    import bench_ssl

    from labelkit.train import TrainData, train

    args = bench_ssl.parse_args(
        [
            "--dataset=mnist",
            f"--data-root={root}",
            f"--labels-per-class={sizes.mnist_labels_per_class}",
            f"--batch-size={sizes.mnist_batch}",
            f"--mu={sizes.mnist_mu}",
            f"--device={sizes.device}",
            f"--threads={0 if sizes.device == 'cuda' else 1}",
        ]
    )
    t_load = time.perf_counter()
    data = TrainData.from_mnist(root, labels_per_class=sizes.mnist_labels_per_class, seed=0)
    load_s = time.perf_counter() - t_load
    per_step = bench_ssl._seconds_per_step(args, ("fixmatch",), data, 0)
    steps = max(bench_ssl.CALIBRATION_STEPS, int(seconds / per_step))
    config = dataclasses.replace(
        bench_ssl._config(args, ("fixmatch",), 0, steps),
        eval_every=max(1, steps // sizes.mnist_evals),
        log_every=max(1, steps // 50),
    )
    curve: list[tuple[int, float, float]] = []  # (step, seconds since the start, test accuracy)
    reached: list[float] = []
    start = time.perf_counter()

    def record(step: int, metrics: dict[str, float]) -> None:
        if "eval/acc" in metrics:
            curve.append((step, round(time.perf_counter() - start, 2), round(metrics["eval/acc"], 4)))
            if metrics["eval/acc"] >= TARGET_ACC and not reached:
                reached.append(time.perf_counter() - start)

    result = train(config, data, callback=record, stop=lambda: bool(reached))
    wall = time.perf_counter() - start
    logs = [m for _, m in result.history]

    def mean(key: str) -> float | None:
        values = [m[key] for m in logs if key in m]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "ok": bool(curve) and result.step > 0,
        "labels": sizes.mnist_labels_per_class * data.num_classes,
        "unlabelled": len(data.x_ulb),
        "test": len(data.x_test) if data.x_test is not None else 0,
        "batch": sizes.mnist_batch,
        "mu": sizes.mnist_mu,
        "budget_s": round(seconds, 1),
        "seconds_per_step": round(per_step, 5),
        "steps_planned": steps,
        "steps_run": result.step,
        "wall_s": round(wall, 1),
        "load_s": round(load_s, 1),
        "target_acc": TARGET_ACC,
        "time_to_target_s": round(reached[0], 1) if reached else None,
        "best_acc": max(a for _, _, a in curve) if curve else None,
        "final_acc": curve[-1][2] if curve else None,
        "curve": curve,
        "imgs_per_s": mean("train/imgs_per_s"),
        "data_time_frac": mean("train/data_time_frac"),
        "mask_rate": mean("train/mask_rate"),
    }


def data_wait_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process (CUDA_LAUNCH_BLOCKING must be set before CUDA starts)."""
    from labelkit.train import TrainData, train

    sizes = Sizes(**spec["sizes"])
    data = TrainData.from_mnist(spec["root"], labels_per_class=sizes.mnist_labels_per_class, seed=0)
    data = dataclasses.replace(data, x_test=None, y_test=None)
    config = dataclasses.replace(
        _digits_config(sizes, sizes.data_wait_steps),
        batch_size=sizes.mnist_batch,
        mu=sizes.mnist_mu,
        log_every=sizes.data_wait_steps,
    )
    result = train(config, data)
    return {"data_time_frac": round(result.history[-1][1]["train/data_time_frac"], 4)}


def step_data_wait(sizes: Sizes, out: Path, dry: bool, *, root: Path, logged: float | None) -> dict[str, Any]:
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    spec = json.dumps({"sizes": dataclasses.asdict(sizes), "root": str(root)})
    done = subprocess.run(
        [sys.executable, __file__, "--data-wait-child", spec],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr[-1500:]}
    blocking = json.loads(done.stdout.strip().splitlines()[-1])["data_time_frac"]
    return {
        "ok": 0 <= blocking <= 1,
        "data_time_frac_logged": logged,  # from the MNIST run: host time only on CUDA
        "data_time_frac_launch_blocking": blocking,
        "steps": sizes.data_wait_steps,
        "note": "the loop times sampling + augmentation without a GPU sync; with CUDA_LAUNCH_BLOCKING=1 "
        "every kernel finishes before the timer reads, so that share includes the GPU's work",
    }


# ---------------------------------------------------------------- driver
def environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
        )
    return info


def run_step(
    report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]], save: Callable[[], None]
) -> None:
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as error:  # one broken step must not hide the others' figures
        result = {
            "ok": False,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc()[-3000:],
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    report["steps"][name] = result
    status = "ok" if result["ok"] else "FAILED"
    print(f"[device_check] {name}: {status} in {result['seconds']} s", file=sys.stderr, flush=True)
    save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_wait_child:
        print(json.dumps(data_wait_child(json.loads(args.data_wait_child))))
        return 0
    started = time.perf_counter()
    sizes = DRY if args.dry else FULL
    out = args.out or Path(os.environ.get("OUT") or ROOT / "bench-results" / "device_check")
    out.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in args.steps.split(",") if s]
    report: dict[str, Any] = {
        "mode": "dry" if args.dry else "full",
        "environment": environment(),
        "steps": {},
    }
    if not args.dry and not report["environment"]["cuda_available"]:
        print("device_check: no CUDA device here; use --dry on a CPU", file=sys.stderr)
        return 2

    def save() -> None:
        report["wall_s"] = round(time.perf_counter() - started, 1)
        report["ok"] = all(s["ok"] for s in report["steps"].values())
        (out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as scratch:
        root = args.mnist_root
        if args.dry:
            root = Path(scratch) / "mnist"
            write_fake_mnist(root)
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "gpu_tests": lambda: step_gpu_tests(sizes, out, args.dry),
            "resume": lambda: step_resume(sizes, out, args.dry),
            "embedding": lambda: step_embedding(sizes, out, args.dry),
        }
        for name in ("gpu_tests", "resume", "embedding"):
            if name in wanted:
                run_step(report, name, steps[name], save)
        if "mnist" in wanted:
            # what is left of the deadline, less the data-wait run (~40 s) and MNIST's own set-up
            left = args.deadline - (time.perf_counter() - started) - (0 if args.dry else 70)
            budget = sizes.mnist_seconds if args.mnist_seconds is None else args.mnist_seconds
            budget = max(min(budget, left), 1.0 if args.dry else 20.0)
            run_step(
                report, "mnist", lambda: step_mnist(sizes, out, args.dry, root=root, seconds=budget), save
            )
        if "data_wait" in wanted:
            logged = report["steps"].get("mnist", {}).get("data_time_frac")
            run_step(
                report,
                "data_wait",
                lambda: step_data_wait(sizes, out, args.dry, root=root, logged=logged),
                save,
            )
    save()
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
