"""Weak and strong views of a batch of uint8 images, on whatever device the batch lives on.

weak   = random horizontal flip (optional: off for digits) + translation by up to 12.5 % of the
         side with reflected borders (FixMatch's "flip-and-shift").
strong = weak + RandAugment (two ops, random magnitude, as FixMatch's RA) + Cutout.

torchvision's v2 transforms draw one set of parameters per call, so on a batch they would give
every image the same operation. The weak view is therefore written as per-sample index arithmetic
(one gather for the whole batch), and the strong ops run per group of ``group_size`` images
(1 = per image, as in the papers; larger groups trade augmentation diversity for speed).

All randomness comes from the ``torch.Generator`` passed in, so a seeded generator reproduces the
views exactly; the global RNG, which v2 transforms read, is forked and restored around them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

CUTOUT_FILL = 127  # FixMatch fills the Cutout square with grey


def _reflect(index: Tensor, size: int) -> Tensor:
    """Map out-of-range pixel indices back into [0, size) by mirroring at the borders."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


class Augmenter:
    """Builds the views; holds no state besides its options and the v2 transform objects."""

    def __init__(
        self,
        *,
        hflip: bool = True,
        translate: float = 0.125,
        randaug_ops: int = 2,
        magnitude_bins: int = 31,
        cutout: float = 0.5,
        group_size: int = 1,
    ) -> None:
        if not 0 <= translate < 0.5 or not 0 <= cutout < 1 or group_size < 1 or randaug_ops < 0:
            raise ValueError(
                "need 0 ≤ translate < 0.5, 0 ≤ cutout < 1, group_size ≥ 1, randaug_ops ≥ 0; got "
                f"{translate}, {cutout}, {group_size}, {randaug_ops}"
            )
        self.hflip = hflip
        self.translate = translate
        self.group_size = group_size
        # One RandAugment per magnitude: FixMatch samples the magnitude per image rather than fixing it.
        self.randaugs = [
            v2.RandAugment(num_ops=randaug_ops, magnitude=m, num_magnitude_bins=magnitude_bins)
            for m in range(magnitude_bins)
        ]
        # Cutout: a square of side up to ``cutout`` × the image side, i.e. area up to cutout².
        self.cutout = (
            v2.RandomErasing(p=1.0, scale=(0.0025, cutout**2), ratio=(1.0, 1.0), value=CUTOUT_FILL)
            if cutout > 0
            else None
        )

    def weak(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Flip and translate each image independently. ``x``: uint8 (N, C, H, W); same shape out."""
        n, _, h, w = x.shape
        if self.hflip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        pad_h, pad_w = round(self.translate * h), round(self.translate * w)
        if pad_h == 0 and pad_w == 0:
            return x
        dy = torch.randint(-pad_h, pad_h + 1, (n, 1), generator=generator).to(x.device)
        dx = torch.randint(-pad_w, pad_w + 1, (n, 1), generator=generator).to(x.device)
        rows = _reflect(torch.arange(h, device=x.device) + dy, h)  # (N, H)
        cols = _reflect(torch.arange(w, device=x.device) + dx, w)  # (N, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        # Advanced indexing puts the indexed dims first: (N, H, W, C) → back to (N, C, H, W).
        return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def strong(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Weak view, then RandAugment and Cutout per group of ``group_size`` images."""
        x = self.weak(x, generator)
        n = len(x)
        magnitudes = torch.randint(len(self.randaugs), (n,), generator=generator).tolist()
        seed = int(torch.randint(2**62, (1,), generator=generator))
        out = torch.empty_like(x)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, n, self.group_size):
                group = x[start : start + self.group_size]
                group = self.randaugs[magnitudes[start]](group)
                if self.cutout is not None:
                    group = self.cutout(group)
                out[start : start + self.group_size] = group
        return out


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (N, C, H, W) → float ``(x / 255 − mean) / std``; ``mean``/``std`` per channel in 0–1 units."""
    return (x.float() / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (0–1 units) of uint8 images (N, C, H, W)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), 4096):  # in chunks: a float64 copy of MNIST would take 376 MB
        chunk = x[start : start + 4096].to("cpu", torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-6).sqrt()
    return mean.tolist(), std.tolist()
