"""Backbones. Every model returns logits, an L2-normalised embedding and the raw pooled features.

A model is a body (images → pooled features, width ``feature_dim``) and a linear classifier. The
embedding that plots, active learning and the round-trip statistics use is the pooled features
scaled to unit length: the representation the classifier reads, so every method trains it (a
separate projection head would stay at its random initialisation unless a loss pulled on it; SimMatch
keeps its own head for that reason). The model also carries the per-channel mean/std its inputs are
normalised with, so inference from uint8 images needs nothing but the model (``normalize``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelkit.augment import normalize
from labelkit.backbones import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from labelkit.backbones import Weights


class ModelOutput(NamedTuple):
    logits: Tensor  # (N, num_classes)
    embedding: Tensor  # (N, D), unit L2 norm: what plots, active learning and association use
    features: Tensor  # (N, F), pooled features before the classifier, not normalised


class Classifier(nn.Module):
    """A body plus a linear classifier; ``forward`` takes normalised float images."""

    def __init__(
        self,
        body: nn.Module,
        feature_dim: int,
        *,
        num_classes: int,
        in_channels: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        head_on_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        # The fast model's head reads the unit embedding (its feature-space methods work on
        # cosine geometry); the deep rounds' classifier reads the raw pooled features.
        self.head_on_embedding = head_on_embedding
        self.feature_dim = feature_dim
        self.embed_dim = feature_dim
        self.num_classes = num_classes
        self.classifier = nn.Linear(feature_dim, num_classes)
        mean = [0.5] * in_channels if mean is None else list(mean)
        std = [0.25] * in_channels if std is None else list(std)
        if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
            raise ValueError(f"mean/std need {in_channels} values each (std > 0), got {mean} / {std}")
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32))

    input_mean: Tensor
    input_std: Tensor

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 images (N, C, H, W) in 0–255 → the float input ``forward`` expects."""
        return normalize(x, self.input_mean, self.input_std)

    def forward(self, x: Tensor) -> ModelOutput:
        features = self.body(x)
        embedding = F.normalize(features.float(), dim=1)
        logits = self.classifier(embedding.to(features.dtype) if self.head_on_embedding else features)
        return ModelOutput(logits, embedding, features)


# ---------------------------------------------------------------- WideResNet-28-2 (FixMatch)
class _WideBlock(nn.Module):
    """Pre-activation basic block of the FixMatch WideResNet (BN momentum 0.001, leaky ReLU 0.1)."""

    def __init__(self, c_in: int, c_out: int, stride: int, activate_before_residual: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, momentum=0.001)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=0.001)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)
        # The first block of the network shares the pre-activation between both branches.
        self.activate_before_residual = activate_before_residual

    def forward(self, x: Tensor) -> Tensor:
        act = F.leaky_relu(self.bn1(x), 0.1)
        if self.activate_before_residual:
            x = act
        out = self.conv1(act)
        out = self.conv2(F.leaky_relu(self.bn2(out), 0.1))
        return out + (x if self.shortcut is None else self.shortcut(act))


class _WideResNetBody(nn.Module):
    def __init__(self, in_channels: int, depth: int = 28, widen: int = 2) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for stage in range(3):
            for i in range(n):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                stride = (1 if stage == 0 else 2) if i == 0 else 1
                blocks.append(_WideBlock(c_in, widths[stage + 1], stride, stage == 0 and i == 0))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[-1], momentum=0.001)
        self.out_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.bn(self.blocks(self.conv(x))), 0.1)
        return out.mean(dim=(2, 3))


