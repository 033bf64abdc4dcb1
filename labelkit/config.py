"""Training configuration: one frozen dataclass, validated once at the edge, saved with every run.

``TrainConfig.from_dict`` is the only way user input (CLI flags, the Train page, a saved run)
becomes a config; it rejects unknown keys, wrong types, bad ranges and unknown model or method
names with a message that names the valid choices. ``to_dict`` gives the JSON-serialisable form
that checkpoints and model versions store.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "cnn_small"
    methods: tuple[str, ...] = ("fixmatch",)
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name → options
    steps: int = 1000
    batch_size: int = 64  # labelled images per step (B)
    mu: int = 7  # unlabelled images per labelled one (μB per step)
    lr: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    ema_decay: float = 0.999
    clip_grad_norm: float = 0.0  # 0 = no clipping
    hflip: bool = True  # off for digits and text, where a mirror image is another class
    aug_group: int = 1  # images sharing one RandAugment/Cutout draw (1 = per image; as fast as groups of 4 with the FixMatch op table, benchmarks/bench_augment.py)
    seed: int = 0
    device: str = "auto"  # auto = cuda when available, else cpu
    amp: bool = True  # bf16 autocast; CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the student; CUDA only
    eval_every: int = 500  # steps between test-set evaluations of the EMA model (0 = at the end only)
    checkpoint_every: int = 500  # steps between checkpoints when a run folder is given (0 = at the end)
    log_every: int = 10  # steps between metric callbacks
    num_threads: int = 0  # torch CPU threads (0 = leave torch's default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Validate plain data (e.g. parsed JSON) into a config; raise ``ValueError`` on any problem."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; valid: {sorted(known)}")
        values: dict[str, Any] = {}
        defaults = cls()
        for name, value in data.items():
            values[name] = _coerce(name, value, type(getattr(defaults, name)))
        config = dataclasses.replace(defaults, **values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["methods"] = list(self.methods)
        out["method_options"] = {k: dict(v) for k, v in self.method_options.items()}
        return out

    def validate(self) -> None:
        from labelkit.models import MODELS, is_known
        from labelkit.ssl import method_class, method_config

        if not is_known(self.model):
            raise ValueError(
                f"unknown model {self.model!r}; valid: {', '.join(sorted(MODELS))} or any timm model name"
            )
        if not self.methods:
            raise ValueError("choose at least one SSL method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"SSL method listed twice: {list(self.methods)}")
        for name in self.methods:
            method_class(name)  # raises naming the valid methods
        stray = sorted(set(self.method_options) - set(self.methods))
        if stray:
            raise ValueError(
                f"options given for method(s) {stray} that are not in methods {list(self.methods)}"
            )
        for name, options in self.method_options.items():
            if not isinstance(options, Mapping):
                raise ValueError(f"method_options[{name!r}] must be a mapping, got {options!r}")
            method_config(name, options)  # raises naming the method's valid options
        checks = {
            "steps ≥ 1": self.steps >= 1,
            "batch_size ≥ 1": self.batch_size >= 1,
            "mu ≥ 1": self.mu >= 1,
            "lr > 0": self.lr > 0,
            "0 ≤ momentum < 1": 0 <= self.momentum < 1,
            "weight_decay ≥ 0": self.weight_decay >= 0,
            "0 ≤ ema_decay < 1": 0 <= self.ema_decay < 1,
            "clip_grad_norm ≥ 0": self.clip_grad_norm >= 0,
            "aug_group ≥ 1": self.aug_group >= 1,
            "seed ≥ 0": self.seed >= 0,
            "eval_every ≥ 0": self.eval_every >= 0,
            "checkpoint_every ≥ 0": self.checkpoint_every >= 0,
            "log_every ≥ 1": self.log_every >= 1,
            "num_threads ≥ 0": self.num_threads >= 0,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid training config: need {', '.join(failed)}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N; got {self.device!r}")


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Check one value against the type of its default; ints are accepted where floats are."""
    if kind is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list of names, got {value!r}")
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of names, got {value!r}")
        return tuple(value)
    if kind is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must map method names to options, got {value!r}")
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int: reject True where a number is meant and 1 where a flag is.
    if type(value) is not kind:
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
    return value
