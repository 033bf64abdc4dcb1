"""What a semi-supervised method plugs into the one training loop (``labelkit.train``).

The loop owns everything that touches the optimiser: it builds the batch, runs the student once on
the concatenated views, adds the supervised cross-entropy on the labelled batch, asks each method
for its extra loss terms, and calls backward and step. A method only turns (batch, student outputs)
into named, unweighted loss terms, the weight of each at this step, and statistics; it may keep
state (an EMA teacher, a memory bank) and update it in ``after_step``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

# Views of the unlabelled batch a method may ask for. The student is run on "ulb_w" and "ulb_s";
# "ulb_w2" is a second independent weak view that only teachers see (Mean Teacher).
VIEWS = frozenset({"ulb_w", "ulb_s", "ulb_w2"})


@dataclass
class Batch:
    """One step's inputs: augmented, normalised float tensors on the training device."""

    x_lb: Tensor  # (B, C, H, W) weak view of labelled images
    y_lb: Tensor  # (B,) class indices
    idx_lb: Tensor  # (B,) positions in the labelled set; memory banks are indexed by them
    x_ulb_w: Tensor | None = None  # (μB, C, H, W) weak view of unlabelled images
    x_ulb_s: Tensor | None = None  # (μB, C, H, W) strong view of the same images
    x_ulb_w2: Tensor | None = None  # (μB, C, H, W) a second weak view, for teachers only
    y_ulb: Tensor | None = None  # (μB,) true class where known, -1 elsewhere; statistics only


@dataclass
class Outputs:
    """The student's outputs on the batch, split by view. ``emb`` is L2-normalised, ``feat`` is not."""

    logits_lb: Tensor
    emb_lb: Tensor
    feat_lb: Tensor
    logits_ulb_w: Tensor | None = None
    emb_ulb_w: Tensor | None = None
    feat_ulb_w: Tensor | None = None
    logits_ulb_s: Tensor | None = None
    emb_ulb_s: Tensor | None = None
    feat_ulb_s: Tensor | None = None


@dataclass
class MethodOutput:
    terms: dict[str, Tensor] = field(default_factory=dict)  # unweighted loss terms, e.g. "unsup_loss"
    weights: dict[str, float] = field(default_factory=dict)  # weight of each term at this step
    # mask_rate, pseudo_acc, ...: detached 0-d tensors, so the loop reads them (a GPU sync) only
    # when it logs, not every step. NaN where a statistic is undefined (no ground truth known).
    stats: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodContext:
    num_classes: int
    num_labeled: int  # size of the labelled set (memory banks hold one slot per labelled item)
    labeled_targets: Tensor  # (num_labeled,) class of each labelled item, indexed like Batch.idx_lb
    total_steps: int  # for ramps and schedules
    feature_dim: int  # width of the backbone's pooled features (``Outputs.feat_*``)
    embed_dim: int  # width of ``Outputs.emb_*``


class Method(nn.Module):
    """Base of every method. Subclasses set ``name``, ``Config`` and ``views`` and implement ``step``."""

    name: ClassVar[str]
    Config: ClassVar[type]
    views: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any, ctx: MethodContext, student: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.ctx = ctx

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, student: nn.Module) -> None:
        """Called after the optimiser step (EMA teachers, memory banks)."""


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"SSL method {cls.name!r} is registered twice ({METHODS[cls.name]} and {cls})")
    if not cls.views <= VIEWS:
        raise ValueError(f"{cls.name}: unknown views {sorted(cls.views - VIEWS)}; valid: {sorted(VIEWS)}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown SSL method {name!r}; valid: {', '.join(sorted(METHODS))}") from None


def method_config(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Build a method's typed config from plain options, rejecting unknown keys by name."""
    cls = method_class(name)
    options = dict(options or {})
    valid = {f.name for f in fields(cls.Config)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; valid: {sorted(valid)}")
    return cls.Config(**options)


def build_methods(
    names: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    ctx: MethodContext,
    student: nn.Module,
) -> list[Method]:
    if not names:
        raise ValueError(f"choose at least one SSL method; valid: {', '.join(sorted(METHODS))}")
    if len(set(names)) != len(names):
        raise ValueError(f"SSL method listed twice: {list(names)}")
    return [method_class(n)(method_config(n, options.get(n)), ctx, student) for n in names]
