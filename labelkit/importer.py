"""Importing images into a workspace: from a folder, a zip file or browser uploads.

Every file gets an outcome: imported, duplicate (same sha256 as an item already there or earlier in
this import) or rejected with a reason a person understands. One bad file never stops the rest.
Files are kept byte for byte under ``images/`` named by their sha256, so a re-import skips what is
there and an interrupted import resumes where it stopped. Labels that come with the data (an
ImageFolder layout or a ``filename,label`` CSV) become annotations with source ``imported``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import posixpath
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pandas as pd

from labelkit import images, tables
from labelkit.atomic import write_atomically
from labelkit.store import NewItem, NotFoundError, Store, StoreError

LABEL_MODES = ("none", "folders", "csv")
NEW_CLASS_MODES = ("create", "reject")
BATCH = 256
MAX_LABELS_CSV_BYTES = 64 * 2**20
ANNOTATOR = "import"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Candidate:
    source: str  # shown to the user: path inside the folder or zip, or the upload's name
    read: Callable[[], bytes]
    label: str | None = None
    problem: str | None = None  # rejected before reading (zip-slip, too large, encrypted)


@dataclass(frozen=True)
class FileOutcome:
    source: str
    status: str  # imported | duplicate | rejected
    reason: str
    item_id: int | None = None
    label: str | None = None  # the class the file was labelled with by this import
    sha256: str | None = None


@dataclass
class ImportReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    csv_path: Path | None = None

    def counts(self) -> dict[str, int]:
        out = {"imported": 0, "duplicate": 0, "rejected": 0, "labeled": 0}
        for o in self.outcomes:
            out[o.status] += 1
            out["labeled"] += o.label is not None
        return out

    def table(self) -> pd.DataFrame:
        columns = ["source", "status", "reason", "item_id", "label", "sha256"]
        frame = pd.DataFrame([vars(o) for o in self.outcomes], columns=columns)
        frame["item_id"] = frame["item_id"].astype("Int64")
        return frame

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{c['imported']} imported, {c['duplicate']} duplicates skipped, {c['rejected']} rejected, "
            f"{c['labeled']} labelled from the data"
        )


class SourceError(ValueError):
    """The import as a whole cannot start (missing folder, unreadable zip, bad labels CSV)."""


# ---------------------------------------------------------------------------------------------------
def import_path(
    store: Store,
    source: str | os.PathLike[str],
    *,
    labels: str = "none",
    labels_csv: str | os.PathLike[str] | None = None,
    new_classes: str = "create",
    annotator: str = ANNOTATOR,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a folder (recursively), a zip file or a single image file.

    ``labels="folders"`` takes each file's class from its first sub-folder (torchvision's
    ImageFolder layout); ``labels="csv"`` from ``labels_csv`` with columns ``filename,label`` where
    filename is the path relative to ``source`` or a unique base name. ``new_classes="reject"``
    leaves files whose class is not in the workspace unlabelled (reported) instead of creating it.
    """
    _check_choice("labels", labels, LABEL_MODES)
    _check_choice("new_classes", new_classes, NEW_CLASS_MODES)
    if (labels == "csv") != (labels_csv is not None):
        raise SourceError("labels='csv' needs labels_csv (and labels_csv needs labels='csv')")
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        candidates = list(_folder_candidates(path, with_labels=labels == "folders"))
        origin = str(path.resolve())
    elif not path.is_file():  # a FIFO or device: even zipfile.is_zipfile would block or read forever
        raise SourceError(f"{path} is not a folder, a zip file or an image file")
    elif zipfile.is_zipfile(path):
        candidates = list(_zip_candidates(path, prefix="", with_labels=labels == "folders"))
        origin = str(path.resolve())
    else:
        candidates = [_Candidate(path.name, functools.partial(images.read_file, path))]
        origin = str(path.resolve().parent)
    extra: list[FileOutcome] = []
    if labels_csv is not None:
        candidates, extra = _apply_labels_csv(candidates, Path(labels_csv).expanduser())
    return _run(store, candidates, origin, new_classes, annotator, progress, extra)


