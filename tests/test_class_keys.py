"""Default class keys: a class named by a digit gets that digit's key; Settings still overrides."""

from __future__ import annotations

import pytest

from labelkit.demo import DIGIT_CLASSES
from labelkit.store import Store, StoreError
from labelkit.store.store import default_shortcut


def test_the_demo_digits_are_on_their_own_keys(store: Store) -> None:
    infos = store.ensure_classes(DIGIT_CLASSES)
    assert [(c.name, c.shortcut) for c in infos] == [(str(d), str(d)) for d in range(10)]


def test_a_named_class_before_a_digit_class_leaves_the_digit_s_key_free(store: Store) -> None:
    infos = store.ensure_classes(["cat", "1", "dog", "2"])
    assert [c.shortcut for c in infos] == ["3", "1", "4", "2"]


def test_a_digit_class_whose_key_is_taken_gets_the_first_free_key(store: Store) -> None:
    store.add_class("cat", shortcut="7")
    assert store.add_class("7").shortcut == "1"


def test_settings_still_move_a_digit_class_to_another_key(store: Store) -> None:
    three = store.ensure_classes(["3"])[0]
    store.set_shortcut(three.id, "z")
    assert store.class_by_name("3").shortcut == "z"
    with pytest.raises(StoreError, match="already used"):
        store.add_class("x", shortcut="z")


@pytest.mark.parametrize(
    ("name", "taken", "reserved", "key"),
    [
        (" 5 ", set(), (), "5"),  # the stored name is stripped the same way
        ("5", {"5"}, (), "1"),
        ("a", set(), {"1", "2"}, "3"),  # single letters are not digits: the first free key
        ("10", set(), (), "1"),
    ],
)
def test_default_shortcut(name: str, taken: set[str], reserved: tuple[str, ...], key: str) -> None:
    assert default_shortcut(name, taken, reserved) == key
