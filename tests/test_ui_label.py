"""The Label page under AppTest: keys label and advance, skip, undo, grid labelling, filters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from labelkit.store import QueueFilter, Store
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


def shown(at: AppTest) -> int:
    return at.session_state["label_current"]


def press(at: AppTest, store: Store, name: str) -> None:
    at.button(key=f"label_class_{store.class_by_name(name).id}").click().run()


def test_class_button_writes_a_human_label_by_the_annotator_and_then_says_saved(at, store) -> None:
    item = shown(at)
    press(at, store, "b")
    current = store.current_label(item)
    assert current is not None
    assert (current.class_id, current.source, current.annotator) == (
        store.class_by_name("b").id,
        "human",
        "ana",
    )
    assert [s.value for s in at.success] == ["Saved ✓ b"]
    assert shown(at) != item
    assert "1 of 5 items labelled" in at.sidebar.get("progress")[0].proto.text
    assert not at.exception


def test_class_buttons_carry_the_class_shortcut_keys(at, store) -> None:
    for label in store.classes():
        assert at.button(key=f"label_class_{label.id}").proto.shortcut == label.shortcut
    assert at.button(key="label_skip").proto.shortcut == "right"
    assert at.button(key="label_undo_button").proto.shortcut == "backspace"


def test_skip_shows_another_item_and_writes_nothing(at, store) -> None:
    first = shown(at)
    at.button(key="label_skip").click().run()
    assert shown(at) not in (None, first)
    assert store.annotations().empty
    assert not at.exception


def test_undo_goes_back_two_labels_in_two_steps(at, store) -> None:
    first = shown(at)
    press(at, store, "a")
    second = shown(at)
    press(at, store, "b")
    at.button(key="label_undo_button").click().run()
    assert store.current_label(second) is None
    assert store.current_label(first).class_id == store.class_by_name("a").id
    assert shown(at) == second
    at.button(key="label_undo_button").click().run()
    assert store.current_label(first) is None
    assert shown(at) == first
    assert at.button(key="label_undo_button").disabled
    assert not at.exception


def test_undo_after_someone_else_relabelled_warns_and_keeps_their_label(at, store) -> None:
    item = shown(at)
    press(at, store, "a")
    store.label(item, store.class_by_name("b").id, annotator="bob")
    at.button(key="label_undo_button").click().run()
    assert "labelled again" in at.warning[0].value
    assert store.current_label(item).annotator == "bob"
    assert not at.exception


def test_labelling_needs_an_annotator_name(at, store) -> None:
    at.text_input(key="label_annotator_input").input("").run()
    assert "annotator" in at.warning[0].value
    assert all(at.button(key=f"label_class_{c.id}").disabled for c in store.classes())


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
    assert shown(at) == items[2]
    assert "Now labelled b" in at.caption[-1].value
    at.button(key="label_skip").click().run()
    assert shown(at) is None
    assert "No more items" in at.info[0].value
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
    assert shown(at) == items[1]
    at.button(key="label_skip").click().run()
    assert shown(at) is None


def test_active_order_shows_the_model_s_most_uncertain_item_with_the_reason(monkeypatch, store) -> None:
    from tests.uitools import add_model_version, unescaped

    ids = store.queue_ids(start_key=0, limit=5)
    probs = [[0.9, 0.1], [0.5, 0.5], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05]]
    add_model_version(store, ids, probs)
    at = open_app(monkeypatch, store.workspace, PAGE)  # the default order is margin
    assert shown(at) == ids[1]
    captions = [unescaped(c.value) for c in at.caption]
    assert "Why this image: margin 0.00 between 0 and 1 — the model can't decide" in captions, captions
    at.selectbox(key="label_order").select("random").run()
    assert not any(unescaped(c.value).startswith("Why this image") for c in at.caption)
    assert not at.exception