def import_uploads(
    store: Store,
    uploads: Iterable[tuple[str, bytes]],
    *,
    labels: str = "none",
    new_classes: str = "create",
    annotator: str = ANNOTATOR,
    progress: Progress | None = None,
) -> ImportReport:
    """Import files sent from the browser as ``(name, bytes)``; a ``.zip`` upload is unpacked.

    ``labels="folders"`` applies to the entries of uploaded zip files.
    """
    _check_choice("labels", labels, ("none", "folders"))
    _check_choice("new_classes", new_classes, NEW_CLASS_MODES)
    candidates: list[_Candidate] = []
    for name, data in uploads:
        shown = images.display_name(name)
        if name.lower().endswith(".zip") and zipfile.is_zipfile(io.BytesIO(data)):
            candidates.extend(
                _zip_candidates(io.BytesIO(data), prefix=shown + "/", with_labels=labels == "folders")
            )
        else:
            candidates.append(_Candidate(shown, functools.partial(bytes, data)))
    return _run(store, candidates, "upload", new_classes, annotator, progress, [])


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


# ------------------------------------------------------------------------------------------ sources
def _folder_candidates(root: Path, *, with_labels: bool) -> Iterator[_Candidate]:
    """Every file under ``root``; os.walk does not descend into linked folders, and a file link is
    followed only when it resolves to a file inside ``root`` (checked here, read by
    ``images.read_file``, which refuses anything but a regular file)."""
    inside = root.resolve()
    for folder, dirs, files in os.walk(root, onerror=None):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if (Path(folder) / d).is_symlink()]):
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            shown = images.display_name(relative)
            read = functools.partial(images.read_file, path)
            problem = _link_problem(path, inside)
            if problem is None and name.startswith("."):
                problem = "hidden file (skipped)"
            label = _folder_label(PurePosixPath(relative)) if with_labels and problem is None else None
            yield _Candidate(shown, read, label, problem)


