"""The CUDA-only branches of the training loop, exercised on CPU, and the same paths on a real GPU.

Where ``labelkit.train`` decides anything from the device (``device_options``: bf16 autocast,
channels_last, torch.compile), the CPU tests replace that decision at its boundary with the answer
CUDA would get, so the branch runs here; what ``torch.load(map_location=cuda)`` does to a checkpoint
is stood in for by a tensor on another device (torch's lazy device). Tests marked ``gpu`` run the
same paths on CUDA and skip without it (``benchmarks/device_check.sh`` runs them with ``-m gpu``).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import labelkit.train as train_module
from labelkit.config import TrainConfig
from labelkit.models import build_model
from labelkit.ssl.base import METHODS
from labelkit.train import CHECKPOINT, DeviceOptions, TrainData, device_options, train

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def rgb() -> TrainData:
    """Digits as 3-channel images: with one channel NCHW and NHWC are the same layout, so a
    channels_last check needs more than one."""
    grey = TrainData.from_digits(labels_per_class=2, seed=0, image_size=8)

    def colour(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.ascontiguousarray(np.repeat(x, 3, axis=1))

    return dataclasses.replace(
        grey, x_lb=colour(grey.x_lb), x_ulb=colour(grey.x_ulb), x_test=colour(grey.x_test)
    )


def _config(methods: tuple[str, ...] = ("fixmatch",), **overrides: Any) -> TrainConfig:
    base = {
        "model": "cnn_small",
        "methods": list(methods),
        "steps": 3,
        "batch_size": 4,
        "mu": 2,
        "hflip": False,
        "log_every": 1,
        "eval_every": 0,
        "checkpoint_every": 0,
        "device": "cpu",
        "num_threads": 1,
    }
    return TrainConfig.from_dict({**base, **overrides})


def _as_on_cuda(device: torch.device, config: TrainConfig) -> DeviceOptions:
    """The stub at the boundary: what ``device_options`` answers for a CUDA device."""
    return device_options(torch.device("cuda"), config)


@pytest.fixture
def conv_calls() -> Iterator[list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]]]:
    """(module, input, output) of every Conv2d call in training mode while the test runs."""
    calls: list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]] = []

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(module, nn.Conv2d) and module.training:
            calls.append((module, args[0], output))

    handle = nn.modules.module.register_module_forward_hook(hook)
    yield calls
    handle.remove()


# ------------------------------------------------------------------ the decision itself
@pytest.mark.parametrize("amp", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("compile_", [True, False])
@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_speed_ups_apply_exactly_on_cuda_when_asked(
    device: str, amp: bool, channels_last: bool, compile_: bool
) -> None:
    config = _config(amp=amp, channels_last=channels_last, compile=compile_)
    on_cuda = device.startswith("cuda")
    assert device_options(torch.device(device), config) == DeviceOptions(
        autocast=on_cuda and amp, channels_last=on_cuda and channels_last, compile=on_cuda and compile_
    )


def test_defaults_turn_on_autocast_and_channels_last_but_not_compile_on_cuda() -> None:
    assert device_options(torch.device("cuda"), TrainConfig()) == DeviceOptions(True, True, False)


# ------------------------------------------------------------------ the loop obeys it
def _nhwc_weights(model: nn.Module) -> list[bool]:
    """For each convolution with more than one input channel: are its weights channels_last?"""
    return [
        m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.in_channels > 1
    ]


def test_on_cpu_the_loop_trains_in_float32_and_nchw(rgb: TrainData, conv_calls) -> None:
    # amp and channels_last are on in the config, but this is a CPU. (The augmented batch itself
    # comes out of labelkit.augment in NHWC strides on any device, so only the weights tell.)
    result = train(_config(steps=1), rgb)
    assert conv_calls
    assert all(out.dtype == torch.float32 for _, _, out in conv_calls)
    assert _nhwc_weights(result.student) and not any(_nhwc_weights(result.student))


def test_cuda_branch_autocasts_to_bf16_with_channels_last(
    rgb: TrainData, conv_calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "device_options", _as_on_cuda)
    result = train(_config(steps=2), rgb)
    assert conv_calls and all(out.dtype == torch.bfloat16 for _, _, out in conv_calls)
    first = [x for conv, x, _ in conv_calls if conv.in_channels == 3]
    assert first and all(x.is_contiguous(memory_format=torch.channels_last) for x in first)
    for model in (result.student, result.model):  # the EMA copy is made after the conversion
        assert _nhwc_weights(model) and all(_nhwc_weights(model))
    for _, metrics in result.history:  # the losses leave autocast as float32 numbers
        assert math.isfinite(metrics["train/loss"])


def test_amp_off_keeps_float32_even_on_the_cuda_branch(
    rgb: TrainData, conv_calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "device_options", _as_on_cuda)
    result = train(_config(steps=1, amp=False, channels_last=False), rgb)
    assert conv_calls and all(out.dtype == torch.float32 for _, _, out in conv_calls)
    assert not any(_nhwc_weights(result.student))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_under_bf16_autocast(
    name: str, rgb: TrainData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a GPU round runs (bf16 autocast, NHWC) for every method: finite losses, and the
    supervised loss falls from its start on the same batch stream."""
    monkeypatch.setattr(train_module, "device_options", _as_on_cuda)
    result = train(_config((name,), steps=3), rgb)
    assert result.step == 3
    for _, metrics in result.history:
        for key in ("train/sup_loss", "train/unsup_loss", "train/loss"):
            assert math.isfinite(metrics[key]), (key, metrics)


