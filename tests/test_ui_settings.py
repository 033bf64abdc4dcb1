"""The Settings page under AppTest: class management and the workspace facts."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from labelkit.store import Store
from tests.uitools import make_workspace, open_app

PAGE = "labelkit/ui/settings.py"


@pytest.fixture
def store(tmp_path: Path):
    opened = Store.open(make_workspace(tmp_path / "ws", items=3, classes=["a", "b"]))
    yield opened
    opened.close()


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch, store: Store) -> AppTest:
    return open_app(monkeypatch, store.workspace, PAGE)


def names(store: Store) -> list[str]:
    return [c.name for c in store.classes()]


def test_add_a_class(at, store) -> None:
    at.text_input(key="settings_new_name").input("cod").run()
    at.button(key="settings_add").click().run()
    assert names(store) == ["a", "b", "cod"]
    assert at.success[0].value == "Added class cod"
    assert at.text_input(key="settings_new_name").value == ""
    assert not at.exception


def test_a_duplicate_class_name_is_refused_with_a_message(at, store) -> None:
    at.text_input(key="settings_new_name").input("A").run()
    at.button(key="settings_add").click().run()
    assert "already exists" in at.error[0].value
    assert names(store) == ["a", "b"]


def test_rename_a_class(at, store) -> None:
    a = store.class_by_name("a").id
    at.text_input(key=f"settings_name_{a}").input("salmon").run()
    at.button(key=f"settings_rename_{a}").click().run()
    assert names(store) == ["salmon", "b"]
    assert not at.exception


def test_move_a_class_down_and_set_its_key(at, store) -> None:
    a = store.class_by_name("a").id
    at.button(key=f"settings_down_{a}").click().run()
    assert names(store) == ["b", "a"]
    at.selectbox(key=f"settings_key_{a}").set_value("z").run()
    assert store.class_by_name("a").shortcut == "z"
    # A key another class holds is not offered (the store would refuse it).
    offered = at.selectbox(key=f"settings_key_{a}").options
    assert "key z" in offered
    assert f"key {store.class_by_name('b').shortcut}" not in offered
    assert not at.exception


def test_a_class_in_use_is_not_deleted_without_a_choice(at, store) -> None:
    a = store.class_by_name("a").id
    item = store.queue_ids(start_key=0, limit=1)[0]
    store.label(item, a, annotator="ana")
    at.run()
    at.selectbox(key="settings_delete").set_value(a).run()
    at.button(key="settings_delete_button").click().run()
    assert "choose a class to move them to" in at.error[0].value
    assert names(store) == ["a", "b"]
    assert store.current_label(item).class_id == a
    assert not at.exception


def test_deleting_a_class_moves_its_labels_to_the_chosen_class(at, store) -> None:
    a, b = store.class_by_name("a").id, store.class_by_name("b").id
    item = store.queue_ids(start_key=0, limit=1)[0]
    store.label(item, a, annotator="ana")
    at.run()
    at.selectbox(key="settings_delete").set_value(a).run()
    at.selectbox(key="settings_move_to").set_value(b).run()
    at.button(key="settings_delete_button").click().run()
    assert names(store) == ["b"]
    assert store.current_label(item).class_id == b
    assert "moved 1 label" in at.success[0].value


def test_deleting_a_class_can_leave_its_items_unlabelled_when_asked(at, store) -> None:
    a = store.class_by_name("a").id
    item = store.queue_ids(start_key=0, limit=1)[0]
    store.label(item, a, annotator="ana")
    at.run()
    at.selectbox(key="settings_delete").set_value(a).run()
    at.selectbox(key="settings_move_to").set_value("leave them unlabelled").run()
    at.button(key="settings_delete_button").click().run()
    assert names(store) == ["b"]
    assert store.current_label(item) is None
    assert not at.exception


def test_workspace_facts_are_shown(at, store) -> None:
    facts = dict(at.dataframe[-1].value.itertuples(index=False))
    assert facts["folder"] == str(store.workspace.root)
    assert facts["dialect"] == "sqlite"
    assert facts["items (all)"] == "3"
