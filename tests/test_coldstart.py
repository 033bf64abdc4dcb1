"""Cold start before any model: raw-pixel embeddings, their cache, and the cold_start queue order,
on a workspace of three kinds of image that look nothing alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelkit.coldstart import ensure_cold_start, load_cold_start, pixel_embeddings
from labelkit.importer import import_path
from labelkit.queue import queue_order, random_order, reason
from labelkit.store import QueueFilter, Store

UNLABELLED = QueueFilter(labeled=False)
KINDS = ("black", "white", "striped")
SIDE = 24


def _image(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if kind == "black":
        pixels = np.zeros((SIDE, SIDE))
    elif kind == "white":
        pixels = np.full((SIDE, SIDE), 255.0)
    else:
        pixels = np.tile((np.arange(SIDE) // 3 % 2) * 255.0, (SIDE, 1))
    # A little noise makes every file distinct (import drops duplicates) without changing its kind.
    noisy = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8))


def _write(folder: Path, kinds: tuple[str, ...], per_kind: int, first_seed: int = 0) -> None:
    folder.mkdir(parents=True)
    for kind in kinds:
        for i in range(per_kind):
            _image(kind, first_seed + 100 * KINDS.index(kind) + i).save(folder / f"{kind}-{i}.png")


@pytest.fixture
def kind_of(store: Store, tmp_path: Path) -> dict[int, str]:
    """Item id → kind, for 10 black, 10 white and 10 striped squares imported into ``store``."""
    _write(tmp_path / "kinds", KINDS, 10)
    import_path(store, tmp_path / "kinds")
    return _kinds(store)


def _kinds(store: Store) -> dict[int, str]:
    table = store.item_table()
    return {
        int(i): name.split("-")[0] for i, name in zip(table["item_id"], table["original_name"], strict=True)
    }


def test_embeddings_are_unit_rows_one_per_item(store: Store, kind_of: dict[int, str]) -> None:
    ids, emb = pixel_embeddings(store, dim=8)
    assert sorted(ids.tolist()) == sorted(kind_of)
    assert emb.shape == (30, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_the_first_three_picks_one_at_a_time_cover_the_three_kinds(
    store: Store, kind_of: dict[int, str]
) -> None:
    # The Label page asks for one item at a time, passing the items it has shown as ``exclude``.
    order = queue_order("cold_start")
    seen: list[int] = []
    for _ in range(3):
        seen += order(store, where=UNLABELLED, start_key=7, limit=1, exclude=seen)
    assert sorted(kind_of[i] for i in seen) == sorted(KINDS)
    assert "typical of a group" in (reason("cold_start", seen[0]) or "")


def test_three_picks_in_one_call_cover_the_three_kinds(store: Store, kind_of: dict[int, str]) -> None:
    picks = queue_order("cold_start")(store, where=UNLABELLED, start_key=3, limit=3, exclude=())
    assert sorted(kind_of[i] for i in picks) == sorted(KINDS)


def test_labelled_kinds_steer_the_next_picks_to_the_others(store: Store, kind_of: dict[int, str]) -> None:
    store.ensure_classes(["dark", "light"])
    dark, light = store.classes()
    store.label_many([i for i, k in kind_of.items() if k == "black"][:2], dark.id, annotator="t")
    store.label_many([i for i, k in kind_of.items() if k == "white"][:2], light.id, annotator="t")
    first = queue_order("cold_start")(store, where=UNLABELLED, start_key=5, limit=1, exclude=())
    assert kind_of[first[0]] == "striped"


def test_the_cache_is_reused_until_items_are_imported(
    store: Store, kind_of: dict[int, str], tmp_path: Path
) -> None:
    folder = ensure_cold_start(store)
    before = folder.stat()
    assert ensure_cold_start(store) == folder
    after = folder.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    _write(tmp_path / "more", ("white",), 3, first_seed=1000)
    import_path(store, tmp_path / "more")
    ids, emb = load_cold_start(ensure_cold_start(store))
    assert sorted(ids.tolist()) == sorted(_kinds(store))
    assert len(ids) == 33 == len(emb)


def test_an_unreadable_file_is_skipped_and_still_reaches_the_queue(
    store: Store, kind_of: dict[int, str]
) -> None:
    broken = next(iter(kind_of))
    row = store.item_table().set_index("item_id").loc[broken]
    store.workspace.path(row["path"]).write_bytes(b"not a png any more")
    ids, _ = pixel_embeddings(store)
    assert len(ids) == 29 and broken not in ids
    out = queue_order("cold_start")(store, where=UNLABELLED, start_key=1, limit=30, exclude=())
    assert sorted(out) == sorted(kind_of)
    assert out[-1] == broken  # not ranked: the ring supplies it after the ranked items


def test_exclude_labelled_and_raised_priority_are_honoured(store: Store, kind_of: dict[int, str]) -> None:
    order = queue_order("cold_start")
    first = order(store, where=UNLABELLED, start_key=2, limit=5, exclude=())
    store.ensure_classes(["a"])
    store.label(first[1], store.classes()[0].id, annotator="t")
    again = order(store, where=UNLABELLED, start_key=2, limit=5, exclude=[first[0]])
    assert first[0] not in again and first[1] not in again
    assert again[:3] == first[2:]  # the batch ranked once is walked on

    raised = next(i for i in kind_of if i not in first)
    store.set_priority([raised], 1)
    assert order(store, where=UNLABELLED, start_key=2, limit=2, exclude=[first[0]])[0] == raised


def test_other_filters_walk_the_random_ring(store: Store, kind_of: dict[int, str]) -> None:
    store.ensure_classes(["a"])
    store.label_many(list(kind_of)[:4], store.classes()[0].id, annotator="t")
    labelled = QueueFilter(labeled=True)
    ring = random_order(store, where=labelled, start_key=9, limit=4, exclude=())
    assert queue_order("cold_start")(store, where=labelled, start_key=9, limit=4, exclude=()) == ring
