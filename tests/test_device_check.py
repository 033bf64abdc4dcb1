"""The prepared GPU check runs end to end in its dry mode on CPU (what CI can prove of it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def _run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )


def test_dry_run_passes_every_step_and_writes_its_figures(tmp_path: Path) -> None:
    done = _run("--dry", out=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["mode"] == "dry" and report["ok"]
    steps = report["steps"]
    assert list(steps) == ["gpu_tests", "resume", "embedding", "mnist", "data_wait"]
    assert all(s["ok"] for s in steps.values()), {k: s.get("error") for k, s in steps.items()}

    tests = steps["gpu_tests"]
    assert "tests/test_gpu_paths.py" in tests["files"] and tests["tests"] >= 1
    assert tests["failures"] == tests["errors"] == 0
    assert (tmp_path / "gpu_tests.xml").exists() and (tmp_path / "gpu_tests.log").exists()

    resume = steps["resume"]
    assert resume["stopped_at"] == resume["steps"] // 2 and resume["resumed_to"] == resume["steps"]
    assert resume["checkpoint_bytes"] > 0 and resume["device"] == "cpu"

    embedding = steps["embedding"]
    assert embedding["image_size"] == 224 and embedding["weights"] == "package"
    assert [r["precision"] for r in embedding["rows"]] == ["fp32", "bf16", "bf16_channels_last"]
    assert all(r["images_per_s"] > 0 and r["min_cosine_to_fp32"] >= 0.99 for r in embedding["rows"])

    mnist = steps["mnist"]  # the dry run's MNIST: digits written as IDX files, read by load_mnist
    assert mnist["labels"] == 20 and mnist["unlabelled"] == 300 and mnist["test"] == 100
    assert mnist["steps_run"] >= 1 and 0 <= mnist["final_acc"] <= 1
    assert [s for s, _, _ in mnist["curve"]] == sorted({s for s, _, _ in mnist["curve"]})
    assert 0 <= mnist["data_time_frac"] <= 1

    wait = steps["data_wait"]
    assert wait["data_time_frac_logged"] == mnist["data_time_frac"]
    assert 0 <= wait["data_time_frac_launch_blocking"] <= 1


def test_fake_mnist_reads_back_through_the_mnist_reader(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import device_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from labelkit.datasets import load_digits, load_mnist

    device_check.write_fake_mnist(tmp_path, train=30, test=10)
    x, y = load_mnist(tmp_path, train=True)
    x_test, y_test = load_mnist(tmp_path, train=False)
    digits, labels = load_digits(size=28)
    assert x.shape == (30, 1, 28, 28) and x_test.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(x, digits[:30])
    np.testing.assert_array_equal(np.concatenate([y, y_test]), labels[:40])


def test_full_mode_refuses_a_machine_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the full mode is the real check, not this refusal")
    done = _run("--steps", "resume", out=tmp_path)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert not (tmp_path / "device_check.json").exists()
