"""The flip decision: grey images (digits) → off, colour photos → on, from the pixels alone."""

from __future__ import annotations

import numpy as np
import pytest

from labelkit.orientation import colour_spread, decide_hflip


def test_digits_get_no_flip_in_one_channel_and_as_rgb() -> None:
    from labelkit.datasets import load_digits

    x, _ = load_digits(size=16)
    assert not decide_hflip(x).hflip
    rgb = np.repeat(x, 3, axis=1)
    decision = decide_hflip(rgb)
    assert not decision.hflip and decision.colour_fraction == 0.0 and "grey" in decision.reason


def test_grey_saved_with_jpeg_noise_is_still_grey_and_colour_is_colour() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8), 3, axis=1)
    noisy = np.clip(grey.astype(int) + rng.integers(-2, 3, grey.shape), 0, 255).astype(np.uint8)
    assert colour_spread(noisy).max() <= 4
    colour = noisy.copy()
    colour[:, 0] = 250  # a strong red cast
    assert not decide_hflip(noisy).hflip
    decision = decide_hflip(colour)
    assert decision.hflip and decision.colour_fraction == 1.0 and decision.images == 20


def test_the_majority_decides_and_a_large_array_is_sampled() -> None:
    grey = np.full((600, 3, 4, 4), 100, np.uint8)
    grey[:250, 2] = 0  # 250 of 600 are colour (blue channel off): a minority
    decision = decide_hflip(grey)
    assert not decision.hflip and decision.images == 512
    assert decision.colour_fraction == pytest.approx(250 / 600, abs=0.01)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        decide_hflip(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        decide_hflip(np.zeros((2, 4, 4), np.uint8))
    assert not decide_hflip(np.zeros((0, 1, 4, 4), np.uint8)).hflip
