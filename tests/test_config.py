"""TrainConfig: round trip through plain data, and every bad input named in the error."""

from __future__ import annotations

import json

import pytest

from labelkit.config import TrainConfig


def test_round_trip_through_json() -> None:
    config = TrainConfig.from_dict(
        {"model": "wrn28_2", "methods": ["supervised"], "steps": 20, "lr": 1, "hflip": False, "seed": 3}
    )
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.methods == ("supervised",)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stepz": 3}, r"unknown training option\(s\) \['stepz'\]; valid: .*'steps'"),
        (
            {"methods": ["supervised"], "model": "vgg"},
            r"unknown model 'vgg'; valid: cnn_small, pixels, resnet18, wrn28_2 or any timm model name",
        ),
        ({"methods": ["magic"]}, r"unknown SSL method 'magic'; valid: .*supervised"),
        ({"methods": []}, "at least one SSL method"),
        ({"methods": "supervised"}, "methods must be a list of names"),
        ({"methods": ["supervised", "supervised"]}, "listed twice"),
        (
            {"methods": ["supervised"], "method_options": {"supervised": {"tau": 1}}},
            r"unknown option\(s\) \['tau'\]",
        ),
        ({"methods": ["supervised"], "method_options": {"fixmatch": {}}}, "not in methods"),
        ({"methods": ["supervised"], "steps": 0}, "steps ≥ 1"),
        ({"methods": ["supervised"], "ema_decay": 1.0}, "0 ≤ ema_decay < 1"),
        ({"methods": ["supervised"], "steps": 2.5}, "steps must be int"),
        ({"methods": ["supervised"], "hflip": 1}, "hflip must be bool"),
        ({"methods": ["supervised"], "batch_size": True}, "batch_size must be int"),
        ({"methods": ["supervised"], "device": "gpu"}, "device must be auto, cpu"),
        ({"methods": ["supervised"], "momentum": 0.0}, "nesterov needs momentum"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)
