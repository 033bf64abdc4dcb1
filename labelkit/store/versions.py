"""Model versions and their per-item predictions.

A version's files (checkpoint, probabilities, embeddings) live in a folder of the workspace; the
database holds what pages query: metrics, settings and one row per item with the predicted class,
confidence and uncertainty scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import insert, select

from labelkit.store.schema import ModelVersion, Prediction

if TYPE_CHECKING:
    from labelkit.store.store import Store

FAST_PREFIX = "fast:"  # method of a fast-model version (labelkit.refresh)
PREDICTION_COLUMNS = ["item_id", "class_id", "confidence", "margin", "entropy"]


@dataclass(frozen=True)
class VersionInfo:
    id: int
    created_at: datetime
    status: str
    method: str
    backbone: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    label_counts: dict[str, Any]
    classes: list[Any]
    device: str
    path: str
    parent_id: int | None
    num_items: int


def _version(row: ModelVersion) -> VersionInfo:
    return VersionInfo(
        row.id,
        row.created_at,
        row.status,
        row.method,
        row.backbone,
        dict(row.config),
        dict(row.metrics or {}),
        dict(row.label_counts or {}),
        list(row.classes or []),
        row.device,
        row.path,
        row.parent_id,
        row.num_items,
    )


class ModelRegistry:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(
        self,
        *,
        method: str,
        backbone: str,
        config: dict[str, Any],
        metrics: dict[str, Any],
        label_counts: dict[str, Any],
        classes: list[Any],
        device: str,
        path: str,
        parent_id: int | None,
        predictions: pd.DataFrame,
    ) -> int:
        """Record a version and its predictions in one transaction: both appear, or neither."""
        missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
        if missing:
            raise ValueError(f"predictions lack columns {sorted(missing)}")
        with self._store.write() as s:
            row = ModelVersion(
                status="ready",
                method=method,
                backbone=backbone,
                config=config,
                metrics=metrics,
                label_counts=label_counts,
                classes=classes,
                device=device,
                path=path,
                parent_id=parent_id,
                num_items=len(predictions),
            )
            s.add(row)
            s.flush()
            records = (
                predictions[PREDICTION_COLUMNS]
                .astype(
                    {"item_id": int, "class_id": int, "confidence": float, "margin": float, "entropy": float}
                )
                .to_dict(orient="records")
            )
            for start in range(0, len(records), 5_000):
                chunk = records[start : start + 5_000]
                s.execute(insert(Prediction), [{"model_version_id": row.id, **r} for r in chunk])
            return row.id

    def update_metrics(self, version_id: int, update: dict[str, Any]) -> None:
        """Add measurements that came after the version was recorded (its estimate); its files,
        settings and predictions stay as they were."""
        with self._store.write() as s:
            row = s.get(ModelVersion, version_id)
            if row is None:
                raise LookupError(f"no model version {version_id}")
            row.metrics = {**dict(row.metrics or {}), **update}

    def get(self, version_id: int) -> VersionInfo:
        with self._store.read() as s:
            row = s.get(ModelVersion, version_id)
            if row is None:
                raise LookupError(f"no model version {version_id}")
            return _version(row)

    def latest(self, *, fast: bool = True) -> VersionInfo | None:
        """The newest ready version; ``fast=False``: the newest deep round's, skipping the fast
        model's refreshes (method ``fast:…``), which follow every burst of labels."""
        query = select(ModelVersion).where(ModelVersion.status == "ready")
        if not fast:
            query = query.where(~ModelVersion.method.startswith(FAST_PREFIX))
        with self._store.read() as s:
            row = s.scalars(query.order_by(ModelVersion.id.desc()).limit(1)).first()
            return _version(row) if row is not None else None

    def all(self) -> list[VersionInfo]:
        with self._store.read() as s:
            return [_version(r) for r in s.scalars(select(ModelVersion).order_by(ModelVersion.id))]

    def predictions(self, version_id: int) -> pd.DataFrame:
        """One row per item the version predicted: item_id, class_id, confidence, margin, entropy."""
        with self._store.read() as s:
            rows = s.execute(
                select(
                    Prediction.item_id,
                    Prediction.class_id,
                    Prediction.confidence,
                    Prediction.margin,
                    Prediction.entropy,
                )
                .where(Prediction.model_version_id == version_id)
                .order_by(Prediction.item_id)
            ).all()
        return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)

    def prediction(self, version_id: int, item_id: int) -> dict[str, Any] | None:
        with self._store.read() as s:
            row = s.get(Prediction, (version_id, item_id))
            if row is None:
                return None
            return {c: getattr(row, c) for c in PREDICTION_COLUMNS}
