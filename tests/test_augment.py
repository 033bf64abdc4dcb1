"""Augmentation: per-sample randomness, weak = translation only, exact reproducibility."""

from __future__ import annotations

import pytest
import torch

from labelkit.augment import Augmenter, channel_stats, normalize


def _images(n: int = 16, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)


def test_views_keep_shape_and_dtype() -> None:
    x = _images()
    aug = Augmenter(group_size=1)
    g = torch.Generator().manual_seed(0)
    for view in (aug.weak(x, g), aug.strong(x, g)):
        assert view.shape == x.shape and view.dtype == torch.uint8


def test_weak_view_is_a_pure_shift_within_the_translate_range() -> None:
    x = _images(n=32)
    aug = Augmenter(hflip=False, translate=0.125)  # 16 px → shifts of at most 2 px
    out = aug.weak(x, torch.Generator().manual_seed(3))
    shifts = set()
    for original, view in zip(x, out, strict=True):
        # Away from the reflected borders, the view is the original moved by one (dy, dx).
        match = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(view[:, 2:-2, 2:-2], original[:, 2 + dy : 14 + dy, 2 + dx : 14 + dx])
        ]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 5  # different images got different shifts


def test_weak_flip_mirrors_some_images_and_not_others() -> None:
    x = _images(n=32)
    out = Augmenter(hflip=True, translate=0.0).weak(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(v, o.flip(-1)) for v, o in zip(out, x, strict=True)]
    kept = [torch.equal(v, o) for v, o in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 32


def test_strong_view_differs_per_image_when_images_are_identical() -> None:
    x = _images(n=1).expand(8, -1, -1, -1).contiguous()
    out = Augmenter(group_size=1).strong(x, torch.Generator().manual_seed(0))
    distinct = {bytes(v.flatten().tolist()) for v in out}
    assert len(distinct) == 8


def test_same_seed_same_views_and_global_rng_untouched() -> None:
    x = _images()
    aug = Augmenter(group_size=2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = aug.strong(x, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), before)
    b = aug.strong(x, torch.Generator().manual_seed(7))
    c = aug.strong(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_normalize_and_channel_stats() -> None:
    x = torch.tensor([[0, 255], [51, 51]], dtype=torch.uint8).view(
        1, 2, 1, 2
    )  # channel 0: 0, 1; channel 1: .2, .2
    mean, std = channel_stats(x)
    assert mean == pytest.approx([0.5, 0.2])
    # population std of {0, 1} is 0.5; a constant channel is clamped to a tiny positive std
    assert abs(std[0] - 0.5) < 1e-9 and 0 < std[1] < 1e-2
    y = normalize(x, torch.tensor([0.5, 0.2]), torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(y.flatten(), torch.tensor([-1.0, 1.0, 0.0, 0.0]))
