"""The one class that opens database sessions. Everything it returns is plain data."""

from __future__ import annotations

import contextlib
import functools
import secrets
import string
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session

from labelkit.store import db
from labelkit.store.jobs import JobQueue
from labelkit.store.schema import (
    SOURCES,
    Annotation,
    CurrentLabel,
    Item,
    LabelClass,
)
from labelkit.store.schema import utcnow as _now
from labelkit.store.settings import Settings
from labelkit.store.versions import ModelRegistry
from labelkit.workspace import Workspace

# Streamlit reserves "c" and "r" for its own shortcuts; the Label page uses non-letter keys.
DIGIT_KEYS = tuple("1234567890")
SHORTCUT_KEYS = "".join(DIGIT_KEYS) + "".join(k for k in string.ascii_lowercase if k not in "cr")
MAX_CLASS_NAME = 200
MAX_ANNOTATOR = 100


class StoreError(Exception):
    """A request the store refuses; the message is meant for the user."""


class NotFoundError(StoreError, LookupError):
    pass


class ClassInUseError(StoreError):
    pass


class UndoConflictError(StoreError):
    pass


class DatabaseError(StoreError):
    """The workspace's database cannot be opened (bad URL, missing driver, unreachable, read-only)."""


@dataclass(frozen=True)
class QueueFilter:
    """Which items the labelling queue walks through.

    ``labeled``: False for unlabelled items only, True for labelled only, None for all.
    ``class_id`` / ``source`` select labelled items of one class or one label source (whatever
    ``labeled`` says).
    """

    labeled: bool | None = False
    class_id: int | None = None
    source: str | None = None


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    position: int
    shortcut: str | None


@dataclass(frozen=True)
class NewItem:
    sha256: str
    path: str
    thumb_path: str
    original_name: str
    origin: str
    width: int
    height: int
    format: str
    mode: str


@dataclass(frozen=True)
class ItemInfo:
    id: int
    sha256: str
    path: str
    thumb_path: str
    original_name: str
    origin: str
    width: int
    height: int
    format: str
    mode: str
    imported_at: datetime
    status: str
    priority: int


@dataclass(frozen=True)
class AnnotationInfo:
    id: int
    item_id: int
    class_id: int | None
    source: str
    annotator: str
    created_at: datetime
    reverts_id: int | None
    model_version_id: int | None


@dataclass(frozen=True)
class CurrentLabelInfo:
    item_id: int
    class_id: int
    source: str
    annotation_id: int
    annotator: str
    updated_at: datetime


