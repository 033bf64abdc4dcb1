"""Augmentation: per-sample randomness, weak = translation only, FixMatch's op table, exact reproducibility."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from labelkit.augment import (
    CUTOUT_FILL,
    OPS,
    Augmenter,
    brightness,
    channel_stats,
    color,
    contrast,
    cutout,
    normalize,
    posterize,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    translate_x,
    translate_y,
)


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


# ---- the RandAugment op table (FixMatch, Sohn et al. 2020, Table 12)


def _photo(n: int = 6, size: int = 16) -> torch.Tensor:
    """Colour images with structure (a gradient plus noise), so every op has something to change."""
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(20, 230, size).view(1, 1, 1, size)
    noise = torch.randint(-20, 21, (n, 3, size, size), generator=g)
    return (ramp + noise).clamp(0, 255).to(torch.uint8)


# The magnitude at which each op is the identity (None: the op has no magnitude that does nothing).
IDENTITY_MAGNITUDE = {
    "identity": 0.0,
    "autocontrast": None,
    "equalize": None,
    "brightness": 1.0,
    "color": 1.0,
    "contrast": 1.0,
    "sharpness": 1.0,
    "posterize": 8.0,
    "solarize": 1.0,
    "rotate": 0.0,
    "shear_x": 0.0,
    "shear_y": 0.0,
    "translate_x": 0.0,
    "translate_y": 0.0,
}
PAPER_RANGES = {
    "brightness": (0.05, 0.95),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "sharpness": (0.05, 0.95),
    "posterize": (4, 8),
    "solarize": (0, 1),
    "rotate": (-30, 30),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}


def test_the_table_holds_fixmatch_ops_and_ranges() -> None:
    assert {op.name for op in OPS} == set(IDENTITY_MAGNITUDE)
    for op in OPS:
        assert (op.low, op.high) == pytest.approx(PAPER_RANGES.get(op.name, (0.0, 0.0))), op.name


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
@pytest.mark.parametrize("channels", [1, 3])
def test_each_op_keeps_shape_dtype_and_is_the_identity_at_its_neutral_magnitude(op, channels) -> None:
    x = _photo()[:, :channels].contiguous()
    for v in (op.low, op.high):
        out = op.fn(x, torch.full((len(x),), float(v)))
        assert out.shape == x.shape and out.dtype == torch.uint8
    neutral = IDENTITY_MAGNITUDE[op.name]
    if neutral is not None:
        assert torch.equal(op.fn(x, torch.full((len(x),), neutral)), x)
    # ... and changes the image at the end of its range furthest from that
    far = max((op.low, op.high), key=lambda v: abs(v - (neutral or 0.0)))
    changed = not torch.equal(op.fn(x, torch.full((len(x),), float(far))), x)
    assert changed == (op.name != "identity" and not (op.name == "color" and channels == 1))


def test_blend_ops_match_torchvision_with_one_factor() -> None:
    x = _photo()
    v = torch.full((len(x),), 0.3)
    pairs = [
        (brightness, TF.adjust_brightness),
        (contrast, TF.adjust_contrast),
        (color, TF.adjust_saturation),
        (sharpness, TF.adjust_sharpness),
    ]
    for ours, theirs in pairs:
        # torchvision truncates the blend to uint8, this module rounds: at most 1 apart.
        diff = (ours(x, v).int() - theirs(x, 0.3).int()).abs()
        assert diff.max() <= 1, ours.__name__
    assert torch.equal(posterize(x, torch.full((len(x),), 5.0)), TF.posterize(x, 5))
    assert torch.equal(solarize(x, torch.full((len(x),), 0.5)), TF.solarize(x, 128))


def test_magnitudes_are_per_image() -> None:
    x = _photo(n=2)
    out = brightness(x, torch.tensor([1.0, 0.5]))
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], (x[1].float() * 0.5).round().to(torch.uint8))


def test_geometric_ops_move_pixels_as_stated() -> None:
    x = _photo(n=2)
    # a quarter turn on a square image is a pure permutation of pixels
    turned = rotate(x, torch.full((2,), 90.0))
    assert any(torch.equal(turned, torch.rot90(x, k, dims=(-2, -1))) for k in (1, 3))
    # 0.25 × 16 px = a 4-pixel shift; the uncovered strip is black
    moved = translate_x(x, torch.full((2,), 0.25))
    assert torch.equal(moved[..., 4:], x[..., :-4]) and (moved[..., :4] == 0).all()
    moved = translate_y(x, torch.full((2,), -0.25))
    assert torch.equal(moved[..., :-4, :], x[..., 4:, :]) and (moved[..., -4:, :] == 0).all()
    # an x-shear moves pixels along their row only, a y-shear along their column only
    rows = (torch.arange(16) * 10 + 5).to(torch.uint8).view(1, 1, 16, 1).expand(1, 1, 16, 16)
    sheared = shear_x(rows, torch.full((1,), 0.3))
    assert not torch.equal(sheared, rows)
    assert all(set(sheared[0, 0, r].tolist()) <= {r * 10 + 5, 0} for r in range(16))
    cols = rows.transpose(-1, -2)
    sheared = shear_y(cols, torch.full((1,), -0.3))
    assert not torch.equal(sheared, cols)
    assert all(set(sheared[0, 0, :, c].tolist()) <= {c * 10 + 5, 0} for c in range(16))


def test_cutout_fills_a_clipped_grey_square() -> None:
    x = torch.zeros(2, 1, 10, 10, dtype=torch.uint8)
    out = cutout(x, torch.tensor([[0.5, 0.5], [0.0, 0.0]]), torch.tensor([0.4, 0.4]))
    assert (out[0, 0, 3:7, 3:7] == CUTOUT_FILL).all() and int((out[0] == CUTOUT_FILL).sum()) == 16
    assert int((out[1] == CUTOUT_FILL).sum()) == 4  # centred on the corner: a quarter survives


def test_strong_view_applies_two_ops_with_drawn_magnitudes_in_range(monkeypatch) -> None:
    seen: dict[str, list[float]] = {}

    def recording(op):
        def fn(x, v):
            seen.setdefault(op.name, []).extend(v.tolist())
            return op.fn(x, v)

        return dataclasses.replace(op, fn=fn)

    ops = tuple(recording(op) if op.name != "identity" else op for op in OPS)
    aug = Augmenter(ops=ops, cutout=0.0, group_size=1, op_prob=1.0)
    aug.strong(_photo(n=200), torch.Generator().manual_seed(0))
    assert sum(len(v) for v in seen.values()) == pytest.approx(2 * 200 * 13 / 14, rel=0.15)
    seen.clear()
    Augmenter(ops=ops, cutout=0.0, op_prob=0.5).strong(_photo(n=200), torch.Generator().manual_seed(0))
    assert sum(len(v) for v in seen.values()) == pytest.approx(200 * 13 / 14, rel=0.15)
    for op in OPS:
        if op.name == "identity":
            continue
        values = seen[op.name]
        assert all(op.low <= v <= op.high for v in values), op.name
        if op.low < op.high:
            assert len(set(values)) > 1, op.name  # each image draws its own magnitude


def test_grouped_draws_share_ops_within_a_group() -> None:
    x = _images(n=1).expand(8, -1, -1, -1).contiguous()
    out = Augmenter(group_size=4, translate=0.0, hflip=False).strong(x, torch.Generator().manual_seed(0))
    assert torch.equal(out[0], out[3]) and torch.equal(out[4], out[7])
    assert not torch.equal(out[0], out[4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_strong_view_on_cuda_equals_cpu() -> None:
    x = _photo(n=32)
    aug = Augmenter()
    cpu = aug.strong(x, torch.Generator().manual_seed(0))
    gpu = aug.strong(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    assert (cpu.int() - gpu.cpu().int()).abs().max() <= 1


def test_augment_benchmark_writes_one_row_per_implementation_and_group(tmp_path) -> None:
    import json

    from benchmarks.bench_augment import COLUMNS, main

    out = tmp_path / "rows.json"
    assert (
        main(["--batch", "4", "--image-size", "8", "--groups", "1,2", "--repeats", "1", "--json", str(out)])
        == 0
    )
    rows = json.loads(out.read_text())
    assert [(r["impl"], r["group"]) for r in rows] == [
        ("fixmatch_table", 1),
        ("torchvision_ra", 1),
        ("fixmatch_table", 2),
        ("torchvision_ra", 2),
    ]
    assert all(set(r) == set(COLUMNS) and r["imgs_per_s"] > 0 for r in rows)
