"""Learning by Association (Haeusser, Mordvintsev & Cremers, CVPR 2017).

Imagine a walker going from each labelled embedding to an unlabelled one and back, with
transition probabilities from a softmax over dot products. The walker loss asks round trips to end
in the class they started from; the visit loss asks every unlabelled item to be visited, so the
association cannot rely on a few easy items.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from labelkit.ssl.base import Batch, Method, MethodOutput, Outputs, register
from labelkit.ssl.losses import association_probabilities, pseudo_label_accuracy, visit_loss, walker_loss

_EMBEDDINGS = ("features", "normalized")


@dataclass(frozen=True)
class AssociationConfig:
    walker_weight: float = 1.0
    # The authors' MNIST example uses 1.0 with 100 labelled images per batch, 10 of each class;
    # their domain-adaptation settings use 0.1-0.6. labelkit's labelled batches are small and drawn
    # with replacement from a few dozen labels, and there 1.0 let the visit term (pushing every
    # unlabelled item to be reached) override the class structure: on digits with 2 / 4 labels per
    # class (cnn_small, 500 steps, B = 16, μ = 4, seed 0) association alone reached 0.742 / 0.822
    # with 1.0, 0.796 / - with 0.3 and 0.828 / 0.920 with 0.1, against 0.766 / 0.830 supervised
    # (raw features). With the unit embeddings below, 0.1 and 0.3 are level (0.941 / 0.945, seeds 0-2).
    visit_weight: float = 0.1
    # "normalized" (the default): the unit embeddings, their dot product (a cosine) multiplied by
    # ``scale``, an inverse temperature. "features": the raw pooled features, as in the paper, where
    # the network sets the sharpness of the walk through the features' norm. On the digits runs
    # above (mean of seeds 0-2, supervised 0.799) raw features reached 0.789, unit embeddings × 3 /
    # 5 / 10 / 20 reached 0.889 / 0.941 / 0.784 (seed 0) / 0.839; at 4 labels per class × 5 gave
    # 0.962 against 0.875 supervised. A bounded cosine keeps the walk from collapsing onto the
    # nearest neighbour while the features grow, which the raw dot product allowed.
    embedding: str = "normalized"
    scale: float = 5.0

    def __post_init__(self) -> None:
        if self.walker_weight < 0 or self.visit_weight < 0:
            raise ValueError(
                f"association: weights must be >= 0, got {self.walker_weight}, {self.visit_weight}"
            )
        if self.embedding not in _EMBEDDINGS:
            raise ValueError(f"association: embedding {self.embedding!r}; valid: {list(_EMBEDDINGS)}")
        if self.scale <= 0:
            raise ValueError(f"association: scale must be > 0, got {self.scale}")


@register
class Association(Method):
    name = "association"
    Config = AssociationConfig
    views = frozenset({"ulb_w"})

    def step(self, batch: Batch, out: Outputs, step: int, student: nn.Module) -> MethodOutput:
        if self.config.embedding == "features":
            assert out.feat_ulb_w is not None, "association needs the ulb_w view"
            a, b = out.feat_lb, out.feat_ulb_w
        else:
            assert out.emb_ulb_w is not None, "association needs the ulb_w view"
            a, b = out.emb_lb * self.config.scale, out.emb_ulb_w
        p_ab, p_ba, p_aba = association_probabilities(a.float(), b.float())
        # Each unlabelled item's class as the walk b → a sees it: a statistic only.
        class_of_b = (p_ba.detach() @ F.one_hot(batch.y_lb, self.ctx.num_classes).float()).argmax(dim=1)
        return MethodOutput(
            terms={"walker_loss": walker_loss(p_aba, batch.y_lb), "visit_loss": visit_loss(p_ab)},
            weights={"walker_loss": self.config.walker_weight, "visit_loss": self.config.visit_weight},
            stats={"pseudo_acc": pseudo_label_accuracy(class_of_b, batch.y_ulb)},
        )