def _open_error(error: BaseException, url: str) -> str | None:
    """One line saying why the database at ``url`` cannot be opened, or None for an error that is
    not about opening it (a bug, which keeps its traceback). Passwords never appear."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        scheme = url.split(":", 1)[0][:40]
        return f"not a database URL: {scheme!r}… (expected e.g. sqlite:///path or postgresql://host/db)"
    if isinstance(error, NoSuchModuleError):
        return f"unknown kind of database in {shown} (supported: sqlite, postgresql)"
    if isinstance(error, ModuleNotFoundError):
        return (
            f"the database driver {error.name!r} for {shown} is not installed (pip install "
            "'labelkit[postgres]' installs psycopg2; name it in the URL: postgresql+psycopg2://…)"
        )
    if isinstance(error, DBAPIError):
        detail = str(error.orig).strip().splitlines()
        return f"cannot open the database {shown}: {detail[0] if detail else type(error.orig).__name__}"
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"cannot create the workspace{where}: {error.strerror or error}"
    return None


def _item_info(row: Item) -> ItemInfo:
    return ItemInfo(
        id=row.id,
        sha256=row.sha256,
        path=row.path,
        thumb_path=row.thumb_path,
        original_name=row.original_name,
        origin=row.origin,
        width=row.width,
        height=row.height,
        format=row.format,
        mode=row.mode,
        imported_at=row.imported_at,
        status=row.status,
        priority=row.priority,
    )


def _annotation_info(row: Annotation) -> AnnotationInfo:
    return AnnotationInfo(
        id=row.id,
        item_id=row.item_id,
        class_id=row.class_id,
        source=row.source,
        annotator=row.annotator,
        created_at=row.created_at,
        reverts_id=row.reverts_id,
        model_version_id=row.model_version_id,
    )


def _check_annotator(annotator: str) -> str:
    name = annotator.strip()
    if not name or len(name) > MAX_ANNOTATOR or not name.isprintable():
        raise StoreError(f"annotator must be 1–{MAX_ANNOTATOR} printable characters, got {annotator!r}")
    return name


def _check_class_name(name: str) -> str:
    clean = " ".join(name.split())
    if not clean or len(clean) > MAX_CLASS_NAME or not clean.isprintable():
        raise StoreError(f"a class name must be 1–{MAX_CLASS_NAME} printable characters, got {name!r}")
    return clean


def _check_shortcut(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    key = key.lower()
    if key not in SHORTCUT_KEYS:
        raise StoreError(f"shortcut must be one of {' '.join(SHORTCUT_KEYS)} (c and r belong to Streamlit)")
    return key


def default_shortcut(name: str, taken: Collection[str | None], reserved: Collection[str] = ()) -> str | None:
    """The key a new class gets unless one is chosen: a class named by a digit ("3") gets that key,
    so the digit you see is the digit you press; any other name the first free key that is neither
    taken nor ``reserved`` (the keys of digit-named classes about to be added)."""
    own = name.strip()
    if own in DIGIT_KEYS and own not in taken:
        return own
    return next((k for k in SHORTCUT_KEYS if k not in taken and k not in reserved), None)


class Store:
    """A workspace's database: classes, items, the annotation history and current labels.

    Safe to share between threads (each call opens its own session) and between processes (the
    database serialises writers). Every write commits before the method returns.
    """

    def __init__(self, workspace: Workspace, reader: Engine, writer: Engine) -> None:
        self.workspace = workspace
        self._reader = reader
        self._writer = writer

    @classmethod
    def open(cls, workspace: Workspace | None = None) -> Store:
        """Open (creating and migrating if needed) the workspace's database, then its folders.

        The database connects first, so a bad URL or a dead server creates no folders. Raises
        ``DatabaseError`` with one line for a person when it cannot.
        """
        workspace = workspace or Workspace.resolve()
        try:
            reader, writer = db.create_engines(workspace.db_url)
            try:
                db.upgrade(writer)
            except BaseException:
                reader.dispose()
                raise
            workspace.ensure()
        except Exception as error:
            reason = _open_error(error, workspace.db_url)
            if reason is None:
                raise
            raise DatabaseError(reason) from error
        return cls(workspace, reader, writer)

    @functools.cached_property
    def jobs(self) -> JobQueue:
        """The background worker's job queue and lease."""
        return JobQueue(self)

    @functools.cached_property
    def settings(self) -> Settings:
        """Workspace settings (backbone, weights, download permission …)."""
        return Settings(self)

    @functools.cached_property
    def versions(self) -> ModelRegistry:
        """Trained model versions and their per-item predictions."""
        return ModelRegistry(self)

    def close(self) -> None:
        self._reader.dispose()

    @property
    def dialect(self) -> str:
        return self._reader.dialect.name

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; committed when the block exits without an exception."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def _insert(self) -> Any:
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    # ----------------------------------------------------------------- classes
    def classes(self) -> list[ClassInfo]:
        with self.read() as s:
            rows = s.scalars(
                select(LabelClass).where(LabelClass.deleted_at.is_(None)).order_by(LabelClass.position)
            )
            return [ClassInfo(r.id, r.name, r.position, r.shortcut) for r in rows]

    def class_by_name(self, name: str) -> ClassInfo:
        wanted = " ".join(name.split()).casefold()
        for info in self.classes():
            if info.name.casefold() == wanted:
                return info
        known = ", ".join(c.name for c in self.classes()) or "none yet"
        raise NotFoundError(f"unknown class {name!r} (classes: {known})")

    def add_class(
        self, name: str, *, shortcut: str | None = None, reserved: Collection[str] = ()
    ) -> ClassInfo:
        """Add a class; without ``shortcut`` it gets ``default_shortcut``'s key."""
        clean = _check_class_name(name)
        key = _check_shortcut(shortcut)
        with self.write() as s:
            live = list(s.scalars(select(LabelClass).where(LabelClass.deleted_at.is_(None))))
            if any(c.name.casefold() == clean.casefold() for c in live):
                raise StoreError(f"a class named {clean!r} already exists")
            taken = set(s.scalars(select(LabelClass.shortcut).where(LabelClass.shortcut.is_not(None))))
            if key is not None and key in taken:
                raise StoreError(f"shortcut {key!r} is already used by another class")
            if key is None:
                key = default_shortcut(clean, taken, reserved)
            position = max((c.position for c in live), default=-1) + 1
            row = LabelClass(name=clean, position=position, shortcut=key, created_at=_now())
            s.add(row)
            s.flush()
            return ClassInfo(row.id, row.name, row.position, row.shortcut)

    def ensure_classes(self, names: Iterable[str]) -> list[ClassInfo]:
        """Add the classes that do not exist yet; return all of ``names`` in order."""
        existing = {c.name.casefold(): c for c in self.classes()}
        names = list(names)
        # Digit-named classes keep their own key free even if a class before them is new.
        reserved = {n.strip() for n in names if n.strip() in DIGIT_KEYS}
        out = []
        for name in names:
            key = " ".join(name.split()).casefold()
            if key not in existing:
                existing[key] = self.add_class(name, reserved=reserved)
            out.append(existing[key])
        return out

    def _live_class(self, s: Session, class_id: int) -> LabelClass:
        row = s.get(LabelClass, class_id)
        if row is None or row.deleted_at is not None:
            raise NotFoundError(f"no class with id {class_id}")
        return row

    def rename_class(self, class_id: int, name: str) -> None:
        clean = _check_class_name(name)
        with self.write() as s:
            row = self._live_class(s, class_id)
            clash = s.scalar(
                select(LabelClass.id).where(
                    func.lower(LabelClass.name) == clean.lower(),
                    LabelClass.id != class_id,
                    LabelClass.deleted_at.is_(None),
                )
            )
            if clash is not None:
                raise StoreError(f"a class named {clean!r} already exists")
            row.name = clean

    def set_shortcut(self, class_id: int, shortcut: str | None) -> None:
        key = _check_shortcut(shortcut)
        with self.write() as s:
            row = self._live_class(s, class_id)
            if key is not None:
                owner = s.scalar(select(LabelClass).where(LabelClass.shortcut == key))
                if owner is not None and owner.id != class_id:
                    raise StoreError(f"shortcut {key!r} is already used by class {owner.name!r}")
            row.shortcut = key

    def reorder_classes(self, class_ids: Sequence[int]) -> None:
        with self.write() as s:
            live = {c.id: c for c in s.scalars(select(LabelClass).where(LabelClass.deleted_at.is_(None)))}
            if sorted(class_ids) != sorted(live):
                raise StoreError("reorder needs every class exactly once")
            for position, class_id in enumerate(class_ids):
                live[class_id].position = position

    def delete_class(
        self, class_id: int, *, move_labels_to: int | None = None, annotator: str = "system"
    ) -> int:
        """Delete a class. Items currently labelled with it must be moved to another class.

        Returns how many labels were moved. A class that appears anywhere in the history is hidden,
        not removed, so the history stays whole.
        """
        with self.write() as s:
            row = self._live_class(s, class_id)
            labelled = list(s.scalars(select(CurrentLabel).where(CurrentLabel.class_id == class_id)))
            if labelled and move_labels_to is None:
                raise ClassInUseError(
                    f"class {row.name!r} labels {len(labelled)} item(s); choose a class to move them to first"
                )
            if labelled:
                assert move_labels_to is not None
                if move_labels_to == class_id:
                    raise StoreError("cannot move labels to the class being deleted")
                self._live_class(s, move_labels_to)
                who = _check_annotator(annotator)
                for current in labelled:
                    self._append(s, current.item_id, move_labels_to, current.source, who, None, None)
            in_history = s.scalar(select(func.count()).where(Annotation.class_id == class_id))
            if in_history:
                row.deleted_at = _now()
                row.shortcut = None
                row.name = f"{row.name} (deleted #{row.id})"
            else:
                s.delete(row)
            return len(labelled)

    # ------------------------------------------------------------------- items
    def known_sha256(self, digests: Iterable[str]) -> dict[str, int]:
        """Map each digest already in the workspace to its item id."""
        digests = list(digests)
        found: dict[str, int] = {}
        with self.read() as s:
            for start in range(0, len(digests), 500):
                chunk = digests[start : start + 500]
                found.update(s.execute(select(Item.sha256, Item.id).where(Item.sha256.in_(chunk))).all())
        return found

    def add_items(self, items: Sequence[NewItem]) -> dict[str, int]:
        """Insert items whose sha256 is new; return ``sha256 -> id`` for all of them."""
        if not items:
            return {}
        now = _now()
        rows = [
            {
                **vars(it),
                "imported_at": now,
                "status": "active",
                "priority": 0,
                "rand_key": secrets.randbits(62),
            }
            for it in items
        ]
        with self.write() as s:
            s.execute(self._insert()(Item).on_conflict_do_nothing(index_elements=["sha256"]), rows)
        return self.known_sha256(it.sha256 for it in items)

    def item(self, item_id: int) -> ItemInfo:
        with self.read() as s:
            row = s.get(Item, item_id)
            if row is None:
                raise NotFoundError(f"no item with id {item_id}")
            return _item_info(row)

    def items(self, item_ids: Sequence[int]) -> list[ItemInfo]:
        """Items in the order of ``item_ids`` (unknown ids are skipped)."""
        by_id: dict[int, ItemInfo] = {}
        with self.read() as s:
            for start in range(0, len(item_ids), 500):
                chunk = list(item_ids[start : start + 500])
                by_id.update((r.id, _item_info(r)) for r in s.scalars(select(Item).where(Item.id.in_(chunk))))
        return [by_id[i] for i in item_ids if i in by_id]

    def item_table(self) -> pd.DataFrame:
        """Every item with its current label: one row per item, for training, export and plots.

        Columns: item_id, sha256, path, thumb_path, original_name, width, height, status,
        class_id, source, annotator, labeled_at (null where unlabelled).
        """
        query = (
            select(
                Item.id.label("item_id"),
                Item.sha256,
                Item.path,
                Item.thumb_path,
                Item.original_name,
                Item.width,
                Item.height,
                Item.status,
                CurrentLabel.class_id,
                CurrentLabel.source,
                CurrentLabel.annotator,
                CurrentLabel.updated_at.label("labeled_at"),
            )
            .outerjoin(CurrentLabel, CurrentLabel.item_id == Item.id)
            .order_by(Item.id)
        )
        with self.read() as s:
            frame = pd.DataFrame(s.execute(query).all(), columns=list(query.selected_columns.keys()))
        frame["class_id"] = frame["class_id"].astype("Int64")
        return frame

    def count_items(self, *, status: str | None = "active") -> int:
        with self.read() as s:
            q = select(func.count()).select_from(Item)
            if status is not None:
                q = q.where(Item.status == status)
            return int(s.scalar(q) or 0)

    def active_item_ids(self) -> np.ndarray:
        """Ids of the active items, ascending (one index scan; no item table)."""
        with self.read() as s:
            ids = s.scalars(select(Item.id).where(Item.status == "active").order_by(Item.id)).all()
        return np.asarray(ids, dtype=np.int64)

    def item_stamp(self) -> tuple[int, int, int]:
        """(active items, all items, highest item id) in one query: changes whenever items are
        imported, excluded or restored, so a cache of per-item work can tell it is stale cheaply."""
        active = func.sum(case((Item.status == "active", 1), else_=0))
        with self.read() as s:
            row = s.execute(select(active, func.count(), func.max(Item.id))).one()
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    def set_priority(self, item_ids: Sequence[int], priority: int) -> None:
        with self.write() as s:
            s.execute(update(Item).where(Item.id.in_(list(item_ids))).values(priority=priority))

    def set_status(self, item_ids: Sequence[int], status: str) -> None:
        if status not in ("active", "excluded"):
            raise StoreError(f"status must be 'active' or 'excluded', got {status!r}")
        with self.write() as s:
            s.execute(update(Item).where(Item.id.in_(list(item_ids))).values(status=status))

    def queue_ids(
        self,
        *,
        start_key: int,
        limit: int,
        where: QueueFilter = QueueFilter(),
        exclude: Sequence[int] = (),
    ) -> list[int]:
        """Up to ``limit`` active items in queue order: raised priority first, then the ring of
        random keys walked from ``start_key``. Each page is one or two index range scans."""
        labelled = select(CurrentLabel.item_id).where(CurrentLabel.item_id == Item.id)
        if where.class_id is not None:
            labelled = labelled.where(CurrentLabel.class_id == where.class_id)
        if where.source is not None:
            labelled = labelled.where(CurrentLabel.source == where.source)
        base = select(Item.id).where(Item.status == "active")
        if where.labeled is True or where.class_id is not None or where.source is not None:
            base = base.where(labelled.exists())
        elif where.labeled is False:
            base = base.where(~labelled.exists())
        if exclude:
            base = base.where(Item.id.not_in(list(exclude)))
        queries = [
            base.where(Item.priority > 0).order_by(Item.priority.desc(), Item.rand_key),
            base.where(Item.priority == 0, Item.rand_key >= start_key).order_by(Item.rand_key),
            base.where(Item.priority == 0, Item.rand_key < start_key).order_by(Item.rand_key),
        ]
        out: list[int] = []
        with self.read() as s:
            for query in queries:
                if len(out) >= limit:
                    break
                out.extend(s.scalars(query.limit(limit - len(out))))
        return out

    # ------------------------------------------------------------------ labels
    def _append(
        self,
        s: Session,
        item_id: int,
        class_id: int | None,
        source: str,
        annotator: str,
        reverts_id: int | None,
        model_version_id: int | None,
    ) -> Annotation:
        """Append one history row and move the current-label projection with it."""
        now = _now()
        row = Annotation(
            item_id=item_id,
            class_id=class_id,
            source=source,
            annotator=annotator,
            created_at=now,
            reverts_id=reverts_id,
            model_version_id=model_version_id,
        )
        s.add(row)
        s.flush()
        if class_id is None:
            s.execute(delete(CurrentLabel).where(CurrentLabel.item_id == item_id))
        else:
            values = {
                "item_id": item_id,
                "class_id": class_id,
                "source": source,
                "annotation_id": row.id,
                "annotator": annotator,
                "updated_at": now,
            }
            stmt = self._insert()(CurrentLabel).values(**values)
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["item_id"], set_={k: v for k, v in values.items() if k != "item_id"}
                )
            )
        return row

    def label_many(
        self,
        item_ids: Sequence[int],
        class_id: int | None,
        *,
        annotator: str,
        source: str = "human",
        model_version_id: int | None = None,
        only_unlabelled: bool = False,
    ) -> list[AnnotationInfo]:
        """Label items (``class_id=None`` removes their label) in one transaction, committed on return.

        ``only_unlabelled`` skips items that have a label when the transaction runs (the bulk paths:
        an accepted pseudo-label or an import never overwrites anyone's label, even one given a moment
        ago in another process); the returned annotations are then those of the items written.
        """
        if source not in SOURCES:
            raise StoreError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        who = _check_annotator(annotator)
        with self.write() as s:
            if class_id is not None:
                self._live_class(s, class_id)
            ids = list(dict.fromkeys(item_ids))
            # Row locks keep each item's history in commit order on PostgreSQL; SQLite's
            # BEGIN IMMEDIATE already serialises writers.
            known = (
                set(s.scalars(select(Item.id).where(Item.id.in_(ids)).with_for_update())) if ids else set()
            )
            missing = [i for i in ids if i not in known]
            if missing:
                raise NotFoundError(
                    f"no item with id {missing[0]}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            if only_unlabelled and ids:
                # Checked under the write lock taken above (BEGIN IMMEDIATE on SQLite, the row
                # locks on PostgreSQL), so no label can land between this read and the writes.
                taken = set(s.scalars(select(CurrentLabel.item_id).where(CurrentLabel.item_id.in_(ids))))
                ids = [i for i in ids if i not in taken]
            rows = [self._append(s, i, class_id, source, who, None, model_version_id) for i in ids]
            return [_annotation_info(r) for r in rows]

    def label_each(
        self, labels: Sequence[tuple[int, int]], *, annotator: str, source: str = "human"
    ) -> list[AnnotationInfo]:
        """Label each ``(item_id, class_id)`` in order, in one transaction (one commit, where one
        ``label`` call each would wait for a disk flush each), committed on return; a refusal
        (unknown item or class) raises and writes none of them."""
        if source not in SOURCES:
            raise StoreError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        who = _check_annotator(annotator)
        with self.write() as s:
            for class_id in {c for _, c in labels}:
                self._live_class(s, class_id)
            ids = list(dict.fromkeys(i for i, _ in labels))
            known = (
                set(s.scalars(select(Item.id).where(Item.id.in_(ids)).with_for_update())) if ids else set()
            )
            missing = [i for i in ids if i not in known]
            if missing:
                raise NotFoundError(f"no item with id {missing[0]}")
            rows = [self._append(s, i, c, source, who, None, None) for i, c in labels]
            return [_annotation_info(r) for r in rows]

    def label(
        self,
        item_id: int,
        class_id: int | None,
        *,
        annotator: str,
        source: str = "human",
        model_version_id: int | None = None,
    ) -> AnnotationInfo:
        return self.label_many(
            [item_id], class_id, annotator=annotator, source=source, model_version_id=model_version_id
        )[0]

    def undo_many(self, annotation_ids: Sequence[int], *, annotator: str) -> list[AnnotationInfo]:
        """Revert annotations by appending rows that restore each item's previous label.

        Refuses (and changes nothing) if an item has a later label that was not itself undone: undo
        must not throw away somebody else's later work. Undoing several steps back works newest first.
        """
        who = _check_annotator(annotator)
        with self.write() as s:
            out = []
            for annotation_id in annotation_ids:
                target = s.get(Annotation, annotation_id)
                if target is None:
                    raise NotFoundError(f"no annotation with id {annotation_id}")
                s.execute(select(Item.id).where(Item.id == target.item_id).with_for_update())
                later = list(
                    s.scalars(
                        select(Annotation).where(
                            Annotation.item_id == target.item_id, Annotation.id > target.id
                        )
                    )
                )
                reverted = {r.reverts_id for r in later if r.reverts_id is not None}
                if target.id in reverted:
                    raise UndoConflictError(f"annotation {annotation_id} is already undone")
                if any(r.reverts_id is None and r.id not in reverted for r in later):
                    raise UndoConflictError(
                        f"item {target.item_id} was labelled again after annotation {annotation_id}; nothing undone"
                    )
                previous = s.scalar(
                    select(Annotation)
                    .where(Annotation.item_id == target.item_id, Annotation.id < target.id)
                    .order_by(Annotation.id.desc())
                    .limit(1)
                )
                if previous is not None and previous.class_id is not None:
                    restored = s.get(LabelClass, previous.class_id)
                    if restored is None or restored.deleted_at is not None:
                        raise UndoConflictError(
                            f"the earlier label of item {target.item_id} is a deleted class; nothing undone"
                        )
                restored_class = previous.class_id if previous is not None else None
                restored_source = previous.source if previous is not None else target.source
                restored_model = previous.model_version_id if previous is not None else None
                row = self._append(
                    s, target.item_id, restored_class, restored_source, who, target.id, restored_model
                )
                out.append(_annotation_info(row))
            return out

    def undo(self, annotation_id: int, *, annotator: str) -> AnnotationInfo:
        return self.undo_many([annotation_id], annotator=annotator)[0]

    def history(self, item_id: int) -> list[AnnotationInfo]:
        with self.read() as s:
            rows = s.scalars(select(Annotation).where(Annotation.item_id == item_id).order_by(Annotation.id))
            return [_annotation_info(r) for r in rows]

    def current_label(self, item_id: int) -> CurrentLabelInfo | None:
        with self.read() as s:
            row = s.get(CurrentLabel, item_id)
            if row is None:
                return None
            return CurrentLabelInfo(
                row.item_id, row.class_id, row.source, row.annotation_id, row.annotator, row.updated_at
            )

    def current_labels(self) -> pd.DataFrame:
        """item_id and class_id of every item with a current label, by item id: the label table
        alone, for pages that need the labels of a large workspace without its item table."""
        query = select(CurrentLabel.item_id, CurrentLabel.class_id).order_by(CurrentLabel.item_id)
        with self.read() as s:
            return pd.DataFrame(s.execute(query).all(), columns=["item_id", "class_id"], dtype="int64")

    def current_labels_by_source(self) -> pd.DataFrame:
        """item_id, class_id and source (human, imported, pseudo_accepted) of every current label."""
        query = select(CurrentLabel.item_id, CurrentLabel.class_id, CurrentLabel.source).order_by(
            CurrentLabel.item_id
        )
        with self.read() as s:
            rows = s.execute(query).all()
        return pd.DataFrame(rows, columns=["item_id", "class_id", "source"]).astype(
            {"item_id": "int64", "class_id": "int64", "source": "object"}
        )

    def last_annotation_id(self) -> int:
        """Id of the newest annotation (0 if none): the worker counts new labels from it."""
        with self.read() as s:
            return int(s.scalar(select(func.max(Annotation.id))) or 0)

    def annotations(self, *, since_id: int = 0) -> pd.DataFrame:
        """The history (optionally only rows after ``since_id``), oldest first."""
        cols = [c.name for c in Annotation.__table__.columns]
        with self.read() as s:
            rows = s.execute(
                select(Annotation.__table__).where(Annotation.id > since_id).order_by(Annotation.id)
            ).all()
        return pd.DataFrame(rows, columns=cols)

    def label_counts(self) -> pd.DataFrame:
        """Current labels per class and source: columns class_id, class_name, source, count."""
        query = (
            select(CurrentLabel.class_id, LabelClass.name, CurrentLabel.source, func.count())
            .join(LabelClass, LabelClass.id == CurrentLabel.class_id)
            .group_by(CurrentLabel.class_id, LabelClass.name, CurrentLabel.source)
            .order_by(CurrentLabel.class_id, CurrentLabel.source)
        )
        with self.read() as s:
            rows = s.execute(query).all()
        return pd.DataFrame(rows, columns=["class_id", "class_name", "source", "count"])

    def rebuild_current_labels(self) -> int:
        """Recompute the current-label table from the history; returns how many rows changed."""
        with self.write() as s:
            newest = (
                select(Annotation.item_id, func.max(Annotation.id).label("annotation_id"))
                .group_by(Annotation.item_id)
                .subquery()
            )
            derived = {
                r.item_id: (r.class_id, r.source, r.id, r.annotator)
                for r in s.execute(
                    select(Annotation).join(newest, Annotation.id == newest.c.annotation_id)
                ).scalars()
                if r.class_id is not None
            }
            stored = {
                r.item_id: (r.class_id, r.source, r.annotation_id, r.annotator)
                for r in s.scalars(select(CurrentLabel))
            }
            if derived == stored:
                return 0
            changed = len(set(derived.items()) ^ set(stored.items()))
            s.execute(delete(CurrentLabel))
            now = _now()
            if derived:
                s.execute(
                    insert(CurrentLabel),
                    [
                        {
                            "item_id": i,
                            "class_id": c,
                            "source": src,
                            "annotation_id": a,
                            "annotator": who,
                            "updated_at": now,
                        }
                        for i, (c, src, a, who) in derived.items()
                    ],
                )
            return changed
