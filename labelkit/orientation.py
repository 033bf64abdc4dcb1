"""Is a horizontal flip a safe augmentation for these images? Decided from the pixels.

A mirrored photo of a bee is still a bee, but a mirrored 2, 7 or "R" is not a 2, 7 or "R" (and a
mirrored 5 is close to a 2). Weak and strong views both flip half the images when ``hflip`` is
on, so on orientation-sensitive data the model learns from mirrored classes.

The rule, deliberately simple and lopsided: **flip only colour images.** Grey images at any size
(digits, characters, scanned text, forms, X-rays, where left and right are different anatomy)
get no flip. The costs are uneven: a flip wrongly left off loses a mild augmentation, one wrongly
left on teaches the model mirrored classes. A colour image here is one whose pixels differ between
channels by more than ``COLOUR_SPREAD`` on average (grey images saved as RGB or JPEG differ by a
level or two); the images are colour when most of the sample is. Colour text (screenshots,
coloured signs) is not detected: Settings override the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOUR_SPREAD = 6.0  # mean (max − min over channels) in 0–255 levels above which an image is colour
SAMPLE = 512  # images looked at, evenly spaced through the array


@dataclass(frozen=True)
class FlipDecision:
    hflip: bool
    colour_fraction: float  # of the images looked at
    images: int  # how many were looked at
    reason: str


def colour_spread(images: np.ndarray) -> np.ndarray:
    """Per image, the mean over pixels of (max − min) across channels, in 0–255 levels; 0 for one channel.

    ``images``: uint8 (N, C, H, W). Higher means more colourful.
    """
    if images.ndim != 4:
        raise ValueError(f"need images as (N, C, H, W), got shape {images.shape}")
    if images.shape[1] == 1:
        return np.zeros(len(images))
    spread = images.max(axis=1).astype(np.int16) - images.min(axis=1).astype(np.int16)
    return spread.reshape(len(images), -1).mean(axis=1)


def decide_hflip(
    images: np.ndarray, *, sample: int = SAMPLE, threshold: float = COLOUR_SPREAD
) -> FlipDecision:
    """Whether horizontal flips suit ``images`` (uint8 (N, C, H, W), e.g. a workspace's training
    arrays): True when most of an evenly spaced sample of ``sample`` images is colour."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"need uint8 images (N, 1 or 3, H, W), got {images.dtype} {images.shape}")
    if len(images) == 0:
        return FlipDecision(False, 0.0, 0, "no images to look at: flip off until there are")
    picked = images[np.unique(np.linspace(0, len(images) - 1, min(sample, len(images))).round().astype(int))]
    fraction = float((colour_spread(picked) > threshold).mean())
    if fraction > 0.5:
        return FlipDecision(
            True, fraction, len(picked), f"{fraction:.0%} of the images are colour: photos, flip on"
        )
    return FlipDecision(
        False,
        fraction,
        len(picked),
        f"{1 - fraction:.0%} of the images are grey (digits, text, scans?): a mirror image may be another class, flip off",
    )
