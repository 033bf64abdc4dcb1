"""Weak and strong views of a batch of uint8 images, on whatever device the batch lives on.

weak   = random horizontal flip (optional: off for digits) + translation by up to 12.5 % of the
         side with reflected borders (FixMatch's "flip-and-shift").
strong = weak + RandAugment as FixMatch uses it (Sohn et al. 2020, App. D, Table 12): two ops
         drawn from ``OPS`` per image, each applied with probability ``op_prob`` and its own
         magnitude drawn uniformly from the op's range, then Cutout.

torchvision's ``v2.RandAugment`` draws one op and one magnitude per call, and its ranges are not
FixMatch's (brightness 0.1–1.9, translate up to 45 % of the side). So the op table is written here:
every op takes a batch and one magnitude per image, and is built from torchvision's functional ops
(``autocontrast``, ``equalize``, ``rgb_to_grayscale``) or from the same blend arithmetic they use,
so that a whole batch is augmented in ~28 tensor calls whatever its size, on CPU or CUDA.
``group_size`` > 1 makes consecutive images share one draw (kept for comparison; it saves nothing
here because the ops are vectorised over the batch either way).

All randomness comes from the ``torch.Generator`` passed in, so a seeded generator reproduces the
views exactly; the global RNG is never read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

CUTOUT_FILL = 127  # FixMatch fills the Cutout square with grey

OpFn = Callable[[Tensor, Tensor], Tensor]  # (uint8 (n, C, H, W), magnitudes (n,)) → uint8 (n, C, H, W)


def _reflect(index: Tensor, size: int) -> Tensor:
    """Map out-of-range pixel indices back into [0, size) by mirroring at the borders."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def _per_image(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor·x + (1 − factor)·other per image, as PIL's ImageEnhance and torchvision's adjust_* do."""
    f = _per_image(factor)
    return (f * x.float() + (1 - f) * other).round_().clamp_(0, 255).to(torch.uint8)


def _grey(x: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(x).float() if x.shape[1] == 3 else x.float()


def identity(x: Tensor, v: Tensor) -> Tensor:
    return x


def autocontrast(x: Tensor, v: Tensor) -> Tensor:
    return TF.autocontrast(x)


def equalize(x: Tensor, v: Tensor) -> Tensor:
    return TF.equalize(x)


def brightness(x: Tensor, v: Tensor) -> Tensor:
    return _blend(x, torch.zeros((), device=x.device), v)


def color(x: Tensor, v: Tensor) -> Tensor:
    """Saturation: blend with the grey image (a grey image has no colour to change)."""
    return x if x.shape[1] != 3 else _blend(x, _grey(x), v)


def contrast(x: Tensor, v: Tensor) -> Tensor:
    return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), v)


def sharpness(x: Tensor, v: Tensor) -> Tensor:
    """Blend with PIL's SMOOTH-filtered image (3 × 3, centre weight 5, sum 13); borders stay as they were."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = x.float().clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(x.float(), kernel, groups=c)
    return _blend(x, smooth.round_(), v)


def posterize(x: Tensor, v: Tensor) -> Tensor:
    """Keep the top ``bits`` bits of every pixel; ``v`` is the number of bits (4–8)."""
    bits = v.round().to(torch.int64)
    mask = (256 - (1 << (8 - bits))).to(torch.uint8)
    return x & _per_image(mask)


def solarize(x: Tensor, v: Tensor) -> Tensor:
    """Invert the pixels at or above ``v``·256 (``v`` = 1 inverts nothing)."""
    return torch.where(x.float() >= _per_image(v * 256), 255 - x, x)


def _affine(x: Tensor, inverse: Tensor) -> Tensor:
    """Resample each image through its own 2 × 3 output→input map in pixel units about the centre."""
    n, _, h, w = x.shape
    # grid_sample's coordinates are in [-1, 1] per axis: conjugate the pixel-unit map by the scale.
    scale = torch.tensor([w / 2, h / 2], device=x.device)
    theta = inverse.clone()
    theta[:, :, :2] = inverse[:, :, :2] * scale[None, None, :] / scale[None, :, None]
    theta[:, :, 2] = inverse[:, :, 2] / scale[None, :]
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    # Nearest neighbour keeps pixel values exact; "zeros" padding leaves uncovered pixels black,
    # as PIL's transform and torchvision's affine do by default.
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _maps(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Per-image 2 × 3 maps [[a, b, tx], [c, d, ty]] from (n,) entries."""
    return torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)


def rotate(x: Tensor, v: Tensor) -> Tensor:
    """Rotate by ``v`` degrees about the centre."""
    t = v * (math.pi / 180)
    zero = torch.zeros_like(v)
    return _affine(x, _maps(t.cos(), -t.sin(), t.sin(), t.cos(), zero, zero))


def shear_x(x: Tensor, v: Tensor) -> Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(x, _maps(one, v, zero, one, zero, zero))


def shear_y(x: Tensor, v: Tensor) -> Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(x, _maps(one, zero, v, one, zero, zero))


def translate_x(x: Tensor, v: Tensor) -> Tensor:
    """Shift by ``v`` × the width."""
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(x, _maps(one, zero, zero, one, -v * x.shape[-1], zero))


def translate_y(x: Tensor, v: Tensor) -> Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(x, _maps(one, zero, zero, one, zero, -v * x.shape[-2]))


@dataclass(frozen=True)
class Op:
    name: str
    fn: OpFn
    low: float  # magnitudes are drawn uniformly from [low, high] per image
    high: float


