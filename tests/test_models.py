"""Backbones: the output contract, WRN-28-2's size, and loud failures."""

from __future__ import annotations

import pytest
import torch

from labelkit.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_returns_logits_and_the_features_as_unit_embedding(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, in_channels=1, image_size=16).eval()
    out = model(torch.randn(3, 1, 16, 16))
    assert out.logits.shape == (3, 5)
    assert out.features.shape == (3, model.feature_dim) == (3, model.embed_dim)
    # features are the raw pooled activations; the embedding is exactly their direction, so it is
    # shaped by whatever trains the classifier (no untrained head in between)
    assert not torch.allclose(out.features.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(out.embedding, out.features / out.features.norm(dim=1, keepdim=True))


def test_wrn28_2_has_fixmatch_parameter_count() -> None:
    # FixMatch's WRN-28-2 for 10 classes: 1,467,610 parameters (the "1.47 M" of the paper).
    model = build_model("wrn28_2", num_classes=10, in_channels=3, image_size=32)
    assert sum(p.numel() for p in model.parameters()) == 1_467_610
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.momentum == 0.001 for m in bn)


def test_normalize_maps_uint8_with_the_model_statistics() -> None:
    model = build_model("cnn_small", num_classes=2, in_channels=1, image_size=8, mean=[0.2], std=[0.4])
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1)
    # (0/255 − 0.2)/0.4 = −0.5; (51/255 − 0.2)/0.4 = 0; (1 − 0.2)/0.4 = 2
    torch.testing.assert_close(model.normalize(x).flatten(), torch.tensor([-0.5, 0.0, 2.0]))


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="cnn_small, pixels, resnet18, wrn28_2 or any timm model name"):
        build_model("vgg", num_classes=2, in_channels=1, image_size=16)


def test_resnet18_loads_weights_only_from_the_given_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        build_model(
            "resnet18", num_classes=2, in_channels=3, image_size=32, weights_path=tmp_path / "missing.pth"
        )
    # A saved torchvision state dict is loaded: the first conv equals it (summed over RGB for grey input).
    from torchvision.models import resnet18

    torch.manual_seed(1)
    reference = resnet18().state_dict()
    torch.save(reference, tmp_path / "r18.pth")
    grey = build_model(
        "resnet18", num_classes=2, in_channels=1, image_size=32, weights_path=tmp_path / "r18.pth"
    )
    torch.testing.assert_close(grey.body.net.conv1.weight, reference["conv1.weight"].sum(1, keepdim=True))
    rgb = build_model(
        "resnet18", num_classes=2, in_channels=3, image_size=32, weights_path=tmp_path / "r18.pth"
    )
    torch.testing.assert_close(rgb.body.net.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    torch.testing.assert_close(rgb.input_mean, torch.tensor([0.485, 0.456, 0.406]))
