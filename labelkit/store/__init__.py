"""The workspace database: the ``Store`` class and the plain records it returns."""

from labelkit.store.store import (
    SHORTCUT_KEYS,
    AnnotationInfo,
    ClassInfo,
    ClassInUseError,
    CurrentLabelInfo,
    ItemInfo,
    NewItem,
    NotFoundError,
    QueueFilter,
    Store,
    StoreError,
    UndoConflictError,
)

__all__ = [
    "SHORTCUT_KEYS",
    "AnnotationInfo",
    "ClassInUseError",
    "ClassInfo",
    "CurrentLabelInfo",
    "ItemInfo",
    "NewItem",
    "NotFoundError",
    "QueueFilter",
    "Store",
    "StoreError",
    "UndoConflictError",
]
