"""Backbones. Every model returns logits, an L2-normalised embedding and the raw pooled features."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class ModelOutput(NamedTuple):
    logits: Tensor  # (N, num_classes)
    embedding: Tensor  # (N, D), unit L2 norm: what plots, active learning and association use
    features: Tensor  # (N, F), pooled features before the classifier, not normalised
