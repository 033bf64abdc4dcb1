"""Pretrained backbones: where weights come from, what happens without them, and that the
package's EfficientNet-Lite0 weights convert into timm's model correctly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from labelkit import backbones
from labelkit.backbones import WeightsNotFound, convert_by_position, resolve_weights


def test_a_named_file_comes_first_and_is_recorded_with_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    torch.save({"w": torch.ones(2)}, path)
    weights = resolve_weights("efficientnet_lite0", weights_path=path)
    assert weights.source == "file" and weights.path == path
    assert weights.sha256 == backbones.sha256_of(path) and len(weights.sha256) == 64


def test_a_named_file_that_is_missing_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match=r"mine\.pth"):
        resolve_weights("efficientnet_lite0", weights_path=tmp_path / "mine.pth")


def test_the_default_backbone_finds_the_weights_its_package_ships() -> None:
    weights = resolve_weights("efficientnet_lite0")
    assert weights.source == "package" and weights.path.name == "efficientnet-lite0-57934424.pth"


def test_the_hub_cache_is_used_and_nothing_is_downloaded_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(backbones, "_download", lambda name: pytest.fail("downloaded although not allowed"))
    with pytest.raises(WeightsNotFound) as refused:
        resolve_weights("resnet10t")
    message = str(refused.value)
    assert "resnet10t" in message and "--weights" in message and "--allow-download" in message
    (tmp_path / "checkpoints").mkdir()
    cached = tmp_path / "checkpoints" / "resnet10t-abc.pth"
    torch.save({}, cached)
    found = resolve_weights("resnet10t")
    assert found.source == "cache" and found.path == cached


def test_a_download_happens_only_where_the_user_allowed_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    fetched = tmp_path / "fetched.pth"
    torch.save({}, fetched)
    calls: list[str] = []
    monkeypatch.setattr(backbones, "_download", lambda name: calls.append(name) or fetched)
    assert resolve_weights("resnet10t", allow_download=True).source == "download"
    assert calls == ["resnet10t"]


def test_conversion_by_position_refuses_a_shape_that_does_not_fit() -> None:
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    ok = convert_by_position({"x": torch.ones(2, 3), "y": torch.ones(2)}, target)
    assert list(ok) == ["a.weight", "a.bias"] and ok["a.bias"].sum() == 2
    with pytest.raises(ValueError, match="does not fit"):
        convert_by_position({"x": torch.ones(3, 2), "y": torch.ones(2)}, target)
    with pytest.raises(ValueError, match="tensors"):
        convert_by_position({"x": torch.ones(2, 3)}, target)


def _imagenet_input(image) -> torch.Tensor:
    """ImageNet's evaluation preprocessing, written independently of labelkit's cache: short side
    to 256, centre 224 crop, ImageNet mean/std."""
    from PIL import Image

    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = torch.from_numpy(np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255)
    mean = torch.tensor(backbones.IMAGENET_MEAN)
    std = torch.tensor(backbones.IMAGENET_STD)
    return ((x - mean) / std).permute(2, 0, 1)[None]


def test_the_converted_lite0_recognises_a_real_photo_as_imagenet_does() -> None:
    """scikit-learn ships two real photos; with the package's weights converted into timm's
    efficientnet_lite0 (ImageNet head kept), the photo of the Summer Palace is class 698, 'palace'."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image

    net = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    weights = resolve_weights("efficientnet_lite0")
    net.load_state_dict(convert_by_position(backbones.read_state(weights.path), net.state_dict()))
    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, "PNG")
    with torch.inference_mode():
        probs = net(_imagenet_input(Image.open(buffer).convert("RGB"))).softmax(1)
    assert int(probs.argmax()) == 698 and float(probs.max()) > 0.2
    # labelkit's body is that network without its head: the same pooled features.
    body = backbones.body("efficientnet_lite0", weights=weights).eval()
    x = _imagenet_input(Image.open(buffer).convert("RGB"))
    with torch.inference_mode():
        assert torch.allclose(body(x), net.forward_head(net.forward_features(x), pre_logits=True), atol=1e-5)


def test_a_grey_stem_answers_a_grey_image_as_the_rgb_stem_answers_its_rgb_copy() -> None:
    rgb = backbones.body("resnet10t").eval()
    grey = backbones.body("resnet10t", in_channels=1).eval()
    grey.load_state_dict(
        {k: (v.sum(1, keepdim=True) if k == "conv1.0.weight" else v) for k, v in rgb.state_dict().items()}
    )
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


def test_an_unknown_timm_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown timm model"):
        backbones.body("no_such_net_123")
