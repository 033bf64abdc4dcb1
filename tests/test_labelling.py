"""The labeller's events: applied in order, exactly once per (client, seq), each on the item it names."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from labelkit.labelling import (
    Event,
    EventError,
    EventLedger,
    Lookahead,
    Suggestion,
    Update,
    image_uri,
    lookahead,
    parse_update,
    suggestions,
    top_classes,
)
from labelkit.store import Store, StoreError
from tests.uitools import add_model_version, add_png_items

CLIENT = "client-0001"


@pytest.fixture
def items(store: Store) -> list[int]:
    store.ensure_classes(["a", "b", "c"])
    add_png_items(store, 6)
    return store.queue_ids(start_key=0, limit=6)


def cls(store: Store, name: str) -> int:
    return store.class_by_name(name).id


def label(seq: int, item: int, class_id: int) -> Event:
    return Event(seq=seq, kind="label", item_id=item, class_id=class_id)


def update(*events: Event, base: int = 0, client: str = CLIENT) -> Update:
    return Update(client=client, base=base, events=tuple(sorted(events, key=lambda e: e.seq)))


def current(store: Store) -> dict[int, int]:
    frame = store.current_labels()
    return dict(zip(frame["item_id"], frame["class_id"], strict=True))


def test_each_label_lands_on_the_item_its_event_names(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    a, b = cls(store, "a"), cls(store, "b")
    applied = ledger.apply(update(label(1, items[0], a), label(2, items[1], b)), annotator="ana")
    assert [d.event.seq for d in applied] == [1, 2]
    assert current(store) == {items[0]: a, items[1]: b}
    assert ledger.high_water(CLIENT) == 2
    assert all(r.annotator == "ana" and r.source == "human" for r in map(store.current_label, items[:2]))


def test_a_repeated_update_applies_nothing_again(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    a = cls(store, "a")
    first = update(label(1, items[0], a), label(2, items[1], a))
    ledger.apply(first, annotator="ana")
    # the browser had no acknowledgement yet: it sends both again, with a third
    again = ledger.apply(update(*first.events, label(3, items[2], a)), annotator="ana")
    assert [d.event.seq for d in again] == [3]
    assert len(store.annotations()) == 3


def test_events_out_of_order_wait_for_the_missing_one(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    a, b = cls(store, "a"), cls(store, "b")
    assert ledger.apply(update(label(2, items[1], b), label(3, items[2], a)), annotator="ana") == []
    assert store.annotations().empty
    done = ledger.apply(
        update(label(3, items[2], a), label(1, items[0], a), label(2, items[1], b)), annotator="ana"
    )
    assert [d.event.seq for d in done] == [1, 2, 3]
    assert current(store) == {items[0]: a, items[1]: b, items[2]: a}
    assert store.annotations()["item_id"].tolist() == items[:3]  # in sequence order


def test_replay_after_a_reload_lands_each_label_once(store: Store, items: list[int]) -> None:
    """The page was reloaded after 1–3 reached the server but before its acknowledgement did: the
    browser's kept outbox replays them (a new session, the same ledger) with those that followed."""
    ledger = EventLedger(store)
    a, b = cls(store, "a"), cls(store, "b")
    sent = [label(1, items[0], a), label(2, items[1], b), label(3, items[2], a)]
    ledger.apply(update(*sent), annotator="ana")
    replay = ledger.apply(update(*sent, label(4, items[3], b)), annotator="ana")
    assert [d.event.seq for d in replay] == [4]
    history = store.annotations()
    assert history["item_id"].value_counts().max() == 1
    assert current(store) == {items[0]: a, items[1]: b, items[2]: a, items[3]: b}


def test_a_new_server_process_starts_at_the_client_s_acknowledged_base(
    store: Store, items: list[int]
) -> None:
    a = cls(store, "a")
    EventLedger(store).apply(update(label(1, items[0], a), label(2, items[1], a)), annotator="ana")
    restarted = EventLedger(store)  # knows nothing; the browser was acknowledged up to 2
    done = restarted.apply(update(label(3, items[2], a), base=2), annotator="ana")
    assert [d.event.seq for d in done] == [3]
    assert restarted.high_water(CLIENT) == 3
    assert len(store.annotations()) == 3


