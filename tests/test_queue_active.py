"""Active-learning queue orders: with a model version they propose its most useful unlabelled items,
without one they are the cold-start order; raised-priority items and new imports are never lost."""

from __future__ import annotations

import numpy as np
import pytest

from labelkit.queue import ACTIVE_ORDERS, QUEUE_ORDERS, queue_order, reason
from labelkit.store import QueueFilter, Store
from tests.uitools import add_model_version, add_png_items

UNLABELLED = QueueFilter(labeled=False)


@pytest.fixture
def five(store: Store) -> list[int]:
    store.ensure_classes(["a", "b"])
    return add_png_items(store, 5)


# margins: item0 0.8, item1 0.0 (the boundary), item2 0.4, item3 0.2, item4 0.6
PROBS = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3], [0.6, 0.4], [0.8, 0.2]])


def test_every_active_strategy_is_a_queue_order() -> None:
    assert set(ACTIVE_ORDERS) <= set(QUEUE_ORDERS)


def test_without_a_model_an_active_order_is_the_cold_start_order(store: Store, five: list[int]) -> None:
    cold = queue_order("cold_start")(store, where=UNLABELLED, start_key=123, limit=5, exclude=())
    assert sorted(cold) == sorted(five)
    assert queue_order("margin")(store, where=UNLABELLED, start_key=123, limit=5, exclude=()) == cold
    assert reason("margin", cold[0]) == f"no model yet, so {reason('cold_start', cold[0])}"


def test_margin_order_puts_the_boundary_item_first_and_skips_labelled_and_seen(
    store: Store, five: list[int]
) -> None:
    add_model_version(store, five, PROBS)
    margin = queue_order("margin")
    assert margin(store, where=UNLABELLED, start_key=1, limit=5, exclude=()) == [
        five[i] for i in (1, 3, 2, 4, 0)
    ]
    store.label(five[1], store.classes()[0].id, annotator="t")
    assert margin(store, where=UNLABELLED, start_key=1, limit=2, exclude=[five[3]]) == [five[2], five[4]]
    assert "margin" in (reason("margin", five[2]) or "")


def test_raised_priority_items_come_before_the_strategy_s_picks(store: Store, five: list[int]) -> None:
    add_model_version(store, five, PROBS)
    store.set_priority([five[0]], 1)
    assert queue_order("margin")(store, where=UNLABELLED, start_key=1, limit=2, exclude=()) == [
        five[0],
        five[1],
    ]


def test_items_imported_after_the_model_still_reach_the_queue(store: Store, five: list[int]) -> None:
    add_model_version(store, five, PROBS)
    newer = add_png_items(store, 7)[5:]  # ids of two items the model has not seen
    out = queue_order("entropy")(store, where=UNLABELLED, start_key=1, limit=7, exclude=())
    assert out[:5] == [five[i] for i in (1, 3, 2, 4, 0)]
    assert sorted(out[5:]) == sorted(newer)


def test_class_balance_prefers_the_class_with_fewer_labels(store: Store, five: list[int]) -> None:
    more = add_png_items(store, 8)[5:]
    ids = five + more
    probs = np.array([[0.9, 0.1]] * 4 + [[0.1, 0.9]] + [[0.5, 0.5]] * 3)
    add_model_version(store, ids, probs)
    a = store.classes()[0]
    store.label_many(more, a.id, annotator="t")  # class a has 3 labels, b none
    first = queue_order("class_balance")(store, where=UNLABELLED, start_key=1, limit=1, exclude=())
    assert first == [five[4]]  # the one item predicted b