# FixMatch's RandAugment table (Sohn et al. 2020, Table 12). Enhancement factors below 1 only
# weaken (darker, flatter, greyer, blurrier): that is the paper's range, not torchvision's 0.1–1.9.
OPS: tuple[Op, ...] = (
    Op("identity", identity, 0.0, 0.0),
    Op("autocontrast", autocontrast, 0.0, 0.0),
    Op("equalize", equalize, 0.0, 0.0),
    Op("brightness", brightness, 0.05, 0.95),
    Op("color", color, 0.05, 0.95),
    Op("contrast", contrast, 0.05, 0.95),
    Op("sharpness", sharpness, 0.05, 0.95),
    Op("posterize", posterize, 4.0, 8.0),
    Op("solarize", solarize, 0.0, 1.0),
    Op("rotate", rotate, -30.0, 30.0),
    Op("shear_x", shear_x, -0.3, 0.3),
    Op("shear_y", shear_y, -0.3, 0.3),
    Op("translate_x", translate_x, -0.3, 0.3),
    Op("translate_y", translate_y, -0.3, 0.3),
)


def cutout(x: Tensor, centre: Tensor, side: Tensor) -> Tensor:
    """Fill a square of ``side`` (fraction of the shorter image side) centred at ``centre`` (fractions
    of height and width, shape (n, 2)) with grey, clipped at the borders as FixMatch's Cutout is."""
    h, w = x.shape[-2:]
    half = (side * min(h, w) / 2).to(x.device)[:, None]
    cy, cx = (centre[:, :1] * h).to(x.device), (centre[:, 1:] * w).to(x.device)
    rows = ((torch.arange(h, device=x.device) + 0.5 - cy).abs() < half)[:, :, None]  # (n, H, 1)
    cols = ((torch.arange(w, device=x.device) + 0.5 - cx).abs() < half)[:, None, :]  # (n, 1, W)
    return torch.where((rows & cols)[:, None], torch.tensor(CUTOUT_FILL, dtype=x.dtype, device=x.device), x)


def apply_ops(x: Tensor, which: Tensor, magnitudes: Tensor, ops: tuple[Op, ...] = OPS) -> Tensor:
    """Apply ``ops[which[i]]`` with magnitude ``magnitudes[i]`` to image i; one call per op used."""
    out = x.clone()
    for k, op in enumerate(ops):
        picked = (which == k).nonzero().flatten()
        if len(picked) and op.fn is not identity:
            idx = picked.to(x.device)
            out[idx] = op.fn(x[idx], magnitudes[picked].to(x.device))
    return out


class Augmenter:
    """Builds the views; holds no state besides its options."""

    def __init__(
        self,
        *,
        hflip: bool = True,
        translate: float = 0.125,
        randaug_ops: int = 2,
        op_prob: float = 0.5,
        cutout: float = 0.5,
        group_size: int = 1,
        ops: tuple[Op, ...] = OPS,
    ) -> None:
        if (
            not 0 <= translate < 0.5
            or not 0 <= cutout < 1
            or group_size < 1
            or randaug_ops < 0
            or not 0 <= op_prob <= 1
            or not ops
        ):
            raise ValueError(
                "need 0 ≤ translate < 0.5, 0 ≤ cutout < 1, group_size ≥ 1, randaug_ops ≥ 0, "
                f"0 ≤ op_prob ≤ 1 and some ops; got {translate}, {cutout}, {group_size}, "
                f"{randaug_ops}, {op_prob}, {len(ops)} ops"
            )
        self.hflip = hflip
        self.translate = translate
        self.randaug_ops = randaug_ops
        # Chance each drawn op is applied. 0.5 as in kekmodel/FixMatch-pytorch's RandAugmentMC; on
        # digits (2 labels per class, 500 steps, 5 seeds) it gave 0.922 mean accuracy vs 0.901 at 1.0.
        self.op_prob = op_prob
        self.cutout = cutout  # Cutout side drawn uniformly from [0, cutout] × the image side
        self.group_size = group_size
        self.ops = ops

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

    def _draw(self, n: int, generator: torch.Generator, *shape: int) -> Tensor:
        """Uniform [0, 1) draws, one per group of ``group_size`` images, repeated to ``n`` rows."""
        groups = -(-n // self.group_size)
        u = torch.rand(groups, *shape, generator=generator)
        return u.repeat_interleave(self.group_size, dim=0)[:n]

    def strong(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Weak view, then ``randaug_ops`` ops from the table and Cutout, drawn per image (group)."""
        x = self.weak(x, generator)
        n = len(x)
        if self.randaug_ops:
            u = self._draw(n, generator, self.randaug_ops, 3)  # op, magnitude, applied?
            which = (u[..., 0] * len(self.ops)).long().clamp_max(len(self.ops) - 1)
            which = torch.where(u[..., 2] < self.op_prob, which, -1)  # -1: skipped
            low = torch.tensor([op.low for op in self.ops])
            high = torch.tensor([op.high for op in self.ops])
            k = which.clamp_min(0)
            magnitudes = low[k] + (high[k] - low[k]) * u[..., 1]
            for slot in range(self.randaug_ops):
                x = apply_ops(x, which[:, slot], magnitudes[:, slot], self.ops)
        if self.cutout > 0:
            u = self._draw(n, generator, 3)  # centre y, centre x, side
            x = cutout(x, u[:, :2], u[:, 2] * self.cutout)
        return x


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
