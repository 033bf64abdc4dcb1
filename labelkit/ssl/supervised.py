"""The baseline: cross-entropy on labelled images only, which the training loop always adds.

It contributes no loss term of its own; every comparison table runs it on the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from labelkit.ssl.base import Batch, Method, MethodOutput, Outputs, register


@dataclass(frozen=True)
class SupervisedConfig:
    pass


@register
class Supervised(Method):
    name = "supervised"
    Config = SupervisedConfig
    views = frozenset()

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        return MethodOutput()
