"""Tables of a workspace database. The Store is the only code that reads or writes them.

Annotations are an append-only history: labelling, undo and removal all append a row. The current
label of an item is the newest row of its history; ``current_labels`` keeps that projection in the
same transaction so the labelling queue never has to scan the history (``Store.rebuild_current_labels``
recomputes it from the history and the tests check the two agree).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SOURCES = ("human", "imported", "pseudo_accepted")
ITEM_STATUSES = ("active", "excluded")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use labelkit.store.schema.utcnow()")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class LabelClass(Base):
    __tablename__ = "classes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    shortcut: Mapped[str | None] = mapped_column(String(1), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Classes with labels in their history are never deleted, only hidden, so history stays whole.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Relative to the workspace root for files copied in; absolute for files referenced in place.
    path: Mapped[str] = mapped_column(Text)
    thumb_path: Mapped[str] = mapped_column(Text)
    original_name: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="active")
    # A fixed random key per item: each labeller walks the ring of keys from a different start,
    # so random order costs one index range scan and two labellers rarely see the same item.
    rand_key: Mapped[int] = mapped_column(BigInteger)
    # Items sent back for a human look (e.g. a rejected pseudo-label) come first in the queue.
    priority: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        CheckConstraint("status IN ('active', 'excluded')", name="ck_items_status"),
        Index("ix_items_queue", "status", "priority", "rand_key"),
    )


class Annotation(Base):
    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    # NULL means "no label" (an undo back to unlabelled, or a removal).
    class_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id"), nullable=True, index=True)
    source: Mapped[str] = mapped_column(String(20))
    annotator: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set on rows written by undo: the annotation this row reverts.
    reverts_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), nullable=True)
    # For pseudo_accepted rows: the model version that proposed the label.
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)

    __table_args__ = (
        CheckConstraint("source IN ('human', 'imported', 'pseudo_accepted')", name="ck_annotations_source"),
    )


class CurrentLabel(Base):
    __tablename__ = "current_labels"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id"), index=True)
    source: Mapped[str] = mapped_column(String(20), index=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    annotator: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelVersion(Base):
    """A trained model: where its files are, how it was trained and how well it did."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    method: Mapped[str] = mapped_column(String(100))
    backbone: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    label_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    classes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    device: Mapped[str] = mapped_column(String(200), default="")
    # Folder of checkpoint and per-item arrays, relative to the workspace root.
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    num_items: Mapped[int] = mapped_column(Integer, default=0)


class Prediction(Base):
    """One model version's prediction for one item; probabilities and embeddings live in array files."""

    __tablename__ = "predictions"

    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id"))
    confidence: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_predictions_version_class_conf", "model_version_id", "class_id", "confidence"),
    )


JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")


class Job(Base):
    """Work the app asks the background worker for (a training round); the worker reports back here."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="ck_jobs_status"
        ),
        Index("ix_jobs_status", "status", "id"),
    )


class WorkerLease(Base):
    """Who runs the workspace's worker. One row; a lease whose heartbeat is stale may be taken over."""

    __tablename__ = "worker_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    owner: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Setting(Base):
    """Workspace settings (backbone, weights file, download permission, flips …), one JSON value
    per key; ``labelkit.store.settings`` validates keys and values."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