def test_clients_have_their_own_sequence_numbers(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    a, b = cls(store, "a"), cls(store, "b")
    ledger.apply(update(label(1, items[0], a)), annotator="ana")
    ledger.apply(update(label(1, items[1], b), client="client-0002"), annotator="bob")
    assert current(store) == {items[0]: a, items[1]: b}


def test_undo_reverts_the_label_its_target_wrote_and_only_once(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    a, b = cls(store, "a"), cls(store, "b")
    store.label(items[0], b, annotator="bob")
    undo = Event(seq=3, kind="undo", item_id=items[0], target=1)
    events = (label(1, items[0], a), label(2, items[1], a), undo)
    done = ledger.apply(update(*events), annotator="ana")
    assert [d.error for d in done] == [None, None, None]
    assert current(store) == {items[0]: b, items[1]: a}  # bob's earlier label is back
    twice = ledger.apply(
        update(Event(seq=4, kind="undo", item_id=items[0], target=1), base=3), annotator="ana"
    )
    assert twice[0].error == "that label is already undone"
    assert current(store) == {items[0]: b, items[1]: a}


def test_undo_naming_another_item_than_its_label_changes_nothing(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    a = cls(store, "a")
    ledger.apply(update(label(1, items[0], a)), annotator="ana")
    done = ledger.apply(
        update(Event(seq=2, kind="undo", item_id=items[1], target=1), base=1), annotator="ana"
    )
    assert done[0].error is not None and "another item" in done[0].error
    assert current(store) == {items[0]: a}


def test_skips_write_nothing_and_a_refused_label_is_reported_not_retried(
    store: Store, items: list[int]
) -> None:
    ledger = EventLedger(store)
    a = cls(store, "a")
    events = (
        Event(seq=1, kind="skip", item_id=items[0]),
        label(2, 10_000, a),  # no such item
        label(3, items[1], a),
    )
    done = ledger.apply(update(*events), annotator="ana")
    assert [d.error is None for d in done] == [True, False, True]
    assert "no item with id 10000" in (done[1].error or "")
    assert ledger.apply(update(*events), annotator="ana") == []
    assert current(store) == {items[1]: a}


def test_an_empty_annotator_refuses_labels_without_losing_their_place(store: Store, items: list[int]) -> None:
    ledger = EventLedger(store)
    done = ledger.apply(update(label(1, items[0], cls(store, "a"))), annotator=" ")
    assert done[0].error is not None and "annotator" in done[0].error
    assert store.annotations().empty


def test_a_database_failure_leaves_the_event_to_be_retried(
    store: Store, items: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = EventLedger(store)
    a = cls(store, "a")
    real = store.label

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise OSError("database is locked")

    monkeypatch.setattr(store, "label", locked)
    with pytest.raises(OSError):
        ledger.apply(update(label(1, items[0], a)), annotator="ana")
    assert ledger.high_water(CLIENT) == 0
    monkeypatch.setattr(store, "label", real)
    assert [d.event.seq for d in ledger.apply(update(label(1, items[0], a)), annotator="ana")] == [1]
    assert current(store) == {items[0]: a}


def test_concurrent_sessions_of_one_client_apply_each_event_once(store: Store, items: list[int]) -> None:
    """A reload while the old session still runs: two sessions apply the same outbox at once."""
    ledger = EventLedger(store)
    a = cls(store, "a")
    events = update(*(label(i + 1, item, a) for i, item in enumerate(items)))
    threads = [
        threading.Thread(target=ledger.apply, args=(events,), kwargs={"annotator": "ana"}) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.annotations()["item_id"].tolist() == items


def test_parse_update_reads_the_browser_s_state_value() -> None:
    raw = {
        "client": CLIENT,
        "base": 2,
        "events": [
            {"seq": 4, "kind": "undo", "item_id": 7, "target": 3},
            {"seq": 3, "kind": "label", "item_id": 7, "class_id": 1},
        ],
        "have": [7, 8],
        "n": 5,
    }
    parsed = parse_update(raw)
    assert parsed == Update(
        client=CLIENT,
        base=2,
        events=(label(3, 7, 1), Event(seq=4, kind="undo", item_id=7, target=3)),
        have=frozenset({7, 8}),
    )
    assert parse_update(None) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "must be an object"),
        ({"client": "short", "base": 0, "events": []}, "client"),
        ({"client": CLIENT, "base": -1, "events": []}, "base"),
        ({"client": CLIENT, "base": 0, "events": [{"seq": 1, "kind": "eat", "item_id": 1}]}, "kind"),
        ({"client": CLIENT, "base": 0, "events": [{"seq": 1, "kind": "label", "item_id": 1}]}, "class_id"),
        ({"client": CLIENT, "base": 0, "events": [{"seq": 0, "kind": "skip", "item_id": 1}]}, "seq"),
        ({"client": CLIENT, "base": 0, "events": [{"seq": True, "kind": "skip", "item_id": 1}]}, "seq"),
        ({"client": CLIENT, "base": 0, "events": [{"seq": 1, "kind": "undo", "item_id": 1}]}, "target"),
    ],
)
def test_parse_update_refuses_malformed_input(raw: Any, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_update(raw)


def test_top_classes_are_the_most_probable_live_ones_best_first() -> None:
    probs = np.array([0.1, 0.5, 0.15, 0.25])
    names = {10: "a", 11: "b", 13: "d"}  # class 12 was deleted
    assert top_classes(probs, [10, 11, 12, 13], names) == [
        Suggestion(11, "b", 0.5),
        Suggestion(13, "d", 0.25),
        Suggestion(10, "a", 0.1),
    ]
    assert top_classes(probs, [10, 11, 12, 13], names, k=1) == [Suggestion(11, "b", 0.5)]


def test_suggestions_come_from_the_latest_model_version(store: Store, items: list[int]) -> None:
    classes = store.classes()
    assert suggestions(store, None, items, classes) == {}
    add_model_version(store, items[:2], [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    got = suggestions(store, store.versions.latest(), items[:3], classes)
    assert [s.name for s in got[items[0]]] == ["b", "a", "c"]
    assert got[items[1]][0] == Suggestion(classes[0].id, "a", pytest.approx(0.6))
    assert items[2] not in got  # not predicted by that version


def test_image_uri_is_a_png_data_uri_of_the_stored_image(store: Store, items: list[int]) -> None:
    uri = image_uri(str(store.workspace.path(store.item(items[0]).path)))
    assert uri.startswith("data:image/png;base64,")


class Orders:
    """A ranking that can be held back, and the ring, over items 1..N."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ranked = 0
        self.release = threading.Event()
        self.release.set()

    def rank(self, exclude: list[int]) -> list[int]:
        self.release.wait(10)
        self.ranked += 1
        # best first: the highest ids
        return [i for i in range(self.n, 0, -1) if i not in exclude][:6]

    def fill(self, count: int, exclude: list[int]) -> list[int]:
        return [i for i in range(1, self.n + 1) if i not in exclude][:count]


def _settle(state: Lookahead) -> None:
    if state.ranking is not None:
        state.ranking.result(timeout=10)


def test_lookahead_ranks_a_new_queue_at_once_and_serves_it_for_several_runs() -> None:
    orders = Orders(20)
    state, ids = lookahead(None, "q", rank=orders.rank, fill=orders.fill, exclude=[], size=4, low=3)
    assert ids == [20, 19, 18, 17] and orders.ranked == 1
    state, ids = lookahead(state, "q", rank=orders.rank, fill=orders.fill, exclude=[20, 19], size=4, low=3)
    assert ids == [18, 17, 16, 15] and orders.ranked == 1 and state.ranking is None


def test_lookahead_ranks_in_the_background_and_tops_up_from_the_ring_meanwhile() -> None:
    orders = Orders(20)
    state, _ = lookahead(None, "q", rank=orders.rank, fill=orders.fill, exclude=[], size=4, low=3)
    orders.release.clear()  # the next ranking takes its time
    done = [20, 19, 18, 17]
    state, ids = lookahead(state, "q", rank=orders.rank, fill=orders.fill, exclude=done, size=4, low=3)
    # two ranked items left (16, 15), below low: ranking started, the ring fills the rest
    assert ids == [16, 15, 1, 2]
    assert state.ranking is not None and not state.ranking.done()
    orders.release.set()
    _settle(state)
    state, ids = lookahead(state, "q", rank=orders.rank, fill=orders.fill, exclude=[*done, 16], size=4, low=3)
    assert ids == [15, 14, 13, 12] and orders.ranked == 2


def test_lookahead_drops_items_that_left_the_queue_and_starts_over_for_another_queue() -> None:
    orders = Orders(20)
    state, _ = lookahead(None, "q", rank=orders.rank, fill=orders.fill, exclude=[], size=4, low=1)
    state, ids = lookahead(
        state, "q", rank=orders.rank, fill=orders.fill, exclude=[], gone={19}, size=4, low=1
    )
    assert ids == [20, 18, 17, 16]
    state, ids = lookahead(state, "other", rank=orders.rank, fill=orders.fill, exclude=[5], size=2, low=1)
    assert ids == [20, 19] and state.key == "other" and orders.ranked == 2


def test_an_event_is_saved_under_the_annotator_who_pressed_the_key(store: Store, items: list[int]) -> None:
    """After a reload the new session has the default name; the replayed event keeps its own."""
    ledger = EventLedger(store)
    event = Event(seq=1, kind="label", item_id=items[0], class_id=cls(store, "a"), annotator="ana")
    ledger.apply(update(event), annotator="root")
    assert store.current_label(items[0]).annotator == "ana"
    raw = {"client": CLIENT, "base": 0, "events": [{"seq": 1, "kind": "skip", "item_id": 1, "annotator": 5}]}
    with pytest.raises(EventError, match="annotator"):
        parse_update(raw)


def test_a_run_of_labels_is_saved_in_one_transaction(
    store: Store, items: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = EventLedger(store)
    a, b = cls(store, "a"), cls(store, "b")

    def one_by_one(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a run of labels went through Store.label one at a time")

    monkeypatch.setattr(store, "label", one_by_one)
    events = [label(1, items[0], a), label(2, items[1], b), label(3, items[2], a)]
    assert len(ledger.apply(update(*events), annotator="ana")) == 3
    assert current(store) == {items[0]: a, items[1]: b, items[2]: a}


def test_a_failure_inside_a_run_keeps_the_labels_saved_before_it(
    store: Store, items: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is refused as a whole (a missing item), so it goes one by one; the database then
    fails on the third: the first two are recorded as applied and are not written again."""
    ledger = EventLedger(store)
    a = cls(store, "a")
    real, calls = store.label, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "label", flaky)
    events = [label(1, items[0], a), label(2, 10_000, a), label(3, items[1], a)]
    with pytest.raises(OSError):
        ledger.apply(update(*events), annotator="ana")
    assert ledger.high_water(CLIENT) == 2
    monkeypatch.setattr(store, "label", real)
    assert [d.event.seq for d in ledger.apply(update(*events), annotator="ana")] == [3]
    assert store.annotations()["item_id"].tolist() == [items[0], items[1]]


def test_store_label_each_writes_all_in_order_or_nothing(store: Store, items: list[int]) -> None:
    a, b = cls(store, "a"), cls(store, "b")
    with pytest.raises(StoreError, match="no item with id 10000"):
        store.label_each([(items[0], a), (10_000, b)], annotator="ana")
    assert store.annotations().empty
    saved = store.label_each([(items[0], a), (items[1], b), (items[0], b)], annotator="ana")
    assert [(r.item_id, r.class_id) for r in saved] == [(items[0], a), (items[1], b), (items[0], b)]
    assert current(store) == {items[0]: b, items[1]: b}
    assert store.rebuild_current_labels() == 0