# ------------------------------------------------------------------ torch.compile
def test_compiled_student_matches_eager_forward_and_backward_without_graph_breaks() -> None:
    """The student traces whole (fullgraph: no graph breaks) and its compiled forward and backward
    equal eager mode. ``aot_eager`` runs dynamo and AOT autograd, the parts the model's code can
    break, without inductor's C++ build (that one runs in the slow test below)."""
    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=3, in_channels=3, image_size=8)
    twin = build_model("cnn_small", num_classes=3, in_channels=3, image_size=8)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(6, 3, 8, 8)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    eager_out, compiled_out = model(x), compiled(x)
    for a, b in zip(eager_out, compiled_out, strict=True):
        torch.testing.assert_close(a, b)
    eager_out.logits.logsumexp(1).sum().backward()
    compiled_out.logits.logsumexp(1).sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.slow
def test_inductor_compiles_the_student_on_cpu() -> None:
    """Plain ``torch.compile(model)`` (inductor: generated C++ kernels) forward and backward; about
    a minute on two cores, most of it the compiler."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("inductor on CPU needs a C++ compiler; none on PATH")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=3, in_channels=1, image_size=8)
    x = torch.randn(4, 1, 8, 8)
    expected = model(x).logits.detach()
    out = torch.compile(model)(x)
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=1e-4)
    out.logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_compile_branch_trains_checkpoints_and_resumes(
    tmp_path, rgb: TrainData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With compile on (the CUDA branch), the loop trains through the compiled module, and the
    checkpoint holds the student's own names (no ``_orig_mod.`` prefix), so a resumed run
    — compiled or not — loads it."""
    compiled: list[nn.Module] = []
    real_compile = torch.compile

    def compile_cheaply(model: nn.Module, **kwargs: Any) -> Any:
        compiled.append(model)
        return real_compile(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(
        train_module, "device_options", lambda device, config: DeviceOptions(False, False, True)
    )
    monkeypatch.setattr(torch, "compile", compile_cheaply)
    config = _config(("supervised",), steps=4, compile=True)
    polls = iter([False, False, True])
    first = train(config, rgb, run_dir=tmp_path, stop=lambda: next(polls))
    assert first.stopped and first.step == 2 and compiled == [first.student]
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert not any("_orig_mod" in k for k in saved["student"])
    resumed = train(config, rgb, run_dir=tmp_path)
    assert resumed.step == 4 and len(compiled) == 2
    assert all(math.isfinite(m["train/loss"]) for _, m in resumed.history)


# ------------------------------------------------------------------ resume from another device
def _off_cpu_device() -> torch.device:
    """A device other than the CPU that holds data and where ``set_state`` refuses a tensor as
    it refuses a CUDA one; torch's lazy (TorchScript) backend serves on any machine."""
    try:
        import torch._lazy.ts_backend

        torch._lazy.ts_backend.init()
        probe = torch.zeros(2, dtype=torch.uint8).to("lazy")
    except Exception as error:  # no lazy backend in this torch build
        pytest.skip(f"no non-CPU stand-in device in this torch: {error}")
    with pytest.raises(TypeError, match="ByteTensor"):
        torch.Generator().set_state(probe)
    return probe.device


def test_checkpoint_resumes_when_torch_load_puts_its_states_on_another_device(
    tmp_path, rgb: TrainData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``torch.load(map_location=cuda)`` puts every tensor on the GPU, the generator states too.
    Stand-in: the states come back on the lazy device. The resumed run must equal a whole run."""
    elsewhere = _off_cpu_device()
    config = _config(("fixmatch",), steps=4)
    whole = train(config, rgb)
    polls = iter([False, False, True])
    train(config, rgb, run_dir=tmp_path, stop=lambda: next(polls))

    real_load = torch.load
    asked: list[Any] = []

    def load_elsewhere(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("map_location"))
        state = real_load(*args, **kwargs)
        rng = state["rng"]
        rng["sampler"], rng["torch"] = rng["sampler"].to(elsewhere), rng["torch"].to(elsewhere)
        rng["cuda"] = [t.to(elsewhere) for t in rng["cuda"]]
        return state

    monkeypatch.setattr(torch, "load", load_elsewhere)
    resumed = train(config, rgb, run_dir=tmp_path)
    assert asked == [torch.device("cpu")] and resumed.step == 4
    for a, b in zip(whole.student.parameters(), resumed.student.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ on a real GPU
def _cuda_config(**overrides: Any) -> TrainConfig:
    return _config(device="cuda", num_threads=0, **overrides)


@pytest.mark.gpu
@requires_cuda
def test_cuda_round_runs_bf16_and_nhwc(rgb: TrainData, conv_calls) -> None:
    result = train(_cuda_config(steps=4), rgb)
    assert next(result.student.parameters()).device.type == "cuda"
    assert all(_nhwc_weights(result.student))
    assert conv_calls and all(out.dtype == torch.bfloat16 for _, _, out in conv_calls)
    first = [x for conv, x, _ in conv_calls if conv.in_channels == 3]
    assert first and all(x.is_contiguous(memory_format=torch.channels_last) for x in first)
    assert all(math.isfinite(m["train/loss"]) for _, m in result.history)
    assert 0 <= result.history[-1][1]["eval/acc"] <= 1


@pytest.mark.gpu
@requires_cuda
def test_cuda_round_resumes_from_its_checkpoint(tmp_path, rgb: TrainData) -> None:
    """The real ``map_location=cuda``: the saved generator states land on the GPU."""
    config = _cuda_config(steps=6)
    polls = iter([False, False, False, True])
    first = train(config, rgb, run_dir=tmp_path, stop=lambda: next(polls))
    assert first.stopped and first.step == 3
    resumed = train(config, rgb, run_dir=tmp_path)
    assert resumed.step == 6 and not resumed.stopped
    assert [s for s, _ in resumed.history] == [1, 2, 3, 4, 5, 6]


@pytest.mark.gpu
@requires_cuda
def test_cuda_round_with_compile(rgb: TrainData) -> None:
    result = train(_cuda_config(("supervised",), steps=3, compile=True), rgb)
    assert result.step == 3 and all(math.isfinite(m["train/loss"]) for _, m in result.history)
