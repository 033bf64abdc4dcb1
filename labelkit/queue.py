"""Queue orders: which items the Label page shows next, registered by name.

A queue order is a function ``(store, *, where, start_key, limit, exclude) -> list[int]`` returning
up to ``limit`` item ids, best first. Active-learning strategies register further orders here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Protocol

from labelkit.store import QueueFilter, Store

# Item.rand_key is drawn from 62 random bits; a start key from the same range makes every
# position on the ring equally likely to come first.
RAND_KEY_BITS = 62


class QueueOrder(Protocol):
    def __call__(
        self,
        store: Store,
        *,
        where: QueueFilter,
        start_key: int,
        limit: int,
        exclude: Sequence[int],
    ) -> list[int]: ...


QUEUE_ORDERS: dict[str, QueueOrder] = {}


def register_queue_order(name: str) -> Callable[[QueueOrder], QueueOrder]:
    """Decorator adding an order to ``QUEUE_ORDERS``; a name already taken raises ``ValueError``."""

    def add(order: QueueOrder) -> QueueOrder:
        if name in QUEUE_ORDERS:
            raise ValueError(f"queue order {name!r} is already registered")
        QUEUE_ORDERS[name] = order
        return order

    return add


def queue_order(name: str) -> QueueOrder:
    """The order registered as ``name``; an unknown name raises ``ValueError`` listing valid ones."""
    try:
        return QUEUE_ORDERS[name]
    except KeyError:
        valid = ", ".join(sorted(QUEUE_ORDERS))
        raise ValueError(f"unknown queue order {name!r}; valid orders: {valid}") from None


def new_start_key() -> int:
    """A random place on the ring of item keys, drawn once per labelling session."""
    return secrets.randbits(RAND_KEY_BITS)


@register_queue_order("random")
def random_order(
    store: Store,
    *,
    where: QueueFilter,
    start_key: int,
    limit: int,
    exclude: Sequence[int],
) -> list[int]:
    """Raised-priority items first, then the store's ring of random keys walked from ``start_key``.

    Each session starts at its own key, so two annotators rarely see the same item at once.
    """
    return store.queue_ids(start_key=start_key, limit=limit, where=where, exclude=exclude)
