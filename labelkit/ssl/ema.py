"""An exponential-moving-average copy of a network: the teacher of Mean Teacher and SimMatch."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMATeacher(nn.Module):
    """A frozen copy of ``model`` that follows it by Tarvainen & Valpola 2017, Eq. 1: θ' ← α θ' + (1 − α) θ.

    The copy never trains: its parameters have ``requires_grad=False`` so the optimiser leaves them
    alone. It always runs in train mode, as in Mean Teacher's and USB's code: batch-norm normalises
    with the statistics of the teacher's own batch. Running statistics copied from the student do
    not fit weights averaged over many steps: in eval mode the teacher stayed at chance on digits
    while the student learned, and Mean Teacher then pulled the student down to chance as well.
    """

    num_updates: torch.Tensor

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.model.train()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMATeacher:
        super().train(mode)
        self.model.train()
        return self

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # Mean Teacher's reference code uses α_t = min(1 − 1/(t + 1), α): early on the teacher tracks
        # the student closely instead of averaging in its random initialisation for ~1/(1 − α) steps,
        # which matters for the short runs labelkit does between labelling rounds.
        n = int(self.num_updates)
        decay = min(1.0 - 1.0 / (n + 1), self.decay)
        for t, s in zip(self.model.parameters(), model.parameters(), strict=True):
            t.lerp_(s.detach(), 1.0 - decay)
        # Buffers (batch-norm running statistics) are running averages already: copy them, so that
        # the teacher checkpoints like a model; its own forward passes normalise by batch.
        for tb, sb in zip(self.model.buffers(), model.buffers(), strict=True):
            tb.copy_(sb)
        self.num_updates += 1
