"""Pseudo-Label (Lee 2013): train on the argmax of the model's own predictions for unlabelled images."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from labelkit.ssl.base import Batch, Method, MethodOutput, Outputs, register
from labelkit.ssl.losses import pseudo_label_accuracy, pseudo_label_loss, pseudo_label_weight


@dataclass(frozen=True)
class PseudoLabelConfig:
    # Lee 2013, Eq. 16 ramps α(t) from 0 at T1 to α_f = 3 at T2 (T1 = 100, T2 = 600 epochs). Our runs
    # are measured in steps, so T1 and T2 are fractions of the run that keep Lee's ratio T2 = 6 T1.
    t1: float = 0.1
    t2: float = 0.6
    alpha_f: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.t1 < self.t2 <= 1.0:
            raise ValueError(
                f"pseudolabel: need 0 <= t1 < t2 <= 1 (fractions of the run), got t1={self.t1}, t2={self.t2}"
            )
        if self.alpha_f < 0:
            raise ValueError(f"pseudolabel: alpha_f must be >= 0, got {self.alpha_f}")


@register
class PseudoLabel(Method):
    name = "pseudolabel"
    Config = PseudoLabelConfig
    views = frozenset({"ulb_w"})

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        assert out.logits_ulb_w is not None, "pseudolabel needs the ulb_w view"
        loss, pseudo = pseudo_label_loss(out.logits_ulb_w)
        total = self.ctx.total_steps
        weight = pseudo_label_weight(
            step, t1=self.config.t1 * total, t2=self.config.t2 * total, alpha_f=self.config.alpha_f
        )
        return MethodOutput(
            terms={"unsup_loss": loss},
            weights={"unsup_loss": weight},
            stats={"pseudo_acc": pseudo_label_accuracy(pseudo, batch.y_ulb)},
        )
