"""What a workspace's images are read as: the backbone, its input and the features the fast model uses.

``plan(store)`` decides once per round from the images and the workspace settings:

- colour photos (or any image larger than ``SMALL_SIDE``): a pretrained timm backbone
  (``efficientnet_lite0`` by default, ImageNet weights shipped by a package), its own input size
  and normalisation, short side resized and centre-cropped so nothing is squashed; the fast model
  reads its pooled features from the embedding cache;
- small grey images (digits, MNIST-like scans): ImageNet features do not help there (measured in
  the default-learner issue: a probe on EfficientNet-Lite0 features lost to raw pixels), so the
  features are the normalised pixels themselves (the ``pixels`` body) and the deep round trains
  the small CNN from scratch at ``SMALL_INPUT`` px.

``backbone`` in Settings overrides the choice (any timm name, ``cnn_small``, ``pixels`` …).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from labelkit.cache import EmbeddingCache, ImageCache, ImageSpec

if TYPE_CHECKING:
    from labelkit.backbones import Weights
    from labelkit.models import Classifier
    from labelkit.store import Store

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
SMALL_SIDE = 64  # images no larger than this on their long side count as small
SMALL_INPUT = 32  # the small CNN's input side


@dataclass(frozen=True)
class Plan:
    """How this workspace's images become model input and fast-model features."""

    backbone: str  # what the fast model's features come from: a timm name or "pixels"
    deep_model: str  # what a deep round trains
    image: ImageSpec
    weights: Weights | None = None  # the backbone's pretrained weights (None for pixels / scratch)
    why: str = ""
    hflip: bool = True  # mirror images in training: off for digits, text and other small grey images

    @property
    def pretrained(self) -> bool:
        return self.weights is not None


def _looks_small_and_grey(store: Store) -> bool:
    infos = store.items(store.active_item_ids().tolist())
    if not infos:
        return False
    grey = all(i.mode in GRAY_MODES for i in infos)
    small = max(max(i.width, i.height) for i in infos) <= SMALL_SIDE
    return grey and small


def plan(store: Store) -> Plan:
    """The plan for ``store`` from its images and settings (see the module docstring).

    Raises ``labelkit.backbones.WeightsNotFound`` when a pretrained backbone is chosen and its
    weights are not on this machine, naming what to provide.
    """
    from labelkit.backbones import DEFAULT_PHOTO_BACKBONE, preprocessing, resolve_weights
    from labelkit.models import MODELS

    settings = store.settings.all()
    choice = settings["backbone"]
    small = _looks_small_and_grey(store)
    if choice == "auto":
        choice = "pixels" if small else DEFAULT_PHOTO_BACKBONE
        why = "small grey images: pixels and a small CNN" if small else "photos: a pretrained backbone"
    else:
        why = "chosen in the workspace settings"
    channels = 1 if small else 3
    flip = settings["hflip"]
    hflip = (not small) if flip == "auto" else flip == "on"
    if choice in MODELS:  # labelkit's own models train from scratch (pixels: no training at all)
        image = ImageSpec(SMALL_INPUT, channels, "squash")
        deep = "cnn_small" if choice == "pixels" else choice
        return Plan("pixels", deep, image, None, why, hflip)
    weights = resolve_weights(
        choice, weights_path=settings["weights_path"], allow_download=bool(settings["allow_download"])
    )
    image = ImageSpec(preprocessing(choice)["image_size"], 3, "crop")
    return Plan(choice, choice, image, weights, why, hflip)


def feature_model(plan: Plan, num_classes: int) -> Classifier:
    """The model whose body gives the fast model's features (and whose head it replaces)."""
    from labelkit.models import build_model

    return build_model(
        plan.backbone,
        num_classes=max(2, num_classes),
        in_channels=plan.image.channels,
        image_size=plan.image.size,
        pretrained=plan.weights,
        head_on_embedding=True,
    ).eval()


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def features(
    store: Store,
    plan: Plan,
    model: Classifier,
    item_ids: Sequence[int],
    *,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Features of ``item_ids`` for the fast model: (ids that could be read, features (N, F),
    (id, error) of the unreadable). Fills the image cache, and the embedding cache for a
    pretrained backbone, as needed (resumable)."""
    import torch

    images = ImageCache(store, plan.image)
    if plan.weights is None:  # pixels: the body is cheap, no embedding cache needed
        ids_arr, pixels, failed = images.load([int(i) for i in item_ids])
        with torch.inference_mode():
            feats = model(model.normalize(torch.from_numpy(pixels))).features.numpy()
        return ids_arr, feats, failed
    cache = EmbeddingCache(
        store, backbone=plan.backbone, weights=plan.weights, images=images, dim=model.feature_dim
    )
    # Only items not embedded yet need their pixels: a refresh of an embedded workspace reads none.
    todo = cache.rows.missing(item_ids)
    failed = images.fill(
        todo, progress=(lambda d, t: progress("caching images", d, t)) if progress else None, stop=stop
    )
    failed += cache.fill(
        todo, model, progress=(lambda d, t: progress("embedding", d, t)) if progress else None, stop=stop
    )
    ids = [int(i) for i in item_ids if int(i) in cache.rows]
    feats, corrupt = cache.rows.read(ids)
    if corrupt:  # re-embed the damaged rows from the (verified) image cache
        where = {i: k for k, i in enumerate(ids)}
        ok, pixels, _ = images.load(corrupt)
        with torch.inference_mode():
            fresh = model(model.normalize(torch.from_numpy(pixels))).features.numpy()
        for item_id, row in zip(ok.tolist(), fresh, strict=True):
            cache.rows.rewrite(item_id, row)
            feats[where[item_id]] = row
    return np.asarray(ids, np.int64), feats, failed
