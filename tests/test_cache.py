"""The image and embedding caches: filled once, reused, resumable after a crash, and a damaged
row is detected and rebuilt from the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelkit import cache
from labelkit.cache import ImageCache, ImageSpec, RowFile
from labelkit.importer import import_path
from labelkit.store import Store
from labelkit.workspace import Workspace


@pytest.fixture
def photos(tmp_path: Path) -> Store:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        # landscape photos with a bright stripe at the centre: a centre crop keeps it
        pixels = rng.integers(0, 60, (60, 90, 3), dtype=np.uint8)
        pixels[:, 40:50] = 250
        Image.fromarray(pixels).save(folder / f"p{i}.jpg", quality=95)
    store = Store.open(Workspace.resolve(tmp_path / "ws"))
    import_path(store, folder)
    return store


def test_crop_keeps_the_aspect_ratio_and_squash_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left quarter
    Image.fromarray(pixels).save(path)
    crop = cache.decode_for(path, ImageSpec(10, 3, "crop"))
    squash = cache.decode_for(path, ImageSpec(10, 3, "squash"))
    assert crop.shape == squash.shape == (3, 10, 10) and crop.dtype == np.uint8
    assert crop.max() < 40  # the centre crop of a 2:1 image drops the band at the side
    assert squash[:, :, 0].min() > 200  # squashing keeps it, thinner
    assert cache.decode_for(path, ImageSpec(8, 1, "crop")).shape == (1, 8, 8)


def test_images_are_decoded_once_and_then_read_from_the_cache(photos: Store, monkeypatch) -> None:
    ids = photos.item_table()["item_id"].tolist()
    spec = ImageSpec(16, 3, "crop")
    decoded: list[Path] = []
    real = cache.decode_for
    monkeypatch.setattr(cache, "decode_for", lambda p, s: decoded.append(p) or real(p, s))
    _, first, failed = ImageCache(photos, spec).load(ids)
    assert not failed and len(decoded) == 6 and first.shape == (6, 3, 16, 16)
    again_ids, again, _ = ImageCache(photos, spec).load(ids[::-1])  # a new process: reopened
    assert len(decoded) == 6  # nothing decoded twice
    assert (again[::-1] == first).all() and again_ids.tolist() == ids[::-1]


def test_a_damaged_row_is_detected_and_rebuilt_from_the_original(photos: Store, monkeypatch) -> None:
    ids = photos.item_table()["item_id"].tolist()
    spec = ImageSpec(16, 3, "crop")
    _, good, _ = ImageCache(photos, spec).load(ids)
    rows = photos.workspace.cache / spec.key / "rows.bin"
    data = bytearray(rows.read_bytes())
    row_bytes = 3 * 16 * 16
    data[2 * row_bytes + 5] ^= 0xFF  # one flipped byte in the third row
    rows.write_bytes(bytes(data))
    decoded: list[Path] = []
    real = cache.decode_for
    monkeypatch.setattr(cache, "decode_for", lambda p, s: decoded.append(p) or real(p, s))
    _, repaired, failed = ImageCache(photos, spec).load(ids)
    assert not failed and len(decoded) == 1 and (repaired == good).all()
    assert not ImageCache(photos, spec).rows.read(ids)[1]  # the rebuilt row now passes its check


def test_rows_past_the_index_are_the_tail_of_a_crash_and_are_cut_off(tmp_path: Path) -> None:
    rows = RowFile(tmp_path / "r", (2,), np.float32)
    rows.append([7, 9], np.array([[1, 2], [3, 4]], np.float32))
    with open(tmp_path / "r" / "rows.bin", "ab") as handle:  # a batch written, its index never
        handle.write(np.ones(2, np.float32).tobytes())
    reopened = RowFile(tmp_path / "r", (2,), np.float32)
    assert len(reopened) == 2 and reopened.missing([7, 9, 11]) == [11]
    reopened.append([11], np.array([[5, 6]], np.float32))
    values, bad = RowFile(tmp_path / "r", (2,), np.float32).read([11, 7])
    assert not bad and values.tolist() == [[5, 6], [1, 2]]
    with pytest.raises(ValueError, match="already cached"):
        reopened.append([7], np.zeros((1, 2), np.float32))


def test_an_unreadable_original_is_reported_not_cached(photos: Store) -> None:
    ids = photos.item_table()["item_id"].tolist()
    broken = photos.workspace.path(photos.item(ids[0]).path)
    broken.write_bytes(b"not a jpeg")
    got, pixels, failed = ImageCache(photos, ImageSpec(16, 3, "crop")).load(ids)
    assert [i for i, _ in failed] == [ids[0]] and got.tolist() == ids[1:] and len(pixels) == 5


def test_embeddings_are_keyed_by_backbone_weights_and_input(photos: Store) -> None:
    from labelkit.backbones import Weights

    images = ImageCache(photos, ImageSpec(16, 3, "crop"))
    a = cache.EmbeddingCache(
        photos, backbone="x", weights=Weights(Path("w"), "file", "1" * 64), images=images, dim=4
    )
    b = cache.EmbeddingCache(
        photos, backbone="x", weights=Weights(Path("w"), "file", "2" * 64), images=images, dim=4
    )
    assert a.key != b.key