def _link_problem(path: Path, inside: Path) -> str | None:
    """Why a symbolic link under the source folder is not followed, or None to follow it."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling or a loop
        return "broken symbolic link; not followed"
    if target.is_dir():
        return "symbolic link to a folder; not followed"
    if not target.is_relative_to(inside):
        return "symbolic link to a file outside the source folder; not followed"
    return None


def _folder_label(relative: PurePosixPath) -> str | None:
    return relative.parts[0] if len(relative.parts) > 1 else None


def _zip_candidates(
    file: str | os.PathLike[str] | io.BytesIO, *, prefix: str, with_labels: bool
) -> Iterator[_Candidate]:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"cannot open the zip file: {exc}") from None
    entries = [info for info in archive.infolist() if not info.is_dir()]
    names = [info.filename.replace("\\", "/") for info in entries]
    problems = [_zip_problem(info, name) for info, name in zip(entries, names, strict=True)]
    # A zip of an ImageFolder is usually one top folder holding the class folders: skip it.
    safe = [n for n, p in zip(names, problems, strict=True) if p is None]
    strip = len({n.split("/", 1)[0] for n in safe}) == 1 and all("/" in n for n in safe)
    for info, name, problem in zip(entries, names, problems, strict=True):
        shown = prefix + images.display_name(name)
        label = None
        if with_labels and problem is None:
            inner = PurePosixPath(name.split("/", 1)[1] if strip else name)
            label = _folder_label(inner)
        yield _Candidate(shown, functools.partial(archive.read, info), label, problem)


def _zip_problem(info: zipfile.ZipInfo, name: str) -> str | None:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
        return "zip entry path escapes the archive folder (zip-slip); not extracted"
    if info.flag_bits & 0x1:
        return "encrypted zip entry"
    if info.file_size > images.MAX_FILE_BYTES:
        return (
            f"file too large ({info.file_size / 2**20:.0f} MiB; limit {images.MAX_FILE_BYTES // 2**20} MiB)"
        )
    if posixpath.basename(name).startswith("."):
        return "hidden file (skipped)"
    return None


def _apply_labels_csv(
    candidates: list[_Candidate], labels_csv: Path
) -> tuple[list[_Candidate], list[FileOutcome]]:
    # No message here quotes the file: the path may name any file the server can read
    # (/etc/shadow), and an error that echoed its first line would hand it to whoever asked.
    try:
        text = images.read_file(labels_csv, limit=MAX_LABELS_CSV_BYTES).decode("utf-8-sig")
    except images.ImageError as exc:
        raise SourceError(f"labels CSV {labels_csv}: {exc}") from None
    except UnicodeDecodeError:
        raise SourceError(f"labels CSV {labels_csv} is not UTF-8 text") from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    except csv.Error:
        fields = {}
    if "filename" not in fields or "label" not in fields:
        raise SourceError(
            f"labels CSV {labels_csv} is not a labels CSV: its first line must be the header filename,label"
        )
    by_path = {c.source: c for c in candidates}
    by_base: dict[str, list[str]] = defaultdict(list)
    for c in candidates:
        by_base[posixpath.basename(c.source)].append(c.source)
    wanted: dict[str, str] = {}
    extra: list[FileOutcome] = []
    for row in reader:
        filename = (row[fields["filename"]] or "").strip().replace("\\", "/")
        label = (row[fields["label"]] or "").strip()
        if not filename or not label:
            continue
        if filename in by_path:
            wanted[filename] = label
        elif len(by_base.get(filename, [])) == 1:
            wanted[by_base[filename][0]] = label
        elif len(by_base.get(filename, [])) > 1:
            extra.append(
                FileOutcome(
                    filename, "rejected", "labels CSV: base name matches several files; use the relative path"
                )
            )
        else:
            extra.append(
                FileOutcome(filename, "rejected", "labels CSV names a file that is not in the import")
            )
    labelled = [_Candidate(c.source, c.read, wanted.get(c.source), c.problem) for c in candidates]
    return labelled, extra


# ------------------------------------------------------------------------------------------- import
def _run(
    store: Store,
    candidates: Sequence[_Candidate],
    origin: str,
    new_classes: str,
    annotator: str,
    progress: Progress | None,
    extra: list[FileOutcome],
) -> ImportReport:
    report = ImportReport()
    seen: dict[str, str] = {}  # sha256 -> source, within this import
    total = len(candidates)
    for start in range(0, total, BATCH):
        chunk = candidates[start : start + BATCH]
        report.outcomes.extend(_import_batch(store, chunk, origin, new_classes, annotator, seen))
        if progress is not None:
            progress(min(start + BATCH, total), total)
    report.outcomes.extend(extra)
    report.csv_path = _write_report(store, report)
    return report


def _import_batch(
    store: Store,
    chunk: Sequence[_Candidate],
    origin: str,
    new_classes: str,
    annotator: str,
    seen: dict[str, str],
) -> list[FileOutcome]:
    outcomes: list[FileOutcome | None] = [None] * len(chunk)
    fresh: dict[str, tuple[int, NewItem]] = {}  # sha256 -> (position, item) for files new to this import
    for pos, cand in enumerate(chunk):
        if cand.problem:
            outcomes[pos] = FileOutcome(cand.source, "rejected", cand.problem)
            continue
        try:
            data = cand.read()
        except PermissionError:
            outcomes[pos] = FileOutcome(cand.source, "rejected", "cannot read the file: permission denied")
            continue
        except images.ImageError as exc:  # not a regular file, too large: refused before reading
            outcomes[pos] = FileOutcome(cand.source, "rejected", str(exc))
            continue
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            outcomes[pos] = FileOutcome(cand.source, "rejected", f"cannot read the file: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            outcomes[pos] = FileOutcome(
                cand.source, "duplicate", f"same content as {seen[digest]}", label=None, sha256=digest
            )
            continue
        try:
            decoded = images.decode(data)
        except images.ImageError as exc:
            outcomes[pos] = FileOutcome(cand.source, "rejected", str(exc), sha256=digest)
            continue
        seen[digest] = cand.source
        fresh[digest] = (pos, _save(store, digest, data, decoded, cand.source, origin))

    known = store.known_sha256(fresh)
    added = store.add_items([item for d, (_, item) in fresh.items() if d not in known])
    for digest, (pos, _item) in fresh.items():
        cand = chunk[pos]
        if digest in known:
            outcomes[pos] = FileOutcome(
                cand.source,
                "duplicate",
                f"already in the workspace as item {known[digest]}",
                item_id=known[digest],
                label=cand.label,
                sha256=digest,
            )
        else:
            outcomes[pos] = FileOutcome(
                cand.source, "imported", "", item_id=added[digest], label=cand.label, sha256=digest
            )
    final = [o for o in outcomes if o is not None]
    return _apply_labels(store, final, new_classes, annotator)


def _save(
    store: Store, digest: str, data: bytes, decoded: images.Decoded, source: str, origin: str
) -> NewItem:
    """Write the original bytes (and a thumbnail of large images) under their sha256."""
    ws = store.workspace
    rel = f"images/{digest[:2]}/{digest}{images.EXTENSIONS[decoded.format]}"
    _write_once(ws.path(rel), lambda f: f.write(data))
    thumb_rel = rel
    thumb = images.thumbnail(decoded.image)
    if thumb is not None:
        thumb_rel = f"thumbs/{digest[:2]}/{digest}.jpg"
        _write_once(ws.path(thumb_rel), lambda f: thumb.save(f, format="JPEG", quality=85))
    return NewItem(
        sha256=digest,
        path=rel,
        thumb_path=thumb_rel,
        original_name=source,
        origin=origin,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        mode=decoded.mode,
    )


def _write_once(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Content-addressed: a file already there is the same bytes. Written under a temporary name
    and renamed, so a crash never leaves a half-written image behind the item's name."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write, durable=False)


def _apply_labels(
    store: Store, outcomes: list[FileOutcome], new_classes: str, annotator: str
) -> list[FileOutcome]:
    """Turn the data's own labels into ``imported`` annotations, one transaction per class.

    A duplicate that already has a label keeps it: a re-import never overwrites anyone's work.
    """
    by_class: dict[str, list[int]] = defaultdict(list)
    result: list[FileOutcome] = []
    class_ids: dict[str, int | None] = {}
    for o in outcomes:
        if o.label is None or o.item_id is None:
            result.append(o)
            continue
        if o.label not in class_ids:
            class_ids[o.label] = _class_id(store, o.label, new_classes)
        cid = class_ids[o.label]
        if cid is None:
            note = f"unknown class {o.label!r}; imported without a label"
            result.append(FileOutcome(o.source, o.status, _join(o.reason, note), o.item_id, None, o.sha256))
            continue
        if o.status == "duplicate" and store.current_label(o.item_id) is not None:
            result.append(
                FileOutcome(
                    o.source,
                    o.status,
                    _join(o.reason, "already labelled; label kept"),
                    o.item_id,
                    None,
                    o.sha256,
                )
            )
            continue
        by_class[o.label].append(o.item_id)
        result.append(o)
    for name, ids in by_class.items():
        cid = class_ids[name]
        assert cid is not None
        # only_unlabelled: an item labelled since the duplicate check above keeps its label.
        store.label_many(ids, cid, annotator=annotator, source="imported", only_unlabelled=True)
    return result


def _class_id(store: Store, name: str, new_classes: str) -> int | None:
    try:
        return store.class_by_name(name).id
    except NotFoundError:
        if new_classes == "reject":
            return None
    try:
        return store.add_class(name).id
    except StoreError:  # not a valid class name (empty, too long): reported as unknown
        return None


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _write_report(store: Store, report: ImportReport) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    path = store.workspace.reports / f"import-{stamp}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tables.to_csv(report.table(), path)  # file names come from the source: formula cells defused
    return path