# ---------------------------------------------------------------- small CNN for CPU
class _SmallCNNBody(nn.Module):
    """Three conv stages (16, 32, 64 channels) and global average pooling: ~36 k parameters, a few
    MFLOPs per 16×16 image, so a CPU core trains it at hundreds of images per second."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for stage, w in enumerate(widths):
            for _ in range(2 if stage < 2 else 1):
                layers += [nn.Conv2d(c, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            if stage < 2:
                layers.append(nn.MaxPool2d(2))
        self.net = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).mean(dim=(2, 3))


# ---------------------------------------------------------------- torchvision ResNet-18
def _resnet18_weights(weights_path: str | Path | None) -> dict[str, Tensor] | None:
    """torchvision ImageNet weights from ``weights_path``; ``None`` (trained from scratch) when no
    file is named. Pretrained backbones found on their own are timm's (``labelkit.backbones``),
    which refuse rather than fall back to random weights."""
    if weights_path is None:
        return None
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"resnet18 weights not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


class _ResNet18Body(nn.Module):
    def __init__(self, in_channels: int, image_size: int, state: dict[str, Tensor] | None) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18()
        if state is not None:
            net.load_state_dict(state)
        if in_channels != 3:
            old = net.conv1.weight.data
            # Grey input: the sum of the RGB filters answers a grey image as the RGB filters answer
            # its RGB copy. Other counts: repeat the channel mean so activations keep their scale.
            new = old.sum(1, keepdim=True) if in_channels == 1 else old.mean(1, keepdim=True)
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            net.conv1.weight.data.copy_(new.expand(-1, in_channels, -1, -1))
        if image_size < 96:
            # Small images would be 1×1 after the stem's two stride-2 steps; keep the resolution.
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ---------------------------------------------------------------- pixels
class _PixelsBody(nn.Module):
    """The normalised pixels themselves as features: the fast model's input for small grey images,
    where a linear head on pixels is the baseline to beat (and ImageNet features do not help)."""

    def __init__(self, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.out_dim = in_channels * image_size * image_size

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


# ---------------------------------------------------------------- registry
class _Body(NamedTuple):
    net: nn.Module
    feature_dim: int
    mean: Sequence[float] | None = None  # the input statistics pretrained weights expect
    std: Sequence[float] | None = None


Builder = Callable[[int, int, "str | Path | None"], _Body]


def _wrn28_2(in_channels: int, image_size: int, weights_path: str | Path | None) -> _Body:
    if weights_path is not None:
        raise ValueError("wrn28_2 has no pretrained weights; leave weights_path unset")
    body = _WideResNetBody(in_channels)
    return _Body(body, body.out_dim)


def _cnn_small(in_channels: int, image_size: int, weights_path: str | Path | None) -> _Body:
    if weights_path is not None:
        raise ValueError("cnn_small has no pretrained weights; leave weights_path unset")
    body = _SmallCNNBody(in_channels)
    return _Body(body, body.out_dim)


def _resnet18(in_channels: int, image_size: int, weights_path: str | Path | None) -> _Body:
    state = _resnet18_weights(weights_path)
    body = _ResNet18Body(in_channels, image_size, state)
    if state is None or in_channels != 3:
        return _Body(body, body.out_dim)
    # Pretrained filters expect ImageNet-normalised input.
    return _Body(body, body.out_dim, IMAGENET_MEAN, IMAGENET_STD)


def _pixels(in_channels: int, image_size: int, weights_path: str | Path | None) -> _Body:
    if weights_path is not None:
        raise ValueError("pixels has no weights; leave weights_path unset")
    body = _PixelsBody(in_channels, image_size)
    return _Body(body, body.out_dim)


MODELS: dict[str, Builder] = {
    "wrn28_2": _wrn28_2,
    "cnn_small": _cnn_small,
    "resnet18": _resnet18,
    "pixels": _pixels,
}


def is_known(name: str) -> bool:
    """A labelkit model name or any model timm knows."""
    from labelkit.backbones import is_timm_model

    return name in MODELS or is_timm_model(name)


def _timm(name: str, in_channels: int, pretrained: Weights | None) -> _Body:
    from labelkit.backbones import body, feature_dim, preprocessing

    net = body(name, in_channels=in_channels, weights=pretrained)
    prep = preprocessing(name)
    if in_channels != 3:
        return _Body(net, feature_dim(net))
    return _Body(net, feature_dim(net), prep["mean"], prep["std"])


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    weights_path: str | Path | None = None,
    pretrained: Weights | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    head_on_embedding: bool = False,
) -> Classifier:
    """Build a backbone by name: one of ``MODELS`` or any timm model (``pretrained``: its weights,
    found by ``labelkit.backbones.resolve_weights``; ``None`` = random, e.g. before loading a
    saved state).

    ``mean``/``std`` (per channel, in 0–1 units) normalise inputs; when not given, a pretrained
    model uses the statistics it was trained with and the others 0.5 / 0.25.
    """
    if not is_known(name):
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))} or any timm model name")
    if num_classes < 2 or in_channels < 1 or image_size < 8:
        raise ValueError(
            f"need num_classes ≥ 2, in_channels ≥ 1, image_size ≥ 8; got "
            f"{num_classes}, {in_channels}, {image_size}"
        )
    if name in MODELS:
        if pretrained is not None:
            raise ValueError(f"{name} is trained from scratch here; pretrained weights are for timm models")
        body = MODELS[name](in_channels, image_size, weights_path)
    else:
        body = _timm(name, in_channels, pretrained)
    return Classifier(
        body.net,
        body.feature_dim,
        num_classes=num_classes,
        in_channels=in_channels,
        mean=mean if mean is not None else body.mean,
        std=std if std is not None else body.std,
        head_on_embedding=head_on_embedding,
    )


def load_matching(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """Copy the tensors of ``state`` whose name and shape match ``model``'s (a warm start from a
    model of another shape, e.g. before a class was added); return the names of ``model``'s tensors
    that kept their own values."""
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fits, strict=False)
    return sorted(set(own) - set(fits))


def from_checkpoint(checkpoint: Mapping[str, Any]) -> Classifier:
    """The model a version's ``model.pt`` describes, in eval mode.

    A deep round's checkpoint holds every tensor. A fast version's holds only its head and input
    statistics (``kind == "fast"``) and names the pretrained weights its body is built from, which
    must still be the same file (sha256) — a fast version is a head on frozen features.
    """
    from labelkit.backbones import Weights, WeightsNotFound, sha256_of

    pretrained = None
    spec = checkpoint.get("weights")
    if checkpoint.get("kind") == "fast" and spec:
        path = Path(spec["path"])
        if not path.is_file() or sha256_of(path) != spec["sha256"]:
            raise WeightsNotFound(
                f"this fast model is a head on {checkpoint['config']['model']} with the weights "
                f"{path} (sha256 {spec['sha256'][:12]}…), which are no longer on this machine"
            )
        pretrained = Weights(path, spec["source"], spec["sha256"])
    model = build_model(
        checkpoint["config"]["model"],
        num_classes=len(checkpoint["class_names"]),
        in_channels=int(checkpoint["in_channels"]),
        image_size=int(checkpoint["image_size"]),
        pretrained=pretrained,
        head_on_embedding=bool(checkpoint.get("head_on_embedding", False)),
    )
    if checkpoint.get("kind") == "fast":
        missing = load_matching(model, checkpoint["state_dict"])
        head = {"classifier.weight", "classifier.bias"}
        if head & set(missing):
            raise ValueError("fast model checkpoint lacks its head")
    else:
        model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
