"""The Review page under AppTest (accepting, rejecting and undoing pseudo-labels; disagreements) and
the latest model's prediction on the Label page. Model versions are recorded directly in the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from labelkit.store import Store
from tests.uitools import add_model_version, make_workspace, open_app, unescaped

PAGE = "labelkit/ui/review.py"
# Probabilities of classes (a, b). u*: unlabelled items; h*: items with a human label (given last).
UNLABELLED = {
    "u0": [0.99, 0.01],
    "u1": [0.75, 0.25],
    "u2": [0.70, 0.30],
    "u3": [0.10, 0.90],
    "u4": [0.5, 0.5],
}
LABELLED = {
    "h0": ([0.95, 0.05], "a"),
    "h1": ([0.90, 0.10], "a"),
    "h2": ([0.02, 0.98], "a"),  # the model is sure this "a" is a b
    "h3": ([0.10, 0.90], "b"),
    "h4": ([0.05, 0.95], "b"),
    "h5": ([0.99, 0.01], "a"),  # confident, but labelled: never a pseudo-label candidate
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(make_workspace(tmp_path / "ws", items=11, classes=["a", "b"]))
    yield opened
    opened.close()


@pytest.fixture
def ids(store: Store) -> dict[str, int]:
    """Item id by name; labels the h* items and records model version 1 over all items."""
    names = [*UNLABELLED, *LABELLED]
    by_name = dict(zip(names, sorted(store.queue_ids(start_key=0, limit=11)), strict=True))
    for name, (_, label) in LABELLED.items():
        store.label(by_name[name], store.class_by_name(label).id, annotator="ana")
    probs = [UNLABELLED[n] if n in UNLABELLED else LABELLED[n][0] for n in names]
    add_model_version(store, [by_name[n] for n in names], probs)
    return by_name


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch, store: Store, ids: dict[str, int]) -> AppTest:
    return open_app(monkeypatch, store.workspace, PAGE)


def pseudo_labels(store: Store) -> dict[int, tuple[int, int]]:
    """Item → (class id, model version) of every pseudo_accepted annotation in the history."""
    history = store.annotations()
    rows = history[history["source"] == "pseudo_accepted"]
    return {int(r.item_id): (int(r.class_id), int(r.model_version_id)) for r in rows.itertuples()}


def grid_order(values: list, columns: int = 6) -> list:
    """Elements of a grid in reading order; AppTest lists them column by column."""
    sizes = [len(range(j, len(values), columns)) for j in range(columns)]
    starts = [sum(sizes[:j]) for j in range(columns)]
    return [values[starts[i % columns] + i // columns] for i in range(len(values))]


def accept_all(at: AppTest, threshold: float, scope: str) -> None:
    at.slider(key="review_threshold").set_value(threshold).run()
    at.radio(key="review_scope").set_value(scope).run()
    at.button(key="review_accept_all").click().run()


def test_without_a_model_the_page_points_to_training(monkeypatch, store) -> None:
    at = open_app(monkeypatch, store.workspace, PAGE)
    assert "No model yet" in at.info[0].value
    assert not at.exception


def test_the_count_follows_the_threshold_and_ignores_labelled_items(at) -> None:
    # Default 0.95: only u0 (h5 at 0.99 is labelled). At 0.75: u0, u1 (exactly 0.75) and u3.
    assert "**1** of 5 unlabelled items" in at.markdown[0].value
    at.slider(key="review_threshold").set_value(0.75).run()
    assert "**3** of 5 unlabelled items" in at.markdown[0].value
    assert not at.exception


def test_accept_all_classes_above_threshold_confirms_the_count_then_writes_pseudo_labels(
    at, store, ids
) -> None:
    accept_all(at, 0.75, "all classes")
    assert pseudo_labels(store) == {}  # nothing before the confirmation
    assert unescaped(at.warning[0].value) == "Accept 3 predictions as labels (a: 2, b: 1)?"
    at.button(key="review_confirm_yes").click().run()
    a, b = store.class_by_name("a").id, store.class_by_name("b").id
    version = store.versions.latest().id
    assert pseudo_labels(store) == {ids["u0"]: (a, version), ids["u1"]: (a, version), ids["u3"]: (b, version)}
    assert store.current_label(ids["h5"]).source == "human"
    assert unescaped(at.success[0].value) == "Accepted 3 pseudo-labels (a: 2, b: 1)."
    assert "**0** of 2 unlabelled items" in at.markdown[0].value
    assert not at.exception


def test_accept_all_in_this_class_leaves_other_classes_alone(at, store, ids) -> None:
    at.selectbox(key="review_class").set_value(store.class_by_name("b").id).run()
    accept_all(at, 0.75, "this class")
    at.button(key="review_confirm_yes").click().run()
    assert set(pseudo_labels(store)) == {ids["u3"]}
    assert not at.exception


def test_cancel_accepts_nothing(at, store) -> None:
    accept_all(at, 0.75, "all classes")
    at.button(key="review_confirm_no").click().run()
    assert pseudo_labels(store) == {}
    assert at.button(key="review_accept_all")
    assert not at.exception


def test_undo_last_accept_removes_the_pseudo_labels_from_the_current_labels(at, store, ids) -> None:
    accept_all(at, 0.75, "all classes")
    at.button(key="review_confirm_yes").click().run()
    at.button(key="review_undo_button").click().run()
    assert all(store.current_label(ids[n]) is None for n in ("u0", "u1", "u3"))
    assert store.current_label(ids["h0"]).source == "human"
    assert at.button(key="review_undo_button").disabled
    assert not at.exception


def test_accept_selected_labels_only_the_ticked_items(at, store, ids) -> None:
    at.slider(key="review_threshold").set_value(0.75).run()
    at.checkbox(key=f"review_pick_{ids['u1']}").check().run()
    at.button(key="review_accept_selected").click().run()
    assert pseudo_labels(store) == {ids["u1"]: (store.class_by_name("a").id, store.versions.latest().id)}
    assert not at.exception


def test_an_item_labelled_after_the_page_was_drawn_keeps_its_label(at, store, ids) -> None:
    accept_all(at, 0.75, "all classes")
    store.label(ids["u0"], store.class_by_name("b").id, annotator="bob")
    at.button(key="review_confirm_yes").click().run()
    assert set(pseudo_labels(store)) == {ids["u1"], ids["u3"]}
    assert store.current_label(ids["u0"]).annotator == "bob"
    assert not at.exception


def test_reject_puts_the_items_first_in_the_labelling_queue(at, store, ids) -> None:
    at.slider(key="review_threshold").set_value(0.75).run()
    at.checkbox(key=f"review_pick_{ids['u1']}").check().run()
    at.button(key="review_reject_selected").click().run()
    assert store.item(ids["u1"]).priority == 1
    assert store.queue_ids(start_key=0, limit=1) == [ids["u1"]]
    assert pseudo_labels(store) == {}
    assert "come first in the labelling queue" in unescaped(at.success[0].value)
    assert f"review_pick_{ids['u1']}" not in [c.key for c in at.checkbox]
    assert not at.exception


def test_disagreements_list_the_label_the_model_contradicts(at, ids) -> None:
    captions = [unescaped(c) for image in at.image for c in image.captions]
    assert "labelled a (human); model: b 98%" in captions
    assert sum("labelled" in c for c in captions) == 1
    assert not at.exception


def test_too_few_labels_to_check_says_why(monkeypatch, store) -> None:
    items = sorted(store.queue_ids(start_key=0, limit=11))
    store.label(items[0], store.class_by_name("a").id, annotator="ana")
    add_model_version(store, items, [[0.6, 0.4]] * 11)
    at = open_app(monkeypatch, store.workspace, PAGE)
    assert "Cannot check the labels yet" in unescaped(at.info[0].value)
    assert not at.exception


def test_label_page_shows_the_latest_models_prediction_for_the_current_item(monkeypatch, store, ids) -> None:
    import json

    at = open_app(monkeypatch, store.workspace, "labelkit/ui/label.py")
    (labeller,) = at.get("bidi_component")  # the browser's labeller gets each item's top classes
    data = json.loads(labeller.proto.json)
    expected = {ids[n]: top for n, top in (("u0", ("a", 99)), ("u1", ("a", 75)), ("u2", ("a", 70)))}
    expected |= {ids["u3"]: ("b", 90), ids["u4"]: ("a", 50)}
    assert data["model"] == "Model v1"
    got = {i["id"]: (i["top"][0]["name"], round(100 * i["top"][0]["confidence"])) for i in data["items"]}
    assert got == expected
    assert not at.exception


def test_label_page_shows_no_prediction_before_the_first_model(monkeypatch, store) -> None:
    import json

    at = open_app(monkeypatch, store.workspace, "labelkit/ui/label.py")
    data = json.loads(at.get("bidi_component")[0].proto.json)
    assert data["model"] is None and all(i["top"] == [] for i in data["items"])
    assert not at.exception


def test_the_grid_pages_through_a_class_most_confident_first(monkeypatch, tmp_path) -> None:
    store = Store.open(make_workspace(tmp_path / "big", items=30, classes=["a", "b"]))
    items = sorted(store.queue_ids(start_key=0, limit=30))
    confidence = [0.96 + 0.001 * i for i in range(30)]  # item i: 96.0 % + i × 0.1 %
    add_model_version(store, items, [[c, 1 - c] for c in confidence])
    store.close()
    at = open_app(monkeypatch, store.workspace, PAGE)
    first = grid_order([c for image in at.image for c in image.captions])
    assert first == [f"{0.96 + 0.001 * i:.1%}" for i in range(29, 5, -1)]
    assert at.button(key="review_prev").disabled
    at.button(key="review_next").click().run()
    assert [c.key for c in at.checkbox] == [f"review_pick_{items[i]}" for i in range(5, -1, -1)]
    assert at.button(key="review_next").disabled
    assert not at.exception
