"""Workspace settings: a few named values every process of a workspace sees (they live in its
database, so a worker on another host reads what the Settings page wrote)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labelkit.store.schema import Setting

if TYPE_CHECKING:
    from labelkit.store.store import Store


@dataclass(frozen=True)
class Spec:
    default: Any
    check: Callable[[Any], bool]
    help: str


def _backbone(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    if value == "auto":
        return True
    from labelkit.models import is_known

    return is_known(value)


SETTINGS: dict[str, Spec] = {
    "backbone": Spec(
        "auto",
        _backbone,
        "auto (a pretrained timm model for colour photos, the small CNN for small grey images), "
        "a labelkit model name or any timm model name",
    ),
    "weights_path": Spec(
        None, lambda v: v is None or (isinstance(v, str) and bool(v)), "a weights file for the backbone"
    ),
    "allow_download": Spec(
        False, lambda v: isinstance(v, bool), "may the worker download pretrained weights"
    ),
    "hflip": Spec(
        "auto", lambda v: v in ("auto", "on", "off"), "horizontal flips in training: auto, on, off"
    ),
    "fast_method": Spec(
        None, lambda v: v is None or isinstance(v, str), "the fast model's method (None = default)"
    ),
}


class Settings:
    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> Any:
        spec = _spec(key)
        with self._store.read() as s:
            row = s.get(Setting, key)
            return spec.default if row is None else row.value

    def all(self) -> dict[str, Any]:
        with self._store.read() as s:
            stored = {r.key: r.value for r in s.scalars(select(Setting))}
        return {k: stored.get(k, spec.default) for k, spec in SETTINGS.items()}

    def set(self, key: str, value: Any) -> None:
        spec = _spec(key)
        if not spec.check(value):
            raise ValueError(f"invalid value {value!r} for setting {key!r}: {spec.help}")
        with self._store.write() as s:
            row = s.get(Setting, key)
            if row is None:
                s.add(Setting(key=key, value=value))
            else:
                row.value = value


def _spec(key: str) -> Spec:
    try:
        return SETTINGS[key]
    except KeyError:
        raise ValueError(f"unknown setting {key!r}; valid: {', '.join(SETTINGS)}") from None
