"""SimMatch (Zheng et al. CVPR 2022): class and instance similarity, each propagated into the other.

A projection head maps the backbone's features to unit embeddings. A memory bank holds one
embedding per labelled item, written by an EMA teacher, with that item's label. For each unlabelled
image the weak view's class prediction p^w (distribution-aligned) and its similarity q^w to the
bank are combined: q^w scaled by p^w read at each bank entry's class gives the instance target q̂,
q^w summed per class smooths p^w into p̂. The strong view is trained towards p̂ (FixMatch-style,
masked by confidence) and its own similarity q^s towards q̂.

As in USB's implementation, p^w and z^w come from the student's own weak-view outputs (detached);
the teacher only writes the bank, so the bank changes slowly and consistently between visits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelkit.ssl.base import Batch, Method, MethodContext, MethodOutput, Outputs, register
from labelkit.ssl.ema import EMATeacher
from labelkit.ssl.losses import (
    distribution_alignment,
    masked_soft_cross_entropy,
    pseudo_label_accuracy,
    similarity_distribution,
    simmatch_aggregate,
    simmatch_in_loss,
    simmatch_unfold,
)


@dataclass(frozen=True)
class SimMatchConfig:
    threshold: float = 0.95  # τ on max p̂
    temperature: float = 0.1  # t of the similarity softmax (Eq. 2)
    proj_dim: int = 128  # width of the projection head's unit embedding
    alpha: float = 0.9  # weight of p^w against the aggregated q^w in p̂
    ema_decay: float = 0.999  # teacher that writes the bank
    da_len: int = 256  # distribution alignment: p_model is the mean over this many past batches
    weight: float = 1.0  # λ_u
    in_weight: float = 1.0  # λ_in

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"simmatch: threshold must be in (0, 1], got {self.threshold}")
        if self.temperature <= 0:
            raise ValueError(f"simmatch: temperature must be > 0, got {self.temperature}")
        if self.proj_dim < 1 or self.da_len < 1:
            raise ValueError(
                f"simmatch: proj_dim and da_len must be >= 1, got {self.proj_dim}, {self.da_len}"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"simmatch: alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"simmatch: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.weight < 0 or self.in_weight < 0:
            raise ValueError(f"simmatch: weights must be >= 0, got {self.weight}, {self.in_weight}")


@register
class SimMatch(Method):
    name = "simmatch"
    Config = SimMatchConfig
    views = frozenset({"ulb_w", "ulb_s"})

    bank: Tensor
    bank_labels: Tensor
    bank_filled: Tensor
    p_model_history: Tensor
    p_model_next: Tensor

    def __init__(self, config: SimMatchConfig, ctx: MethodContext, student: nn.Module) -> None:
        super().__init__(config, ctx, student)
        if len(ctx.labeled_targets) != ctx.num_labeled:
            raise ValueError(
                f"simmatch: {len(ctx.labeled_targets)} labeled_targets for num_labeled={ctx.num_labeled}"
            )
        device = next(student.parameters()).device
        width = ctx.feature_dim
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, config.proj_dim)).to(
            device
        )
        self.teacher = EMATeacher(student, config.ema_decay)
        self.teacher_head = EMATeacher(self.head, config.ema_decay)
        self.register_buffer("bank", torch.zeros(ctx.num_labeled, config.proj_dim, device=device))
        self.register_buffer("bank_labels", ctx.labeled_targets.detach().clone().long().to(device))
        # Entries not yet written hold no embedding; similarities are taken over written ones only
        # (the reference code instead starts from random vectors and ignores L_in for an epoch).
        self.register_buffer("bank_filled", torch.zeros(ctx.num_labeled, dtype=torch.bool, device=device))
        uniform = torch.full((config.da_len, ctx.num_classes), 1.0 / ctx.num_classes, device=device)
        self.register_buffer("p_model_history", uniform)
        self.register_buffer("p_model_next", torch.zeros((), dtype=torch.long, device=device))
        self._bank_full = False  # host-side cache so a full bank costs no device sync per step

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        assert out.logits_ulb_w is not None and out.logits_ulb_s is not None, "simmatch needs ulb_w and ulb_s"
        assert out.feat_ulb_w is not None and out.feat_ulb_s is not None
        with torch.no_grad():
            p_w = self._align(F.softmax(out.logits_ulb_w.detach().float(), dim=1))
            z_w = F.normalize(self.head(out.feat_ulb_w.detach()).float(), dim=1)
            bank, labels = self._written_bank()
            if len(labels):
                q_w = similarity_distribution(z_w, bank, self.config.temperature)
                q_hat = simmatch_unfold(q_w, p_w, labels)
                p_hat = simmatch_aggregate(q_w, p_w, labels, alpha=self.config.alpha)
            else:
                p_hat = p_w
            z_lb_teacher = F.normalize(self.teacher_head(self.teacher(batch.x_lb).features).float(), dim=1)

        unsup_loss, mask = masked_soft_cross_entropy(
            p_hat, out.logits_ulb_s.float(), threshold=self.config.threshold
        )
        if len(labels):
            z_s = F.normalize(self.head(out.feat_ulb_s).float(), dim=1)
            in_loss = simmatch_in_loss(q_hat, z_s, bank, self.config.temperature)
        else:
            in_loss = torch.zeros((), device=p_w.device)

        self.bank[batch.idx_lb] = z_lb_teacher
        self.bank_filled[batch.idx_lb] = True
        return MethodOutput(
            terms={"unsup_loss": unsup_loss, "in_loss": in_loss},
            weights={"unsup_loss": self.config.weight, "in_loss": self.config.in_weight},
            stats={
                "mask_rate": mask.mean(),
                "pseudo_acc": pseudo_label_accuracy(p_hat.argmax(dim=1), batch.y_ulb, mask),
            },
        )

    @torch.no_grad()
    def after_step(self, student: nn.Module) -> None:
        self.teacher.update(student)
        self.teacher_head.update(self.head)

    def _written_bank(self) -> tuple[Tensor, Tensor]:
        """A copy of the bank's written rows and their labels (a copy: ``step`` overwrites the bank
        after the loss has been built on it, and autograd needs the values it saw)."""
        if not self._bank_full:
            self._bank_full = bool(self.bank_filled.all())
        if self._bank_full:
            return self.bank.clone(), self.bank_labels
        return self.bank[self.bank_filled], self.bank_labels[self.bank_filled]

    def _align(self, p_w: Tensor) -> Tensor:
        """Distribution alignment towards uniform, with p_model averaged over the last ``da_len`` batches."""
        self.p_model_history[self.p_model_next] = p_w.mean(dim=0)
        self.p_model_next.copy_((self.p_model_next + 1) % self.config.da_len)
        p_model = self.p_model_history.mean(dim=0)
        return distribution_alignment(p_w, p_model, torch.full_like(p_model, 1.0 / len(p_model)))
