"""Per-workspace caches that make a round cheap: every image decoded once, every embedding computed once.

Both are a ``RowFile``: fixed-size rows appended to one raw file (memory-mapped for reading) and
an index (item id and CRC-32 of each committed row) written atomically after each batch. A crash
between the two leaves rows past the index, which the next open cuts off, so filling resumes
where it stopped and never serves half a batch. A row whose bytes no longer match its CRC (a
damaged disk, a partial write of an old version) is detected on read and rebuilt from the original.

- ``ImageCache``: uint8 (C, S, S) pixels at one input size — resized on the short side and centre
  cropped for photos (``fit="crop"``: the aspect ratio is kept), or squashed (``fit="squash"``:
  small images such as digits, where nothing may be cropped away). Measured (benchmarks/
  bench_photos.py): loading a round from it instead of decoding the originals.
- ``EmbeddingCache``: float32 pooled features of one pretrained backbone, keyed by the backbone's
  name, its weights' sha256 and the input size, so another backbone never reads stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing

from labelkit.atomic import write_atomically
from labelkit.images import ImageSpec, decode_for

if TYPE_CHECKING:
    import torch

    from labelkit.backbones import Weights
    from labelkit.store import Store

Progress = Callable[[int, int], None]  # (done, total)
INDEX_DTYPE = np.dtype([("item_id", "<i8"), ("crc", "<u4")])


class RowFile:
    """Rows of ``shape``/``dtype`` keyed by item id, appended in batches (see the module docstring)."""

    def __init__(self, folder: Path, shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> None:
        self.folder = folder
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.data_path = folder / "rows.bin"
        self.index_path = folder / "index.npy"
        folder.mkdir(parents=True, exist_ok=True)
        self._index = self._read_index()
        self._row = {int(i): r for r, i in enumerate(self._index["item_id"])}
        # Rows past the index are the tail of a batch a crash interrupted: cut them off.
        committed = len(self._index) * self.row_bytes
        if not self.data_path.exists() or self.data_path.stat().st_size < committed:
            if len(self._index):  # the index names rows the data file lacks: start again
                self._index = np.zeros(0, INDEX_DTYPE)
                self._row = {}
            self.data_path.write_bytes(b"")
        elif self.data_path.stat().st_size > committed:
            os.truncate(self.data_path, committed)

    def _read_index(self) -> np.ndarray:
        if not self.index_path.exists():
            return np.zeros(0, INDEX_DTYPE)
        try:
            index = np.load(self.index_path)
        except (OSError, ValueError):
            return np.zeros(0, INDEX_DTYPE)  # unreadable index: rebuild everything
        return index if index.dtype == INDEX_DTYPE else np.zeros(0, INDEX_DTYPE)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._row

    def missing(self, item_ids: Sequence[int]) -> list[int]:
        return [int(i) for i in item_ids if int(i) not in self._row]

    def append(self, item_ids: Sequence[int], rows: np.ndarray) -> None:
        """Append a batch; it is part of the cache once this returns."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape != (len(item_ids), *self.shape):
            raise ValueError(f"rows of shape {rows.shape}, expected ({len(item_ids)}, {self.shape})")
        new = [int(i) for i in item_ids if int(i) not in self._row]
        if len(new) != len(item_ids):
            raise ValueError("item already cached; use rewrite() to replace a row")
        with open(self.data_path, "ab") as handle:
            handle.write(rows.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        crcs = np.array([zlib.crc32(r.tobytes()) for r in rows], np.uint32)
        added = np.zeros(len(new), INDEX_DTYPE)
        added["item_id"], added["crc"] = new, crcs
        index = np.concatenate([self._index, added])
        write_atomically(self.index_path, lambda h: np.save(h, index), durable=True)
        self._index = index
        for r, i in enumerate(new, start=len(self._row)):
            self._row[i] = r

    def rewrite(self, item_id: int, row: np.ndarray) -> None:
        """Replace one cached row in place (a corrupt one, rebuilt from the original)."""
        r = self._row[int(item_id)]
        row = np.ascontiguousarray(row, dtype=self.dtype).reshape(self.shape)
        with open(self.data_path, "r+b") as handle:
            handle.seek(r * self.row_bytes)
            handle.write(row.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        index = self._index.copy()
        index["crc"][r] = zlib.crc32(row.tobytes())
        write_atomically(self.index_path, lambda h: np.save(h, index), durable=True)
        self._index = index

    def read(self, item_ids: Sequence[int], *, verify: bool = True) -> tuple[np.ndarray, list[int]]:
        """A copy of the rows of ``item_ids`` (all must be cached) and the ids whose rows failed
        their CRC (their rows in the result are not to be trusted)."""
        rows = [self._row[int(i)] for i in item_ids]
        out = np.empty((len(rows), *self.shape), self.dtype)
        if not rows:
            return out, []
        data = np.memmap(self.data_path, dtype=self.dtype, mode="r", shape=(len(self._index), *self.shape))
        order = np.argsort(rows)  # read the file front to back
        sorted_rows = np.asarray(rows)[order]
        out[order] = data[sorted_rows]
        bad: list[int] = []
        if verify:
            expected = self._index["crc"][sorted_rows]
            for k, (pos, crc) in enumerate(zip(order, expected, strict=True)):
                if zlib.crc32(out[pos].tobytes()) != int(crc):
                    bad.append(int(item_ids[order[k]]))
        del data
        return out, bad


# ---------------------------------------------------------------------------------- image cache
class ImageCache:
    """Decoded pixels of a workspace's items at one ``ImageSpec``."""

    def __init__(self, store: Store, spec: ImageSpec) -> None:
        self.store = store
        self.spec = spec
        self.rows = RowFile(store.workspace.cache / spec.key, (spec.channels, spec.size, spec.size), np.uint8)

    def _decode(self, item_ids: Sequence[int]) -> tuple[list[int], list[np.ndarray], list[tuple[int, str]]]:
        from labelkit.images import ImageError

        ok, arrays, failed = [], [], []
        for info in self.store.items(list(item_ids)):
            try:
                arrays.append(decode_for(self.store.workspace.path(info.path), self.spec))
                ok.append(info.id)
            except (OSError, ImageError, ValueError) as error:
                failed.append((info.id, f"{type(error).__name__}: {error}"))
        return ok, arrays, failed

    def fill(
        self,
        item_ids: Sequence[int],
        *,
        batch: int = 64,
        progress: Progress | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[tuple[int, str]]:
        """Decode and cache every item of ``item_ids`` not cached yet; returns (id, error) of the
        images that could not be read. Resumable: each batch is committed on its own."""
        todo = self.rows.missing(item_ids)
        failed: list[tuple[int, str]] = []
        for start in range(0, len(todo), batch):
            if stop is not None and stop():
                break
            ok, arrays, bad = self._decode(todo[start : start + batch])
            failed += bad
            if ok:
                self.rows.append(ok, np.stack(arrays))
            if progress is not None:
                progress(min(start + batch, len(todo)), len(todo))
        return failed

    def load(self, item_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        """Pixels of ``item_ids`` (filling and repairing the cache as needed): (ids that could be
        read, their uint8 (N, C, S, S) pixels, (id, error) of those that could not)."""
        failed = self.fill(item_ids)
        bad_ids = {i for i, _ in failed}
        ids = [int(i) for i in item_ids if int(i) not in bad_ids]
        pixels, corrupt = self.rows.read(ids)
        if corrupt:
            where = {i: k for k, i in enumerate(ids)}
            ok, arrays, more = self._decode(corrupt)
            for item_id, array in zip(ok, arrays, strict=True):
                self.rows.rewrite(item_id, array)
                pixels[where[item_id]] = array
            if more:
                dropped = {i for i, _ in more}
                keep = [k for k, i in enumerate(ids) if i not in dropped]
                ids, pixels, failed = [ids[k] for k in keep], pixels[keep], failed + more
        return np.asarray(ids, np.int64), pixels, failed


# ------------------------------------------------------------------------------ embedding cache
class EmbeddingCache:
    """Pooled features of one pretrained backbone for every item, computed once."""

    def __init__(
        self, store: Store, *, backbone: str, weights: Weights, images: ImageCache, dim: int
    ) -> None:
        tag = hashlib.sha256(f"{backbone}|{weights.sha256}|{images.spec.key}".encode()).hexdigest()[:12]
        self.key = f"embeddings-{backbone}-{tag}"
        self.backbone, self.weights, self.images = backbone, weights, images
        self.rows = RowFile(store.workspace.cache / self.key, (dim,), np.float32)

    def fill(
        self,
        item_ids: Sequence[int],
        model: torch.nn.Module,
        *,
        device: str = "cpu",
        batch: int = 32,
        progress: Progress | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[tuple[int, str]]:
        """Embed every item of ``item_ids`` not embedded yet with ``model`` (a ``Classifier`` whose
        body is the backbone); resumable batch by batch. Returns unreadable (id, error)."""
        import torch

        todo = self.rows.missing(item_ids)
        failed: list[tuple[int, str]] = []
        model.eval()
        began, done = time.perf_counter(), 0
        for start in range(0, len(todo), batch):
            if stop is not None and stop():
                break
            ids, pixels, bad = self.images.load(todo[start : start + batch])
            failed += bad
            if len(ids):
                with torch.inference_mode():
                    x = model.normalize(torch.from_numpy(pixels).to(device))  # type: ignore[operator]
                    features = model(x).features.float().cpu().numpy()
                self.rows.append(ids.tolist(), features)
                done += len(ids)
            if progress is not None:
                progress(min(start + batch, len(todo)), len(todo))
        if done:
            meta = {
                "backbone": self.backbone,
                "weights": self.weights.to_dict(),
                "images_per_s": done / max(time.perf_counter() - began, 1e-9),
                "device": str(device),
            }
            write_atomically(
                self.rows.folder / "meta.json", lambda h: h.write(json.dumps(meta).encode()), durable=False
            )
        return failed


def status(cache_root: Path) -> list[dict[str, object]]:
    """What the workspace's caches hold, read from their indexes alone (no torch, no decoding):
    one row per cache with its rows and, for embeddings, the backbone and last fill rate."""
    out: list[dict[str, object]] = []
    for folder in sorted(cache_root.glob("*")):
        index = folder / "index.npy"
        if not index.is_file():
            continue
        try:
            rows = len(np.load(index, mmap_mode="r"))
        except (OSError, ValueError):
            rows = 0
        row: dict[str, object] = {"cache": folder.name, "items": rows}
        meta = folder / "meta.json"
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
                row.update(
                    backbone=info.get("backbone"),
                    weights=info.get("weights", {}).get("source"),
                    images_per_s=round(float(info.get("images_per_s", 0.0)), 1),
                )
            except (OSError, ValueError):
                pass
        out.append(row)
    return out
