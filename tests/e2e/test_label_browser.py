"""The served app in headless Chromium: keys on the Label page's labeller store labels, each on the
image that was on screen when its key went down, however fast they come."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelkit.demo import build_demo
from labelkit.store import Store
from labelkit.workspace import Workspace
from tests.e2e.labeller_drive import digit_keys, open_labeller, press_keys, verdict, wait_saved
from tests.served import CHROMIUM, chromium, served_app
from tests.uitools import add_model_version, make_workspace

pytestmark = pytest.mark.e2e


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("LABELKIT_REQUIRE_E2E"):
            pytest.fail(f"LABELKIT_REQUIRE_E2E is set but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing (scripts/ensure-chromium installs Debian's chromium)")


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[str, Workspace]]:
    _need_chromium()
    workspace = make_workspace(tmp_path / "ws", items=5, classes=["a", "b"])
    with served_app(workspace.root, tmp_path / "streamlit.log") as base:
        yield base, workspace


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Workspace]]:
    _need_chromium()
    workspace = Workspace.resolve(tmp_path / "demo").ensure()
    store = Store.open(workspace)
    try:
        build_demo(store)  # the 1,797 digits of `make run`, classes "0".."9" on keys 0..9
    finally:
        store.close()
    with served_app(workspace.root, tmp_path / "streamlit.log") as base:
        yield base, workspace


def test_pressing_1_stores_class_a_on_the_image_shown_and_says_saved(small: tuple[str, Workspace]) -> None:
    base, workspace = small
    with chromium() as browser:
        page = browser.new_page()
        open_labeller(page, base)
        presses = press_keys(page, ["1"], interval_ms=0)
        assert wait_saved(page, timeout_s=30), "the label was not acknowledged"
        page.get_by_text("Saved ✓").wait_for(timeout=10_000)
    assert verdict(workspace, presses, since_id=0) | {"presses": 1} == {
        "presses": 1,
        "labels": 1,
        "misapplied": 0,
        "lost": 0,
        "unbound": 0,
        "distinct_items": 1,
        "by_another_annotator": 0,
    }


def test_40_fast_keys_each_land_once_on_the_image_that_was_shown(demo: tuple[str, Workspace]) -> None:
    base, workspace = demo
    with chromium() as browser:
        page = browser.new_page()
        open_labeller(page, base)
        presses = press_keys(page, digit_keys(40, seed=1), interval_ms=20)
        assert wait_saved(page), "events were still unacknowledged after 120 s"
        result = verdict(workspace, presses, since_id=0)
    assert result["presses"] == 40
    assert (result["misapplied"], result["lost"], result["unbound"]) == (0, 0, 0), result
    assert result["labels"] == result["distinct_items"] == 40


def test_events_pressed_offline_show_as_pending_and_a_reload_replays_them_once(
    demo: tuple[str, Workspace],
) -> None:
    """Five labels saved, then the link to the server cut (the labeller's updates go nowhere) for
    five more: they show as pending, and the reloaded page sends them from sessionStorage."""
    base, workspace = demo
    with chromium() as browser:
        page = browser.new_page()
        open_labeller(page, base)
        keys = digit_keys(10, seed=2)
        saved = press_keys(page, keys[:5], interval_ms=20)
        assert wait_saved(page)
        page.evaluate("() => { window.__labeller.setState = null; }")
        offline = press_keys(page, keys[5:], interval_ms=20)[5:]
        page.get_by_text("Saving… 5 pending").wait_for(timeout=10_000)
        assert verdict(workspace, saved, since_id=0)["labels"] == 5
        page.reload()
        page.wait_for_function("() => window.__labeller && window.__labeller.current", timeout=60_000)
        assert wait_saved(page), "the replayed events were not acknowledged"
        result = verdict(workspace, saved + offline, since_id=0)
    assert (result["misapplied"], result["lost"], result["labels"]) == (0, 0, 10), result


def test_enter_accepts_the_model_s_guess_backspace_undoes_and_right_skips(tmp_path: Path) -> None:
    _need_chromium()
    workspace = make_workspace(tmp_path / "ws", items=5, classes=["a", "b"])
    store = Store.open(workspace)
    ids = store.queue_ids(start_key=0, limit=5)
    probs = [[0.2, 0.8], [0.5, 0.5], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]
    add_model_version(store, ids, probs)
    top = {i: "b" if p[1] > p[0] else "a" for i, p in zip(ids, probs, strict=True)}
    with served_app(workspace.root, tmp_path / "streamlit.log") as base, chromium() as browser:
        page = browser.new_page()
        open_labeller(page, base)
        page.get_by_text("suggests (Enter accepts)").wait_for(timeout=10_000)
        accepted = press_keys(page, ["Enter"], interval_ms=0)[0].item_id
        skipped = press_keys(page, ["ArrowRight"], interval_ms=0)[1].item_id
        assert skipped != accepted
        undone = press_keys(page, ["2", "Backspace"], interval_ms=0)[2].item_id
        assert wait_saved(page, timeout_s=30)
        shown = page.evaluate("() => window.__labeller.current.id")
    assert shown == undone  # the undone item is back on screen
    assert store.current_label(accepted).class_id == store.class_by_name(top[accepted]).id
    assert store.current_label(undone) is None and store.current_label(skipped) is None
    assert len(store.annotations()) == 3  # the accepted label, the label of "2" and its undo
    store.close()


def test_a_duplicated_tab_labels_as_another_client(demo: tuple[str, Workspace]) -> None:
    """A duplicated tab starts with a copy of the first tab's sessionStorage (its client id and
    sequence numbers); both tabs keep labelling, and every label of both lands."""
    base, workspace = demo
    with chromium() as browser:
        context = browser.new_context()
        first = context.new_page()
        open_labeller(first, base)
        presses = press_keys(first, digit_keys(3, seed=3), interval_ms=20)
        assert wait_saved(first)
        copied = first.evaluate("() => window.sessionStorage.getItem('labelkit.labeller')")
        second = context.new_page()
        second.add_init_script(f"window.sessionStorage.setItem('labelkit.labeller', {copied!r})")
        open_labeller(second, base)
        first.bring_to_front()
        presses = press_keys(first, digit_keys(3, seed=4), interval_ms=20)  # all six of the first tab
        second.bring_to_front()
        presses += press_keys(second, digit_keys(3, seed=5), interval_ms=20)
        assert wait_saved(first) and wait_saved(second)
        clients = {p.evaluate("() => window.__labeller.client") for p in (first, second)}
        result = verdict(workspace, presses, since_id=0)
    assert len(clients) == 2
    assert (result["misapplied"], result["lost"], result["labels"]) == (0, 0, 9), result
