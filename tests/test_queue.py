"""Queue orders: the registry fails loudly, and "random" walks the store's ring of random keys."""

from __future__ import annotations

import pytest

from labelkit import queue
from labelkit.queue import RAND_KEY_BITS, new_start_key, queue_order, register_queue_order
from labelkit.store import QueueFilter, Store
from tests.uitools import add_png_items

UNLABELLED = QueueFilter()


def test_unknown_order_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown queue order 'nope'; valid orders: .*random"):
        queue_order("nope")


def test_registering_a_taken_name_raises_and_a_new_name_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "QUEUE_ORDERS", dict(queue.QUEUE_ORDERS))
    with pytest.raises(ValueError, match="already registered"):
        register_queue_order("random")(queue.random_order)

    @register_queue_order("newest")
    def newest(store: Store, *, where: QueueFilter, start_key: int, limit: int, exclude) -> list[int]:
        return []

    assert queue_order("newest") is newest


def test_random_order_from_any_start_is_a_rotation_of_one_ring(store: Store) -> None:
    items = add_png_items(store, 8)
    order = queue_order("random")
    ring = order(store, where=UNLABELLED, start_key=0, limit=100, exclude=())
    assert sorted(ring) == sorted(items)
    # Start keys are random; every one of them must give the same cycle, entered at some point.
    for _ in range(5):
        walk = order(store, where=UNLABELLED, start_key=new_start_key(), limit=100, exclude=())
        first = ring.index(walk[0])
        assert walk == ring[first:] + ring[:first]


def test_random_order_skips_excluded_and_labelled_items_and_respects_limit(store: Store) -> None:
    items = add_png_items(store, 6)
    label = store.add_class("a")
    store.label(items[0], label.id, annotator="ana")
    order = queue_order("random")
    walk = order(store, where=UNLABELLED, start_key=0, limit=100, exclude=[items[1]])
    assert sorted(walk) == sorted(items[2:])
    assert len(order(store, where=UNLABELLED, start_key=0, limit=2, exclude=())) == 2
    labelled = order(store, where=QueueFilter(class_id=label.id), start_key=0, limit=100, exclude=())
    assert labelled == [items[0]]


def test_raised_priority_comes_before_the_ring(store: Store) -> None:
    items = add_png_items(store, 5)
    store.set_priority([items[3]], 1)
    walk = queue_order("random")(store, where=UNLABELLED, start_key=new_start_key(), limit=5, exclude=())
    assert walk[0] == items[3]


def test_start_keys_lie_in_the_range_of_item_keys() -> None:
    keys = [new_start_key() for _ in range(200)]
    assert all(0 <= k < 2**RAND_KEY_BITS for k in keys)
    assert len(set(keys)) == len(keys)
