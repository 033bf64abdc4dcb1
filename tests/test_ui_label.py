"""The Label page under AppTest: the labeller's events label, skip and undo; grid labelling, filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from labelkit.store import QueueFilter, Store
from labelkit.ui.labeller import LABELLER_KEY
from tests.uitools import make_workspace, open_app

PAGE = "labelkit/ui/label.py"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(make_workspace(tmp_path / "ws", items=5, classes=["a", "b"]))
    yield opened
    opened.close()


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch, store: Store) -> AppTest:
    app = open_app(monkeypatch, store.workspace, PAGE)
    app.text_input(key="label_annotator_input").input("ana").run()
    return app


def labeller(at: AppTest) -> dict[str, Any]:
    """The data the page gave the browser's labeller on its last run."""
    (element,) = at.get("bidi_component")
    assert element.key == LABELLER_KEY
    return json.loads(element.proto.json)


def shown(at: AppTest) -> int | None:
    """The item the labeller shows first (the one on screen once it has drawn)."""
    items = labeller(at)["items"]
    return items[0]["id"] if items else None


class Browser:
    """What the labeller's JavaScript sends: events with increasing sequence numbers, all those
    not acknowledged in every update."""

    def __init__(self, at: AppTest, client: str = "client-test-1") -> None:
        self.at, self.client, self.seq, self.acked, self.sent = at, client, 0, 0, 0
        self.outbox: list[dict[str, Any]] = []
        self.labels: list[dict[str, Any]] = []

    def _send(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if event is not None:
            self.seq += 1
            self.outbox.append({"seq": self.seq, **event})
        self.sent += 1
        update = {
            "client": self.client,
            "base": self.acked,
            "events": self.outbox,
            "have": [],
            "n": self.sent,
        }
        self.at.session_state[LABELLER_KEY] = {"update": update}
        self.at.run()
        data = labeller(self.at)
        assert data["ack"]["client"] == self.client and data["ack"]["n"] == self.sent
        self.acked = data["ack"]["seq"]
        self.outbox = [e for e in self.outbox if e["seq"] > self.acked]
        return data

    def label(self, item: int, class_id: int) -> dict[str, Any]:
        self.labels.append({"item": item, "seq": self.seq + 1})
        return self._send({"kind": "label", "item_id": item, "class_id": class_id})

    def skip(self, item: int) -> dict[str, Any]:
        return self._send({"kind": "skip", "item_id": item})

    def undo(self) -> dict[str, Any]:
        last = self.labels.pop()
        return self._send({"kind": "undo", "item_id": last["item"], "target": last["seq"]})

    def resend(self) -> dict[str, Any]:
        return self._send()


def test_a_label_event_writes_a_human_label_by_the_annotator_on_its_item(at, store) -> None:
    item = shown(at)
    data = Browser(at).label(item, store.class_by_name("b").id)
    current = store.current_label(item)
    assert current is not None
    assert (current.class_id, current.source, current.annotator) == (
        store.class_by_name("b").id,
        "human",
        "ana",
    )
    assert data["ack"]["seq"] == 1
    assert item not in [i["id"] for i in data["items"]]
    assert "1 of 5 items labelled" in at.sidebar.get("progress")[0].proto.text
    assert not at.exception


def test_the_labeller_gets_the_class_keys_and_every_queued_image(at, store) -> None:
    data = labeller(at)
    assert data["classes"] == [{"id": c.id, "name": c.name, "key": c.shortcut} for c in store.classes()]
    assert len(data["items"]) == 5
    assert all(i["src"].startswith("data:image/png;base64,") for i in data["items"])
    assert data["ready"] and data["ack"] is None and data["model"] is None


def test_images_the_browser_holds_are_not_sent_again(at, store) -> None:
    ids = [i["id"] for i in labeller(at)["items"]]
    update = {"client": "client-test-1", "base": 0, "events": [], "have": ids[:3], "n": 1}
    at.session_state[LABELLER_KEY] = {"update": update}
    at.run()
    sent = {i["id"]: "src" in i for i in labeller(at)["items"]}
    assert sent == {i: i not in ids[:3] for i in ids}


def test_a_repeated_update_labels_once(at, store) -> None:
    browser = Browser(at)
    item = shown(at)
    browser.label(item, store.class_by_name("a").id)
    # the acknowledgement was lost: the browser sends the same event again
    browser.outbox = [{"seq": 1, "kind": "label", "item_id": item, "class_id": store.class_by_name("a").id}]
    browser.acked = 0
    data = browser.resend()
    assert data["ack"]["seq"] == 1
    assert len(store.annotations()) == 1
    assert not at.exception


def test_skip_moves_past_the_item_and_writes_nothing(at, store) -> None:
    first = shown(at)
    data = Browser(at).skip(first)
    assert first not in [i["id"] for i in data["items"]] and len(data["items"]) == 4
    assert store.annotations().empty
    assert not at.exception


def test_undo_goes_back_two_labels_in_two_steps(at, store) -> None:
    # random order: cold_start keeps its ranked batch, which an undone item rejoins only when re-ranked
    at.selectbox(key="label_order").select("random").run()
    browser = Browser(at)
    first = shown(at)
    browser.label(first, store.class_by_name("a").id)
    second = shown(at)
    browser.label(second, store.class_by_name("b").id)
    data = browser.undo()
    assert store.current_label(second) is None
    assert store.current_label(first).class_id == store.class_by_name("a").id
    assert second in [i["id"] for i in data["items"]]
    data = browser.undo()
    assert store.current_label(first) is None
    assert {first, second} <= {i["id"] for i in data["items"]}
    assert data["rejected"] == []
    assert not at.exception


def test_undo_after_someone_else_relabelled_reports_it_and_keeps_their_label(at, store) -> None:
    browser = Browser(at)
    item = shown(at)
    browser.label(item, store.class_by_name("a").id)
    store.label(item, store.class_by_name("b").id, annotator="bob")
    data = browser.undo()
    (rejected,) = data["rejected"]
    assert rejected["seq"] == 2 and "labelled again" in rejected["error"]
    assert store.current_label(item).annotator == "bob"
    assert not at.exception


def test_labelling_needs_an_annotator_name(at, store) -> None:
    at.text_input(key="label_annotator_input").input("").run()
    assert "annotator" in at.warning[0].value
    assert labeller(at)["ready"] is False
    # a label sent anyway (the browser refuses it first) is refused, and says why
    data = Browser(at).label(shown(at), store.class_by_name("a").id)
    assert "annotator" in data["rejected"][0]["error"]
    assert store.annotations().empty


def test_grid_assigns_one_class_to_the_selected_items_in_one_step(at, store) -> None:
    at.radio(key="label_mode").set_value("Grid").run()
    ticks = at.checkbox
    assert len(ticks) == 5
    picked = [int(t.key.removeprefix("label_pick_")) for t in ticks[:2]]
    for tick in ticks[:2]:
        tick.check()
    at.selectbox(key="label_grid_class").set_value(store.class_by_name("b").id)
    at.run()
    at.button(key="label_grid_assign").click().run()
    labelled = store.queue_ids(start_key=0, limit=10, where=QueueFilter(labeled=True))
    assert sorted(labelled) == sorted(picked)
    assert all(store.current_label(i).class_id == store.class_by_name("b").id for i in picked)
    assert at.session_state["label_undo"] == [[a for a in store.annotations()["id"]]]
    assert "on 2 items" in at.success[0].value
    assert not at.exception


def test_class_filter_shows_only_items_of_that_class(at, store) -> None:
    items = store.queue_ids(start_key=0, limit=5)
    a, b = store.class_by_name("a").id, store.class_by_name("b").id
    store.label_many(items[:2], a, annotator="bob")
    store.label(items[2], b, annotator="bob")
    at.radio(key="label_status").set_value("Labelled").run()
    at.selectbox(key="label_class").set_value(b).run()
    (only,) = labeller(at)["items"]
    assert only["id"] == items[2]
    assert only["now"] == "Now labelled b (human, by bob)"
    data = Browser(at).skip(items[2])
    assert data["items"] == [] and data["empty"]
    assert [b.label for b in at.button] == ["Start over with the skipped items"]
    assert not at.exception


def test_grid_pages_through_the_queue(monkeypatch, tmp_path) -> None:
    workspace = make_workspace(tmp_path / "big", items=30, classes=["a"])
    at = open_app(monkeypatch, workspace, PAGE)
    at.radio(key="label_mode").set_value("Grid").run()
    first = {t.key for t in at.checkbox}
    assert len(first) == 24
    assert at.button(key="label_grid_prev").disabled
    at.button(key="label_grid_next").click().run()
    second = {t.key for t in at.checkbox}
    assert len(second) == 6
    assert not first & second
    assert at.button(key="label_grid_next").disabled
    assert not at.exception


def test_grid_with_an_uncertainty_order_proposes_a_diverse_uncertain_batch(monkeypatch, tmp_path) -> None:
    import numpy as np

    from tests.uitools import add_model_version

    workspace = make_workspace(tmp_path / "big", items=60, classes=["a", "b"])
    store = Store.open(workspace)
    ids = store.queue_ids(start_key=0, limit=60)
    # 20 near-copies on the decision boundary, 40 items spread over the confident range.
    first = np.concatenate([0.5 + np.linspace(0, 0.002, 20), np.linspace(0.6, 0.99, 40)])
    add_model_version(store, ids, np.column_stack([first, 1 - first]))
    copies = set(ids[:20])
    at = open_app(monkeypatch, workspace, PAGE)
    at.radio(key="label_mode").set_value("Grid").run()
    assert at.session_state["label_order"] == "margin"
    page = [int(t.key.removeprefix("label_pick_")) for t in at.checkbox]
    # by margin alone the 24 thumbnails would hold all 20 near-copies
    assert len(page) == 24 and len(copies & set(page)) <= 3
    assert any("cluster_uncertain rather than margin" in c.value for c in at.caption)
    assert not at.exception


def test_source_filter_shows_only_items_labelled_by_that_source(at, store) -> None:
    items = store.queue_ids(start_key=0, limit=5)
    a = store.class_by_name("a").id
    store.label(items[0], a, annotator="bob")
    store.label(items[1], a, annotator="import", source="imported")
    at.radio(key="label_status").set_value("Labelled").run()
    at.selectbox(key="label_source").set_value("imported").run()
    assert [i["id"] for i in labeller(at)["items"]] == [items[1]]
    assert Browser(at).skip(items[1])["items"] == []


def test_active_order_shows_the_model_s_most_uncertain_item_with_the_reason(monkeypatch, store) -> None:
    from tests.uitools import add_model_version

    ids = store.queue_ids(start_key=0, limit=5)
    probs = [[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05]]
    add_model_version(store, ids, probs)
    at = open_app(monkeypatch, store.workspace, PAGE)  # the default order is margin
    first = labeller(at)["items"][0]
    assert first["id"] == ids[1]
    assert first["why"] == "margin 0.00 between 0 and 1 — the model can't decide"
    at.selectbox(key="label_order").select("random").run()
    assert all(i["why"] is None for i in labeller(at)["items"])
    assert not at.exception


def test_the_model_s_top_three_come_with_each_image(monkeypatch, tmp_path) -> None:
    from tests.uitools import add_model_version

    workspace = make_workspace(tmp_path / "three", items=3, classes=["a", "b", "c", "d"])
    store = Store.open(workspace)
    ids = store.queue_ids(start_key=0, limit=3)
    add_model_version(store, ids, [[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.4, 0.1]])
    at = open_app(monkeypatch, workspace, PAGE)
    data = labeller(at)
    assert data["model"] == f"Model v{store.versions.latest().id}"
    top = {i["id"]: [(t["name"], round(t["confidence"], 2)) for t in i["top"]] for i in data["items"]}
    assert top[ids[0]] == [("b", 0.6), ("c", 0.2), ("a", 0.1)]
    assert top[ids[2]][0] == ("c", 0.4)
    # accepting the guess is a label of the top class, which the browser sends as any other
    Browser(at).label(ids[0], store.class_by_name("b").id)
    assert store.current_label(ids[0]).class_id == store.class_by_name("b").id
    store.close()
    assert not at.exception
