"""FixMatch (Sohn et al. 2020): confident predictions on a weak view label the strong view."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from labelkit.ssl.base import Batch, Method, MethodOutput, Outputs, register
from labelkit.ssl.losses import fixmatch_loss, pseudo_label_accuracy


@dataclass(frozen=True)
class FixMatchConfig:
    threshold: float = 0.95  # τ
    weight: float = 1.0  # λ_u

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"fixmatch: threshold must be in (0, 1], got {self.threshold}")
        if self.weight < 0:
            raise ValueError(f"fixmatch: weight must be >= 0, got {self.weight}")


@register
class FixMatch(Method):
    name = "fixmatch"
    Config = FixMatchConfig
    views = frozenset({"ulb_w", "ulb_s"})

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        assert out.logits_ulb_w is not None and out.logits_ulb_s is not None, "fixmatch needs ulb_w and ulb_s"
        loss, mask, pseudo = fixmatch_loss(
            out.logits_ulb_w, out.logits_ulb_s, threshold=self.config.threshold
        )
        return MethodOutput(
            terms={"unsup_loss": loss},
            weights={"unsup_loss": self.config.weight},
            stats={"mask_rate": mask.mean(), "pseudo_acc": pseudo_label_accuracy(pseudo, batch.y_ulb, mask)},
        )
