"""The importer on a generated corpus of good, odd and broken files: every file gets an outcome,
odd images are converted (not rejected), broken ones get a reason, and nothing stops the rest."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelkit import images, importer
from labelkit.importer import SourceError, import_path, import_uploads
from labelkit.store import Store


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _rgb(seed: int, size=(24, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _exif_rotated_jpeg() -> bytes:
    # 40 wide × 20 high on disk, EXIF orientation 6 (rotate 90° clockwise to view): 20 × 40 shown.
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_rgb(7, (40, 20)), "JPEG", exif=exif.tobytes())


def _sixteen_bit_png() -> bytes:
    ramp = (np.arange(32 * 8, dtype=np.uint16).reshape(8, 32) * 200).astype(np.uint16)
    return _encode(Image.fromarray(ramp), "PNG")


def _palette_with_transparency() -> bytes:
    image = _rgb(3).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return _encode(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("L", (10, 10), 0), Image.new("L", (10, 10), 255)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def _bomb_png() -> bytes:
    # 10,000 × 9,000 one-bit pixels compress to a few kB but decode to 90 million pixels.
    return _encode(Image.new("1", (10_000, 9_000)), "PNG")


GOOD = {
    "rgb.jpg": lambda: _encode(_rgb(1), "JPEG"),
    "gray.png": lambda: _encode(_rgb(2).convert("L"), "PNG"),
    "photo.webp": lambda: _encode(_rgb(4), "WEBP"),
    "scan.bmp": lambda: _encode(_rgb(5), "BMP"),
    "scan.tif": lambda: _encode(_rgb(6), "TIFF"),
    "anim.gif": _animated_gif,
    "cmyk.jpg": lambda: _encode(_rgb(8).convert("CMYK"), "JPEG"),
    "sixteen.png": _sixteen_bit_png,
    "palette.png": _palette_with_transparency,
    "alpha.png": lambda: _encode(_rgb(9).convert("RGBA"), "PNG"),
    "gray-alpha.png": lambda: _encode(_rgb(10).convert("LA"), "PNG"),
    "rotated.jpg": _exif_rotated_jpeg,
    "<img src=x onerror=alert(1)>\x07bell.png": lambda: _encode(_rgb(11), "PNG"),
}
BAD = {
    "empty.png": (lambda: b"", "empty file"),
    "truncated.jpg": (lambda: _encode(_rgb(12, (64, 64)), "JPEG")[:300], "corrupt or truncated"),
    "truncated.png": (lambda: _encode(_rgb(13, (64, 64)), "PNG")[:200], "corrupt or truncated"),
    "notes.txt": (lambda: b"salmon are pink\n", "not an image"),
    "icon.ico": (lambda: _encode(_rgb(14, (16, 16)), "ICO"), "unsupported format ICO"),
    "bomb.png": (_bomb_png, "too large"),
    "strip.png": (lambda: _encode(Image.new("L", (2_000, 1)), "PNG"), "aspect ratio"),
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for name, make in GOOD.items():
        (root / name).write_bytes(make())
    for name, (make, _) in BAD.items():
        (root / name).write_bytes(make())
    (root / "z-copy-of-rgb.jpg").write_bytes((root / "rgb.jpg").read_bytes())
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _by_source(report) -> dict:
    return {o.source: o for o in report.outcomes}


def test_every_file_of_the_corpus_gets_the_right_outcome(store: Store, corpus: Path) -> None:
    report = import_path(store, corpus)
    outcomes = _by_source(report)
    assert len(outcomes) == len(GOOD) + len(BAD) + 2
    for name in GOOD:
        shown = images.display_name(name)
        assert outcomes[shown].status == "imported", (name, outcomes[shown].reason)
    for name, (_, reason) in BAD.items():
        assert outcomes[name].status == "rejected", name
        assert reason in outcomes[name].reason, (name, outcomes[name].reason)
    assert outcomes["z-copy-of-rgb.jpg"].status == "duplicate"
    assert "rgb.jpg" in outcomes["z-copy-of-rgb.jpg"].reason
    assert outcomes[".DS_Store"].status == "rejected"
    assert store.count_items() == len(GOOD)
    assert report.counts() == {"imported": len(GOOD), "duplicate": 1, "rejected": len(BAD) + 1, "labeled": 0}


def test_odd_images_are_converted_to_8_bit_gray_or_rgb_as_a_viewer_shows_them(
    store: Store, corpus: Path
) -> None:
    report = import_path(store, corpus)
    outcomes = _by_source(report)
    for name, mode, file_mode in [
        ("cmyk.jpg", "RGB", "CMYK"),
        ("sixteen.png", "L", "I;16"),
        ("palette.png", "RGB", "P"),
        ("alpha.png", "RGB", "RGBA"),
        ("gray-alpha.png", "L", "LA"),
        ("anim.gif", "RGB", "P"),
    ]:
        item = store.item(outcomes[name].item_id)
        loaded = images.load(store.workspace.path(item.path))
        assert loaded.mode == mode, name
        assert item.mode in (file_mode, "P"), (name, item.mode)
    sixteen = np.asarray(images.load(store.workspace.path(store.item(outcomes["sixteen.png"].item_id).path)))
    assert sixteen.min() == 0 and sixteen.max() == 255  # stretched, not truncated to the low byte
    gif = np.asarray(images.load(store.workspace.path(store.item(outcomes["anim.gif"].item_id).path)))
    assert gif.max() == 0  # the first frame is black, the second white


def test_exif_orientation_is_applied_to_size_and_pixels(store: Store, corpus: Path) -> None:
    outcome = _by_source(import_path(store, corpus))["rotated.jpg"]
    item = store.item(outcome.item_id)
    assert (item.width, item.height) == (20, 40)
    assert images.load(store.workspace.path(item.path)).size == (20, 40)


def test_file_names_with_markup_and_control_characters_are_stored_as_plain_text(
    store: Store, corpus: Path
) -> None:
    outcomes = _by_source(import_path(store, corpus))
    item = store.item(outcomes["<img src=x onerror=alert(1)>?bell.png"].item_id)
    assert item.original_name == "<img src=x onerror=alert(1)>?bell.png"
    assert "\x07" not in item.original_name


def test_files_are_kept_byte_for_byte_under_their_sha256(store: Store, corpus: Path) -> None:
    outcomes = _by_source(import_path(store, corpus))
    item = store.item(outcomes["rgb.jpg"].item_id)
    assert store.workspace.path(item.path).read_bytes() == (corpus / "rgb.jpg").read_bytes()
    assert item.sha256 in item.path


def test_reimport_skips_everything_as_duplicates(store: Store, corpus: Path) -> None:
    import_path(store, corpus)
    again = import_path(store, corpus)
    assert again.counts()["imported"] == 0
    assert again.counts()["duplicate"] == len(GOOD) + 1
    assert store.count_items() == len(GOOD)


def test_an_interrupted_import_resumes_where_it_stopped(store: Store, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(9):
        (folder / f"{i}.png").write_bytes(_encode(_rgb(100 + i), "PNG"))
    monkeypatch.setattr(importer, "BATCH", 4)

    def stop_after_first_batch(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_path(store, folder, progress=stop_after_first_batch)
    assert store.count_items() == 4
    resumed = import_path(store, folder)
    assert resumed.counts()["imported"] == 5 and resumed.counts()["duplicate"] == 4
    assert store.count_items() == 9


def test_unreadable_file_is_reported_and_the_rest_imported(store: Store, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "perm"
    folder.mkdir()
    (folder / "ok.png").write_bytes(_encode(_rgb(20), "PNG"))
    locked = folder / "locked.png"
    locked.write_bytes(_encode(_rgb(21), "PNG"))
    locked.chmod(0)
    real_open = os.open

    def open_file(path, flags, *args):
        # root ignores file modes, so the test raises the error the OS gives everyone else
        if Path(path).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_file)
    outcomes = _by_source(import_path(store, folder))
    assert outcomes["locked.png"].status == "rejected"
    assert "permission denied" in outcomes["locked.png"].reason
    assert outcomes["ok.png"].status == "imported"


def test_imagefolder_layout_becomes_imported_labels(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "fish"
    for cls, seeds in {"salmon": [1, 2], "trout": [3]}.items():
        (root / cls).mkdir(parents=True)
        for s in seeds:
            (root / cls / f"{s}.png").write_bytes(_encode(_rgb(200 + s), "PNG"))
    (root / "loose.png").write_bytes(_encode(_rgb(210), "PNG"))
    report = import_path(store, root, labels="folders")
    assert report.counts()["labeled"] == 3
    assert [c.name for c in store.classes()] == ["salmon", "trout"]
    counts = store.label_counts()
    assert counts.set_index("class_name")["count"].to_dict() == {"salmon": 2, "trout": 1}
    assert set(counts["source"]) == {"imported"}
    loose = _by_source(report)["loose.png"]
    assert store.current_label(loose.item_id) is None


def test_reimport_with_labels_never_overwrites_an_existing_label(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "fish"
    (root / "salmon").mkdir(parents=True)
    (root / "salmon" / "a.png").write_bytes(_encode(_rgb(300), "PNG"))
    first = import_path(store, root)  # no labels the first time
    item_id = first.outcomes[0].item_id
    trout = store.add_class("trout")
    store.label(item_id, trout.id, annotator="ann")
    again = import_path(store, root, labels="folders")
    assert "label kept" in again.outcomes[0].reason
    assert store.current_label(item_id).class_id == trout.id


def test_labels_csv_with_unknown_class_and_missing_file(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for name, seed in [("a.png", 1), ("b.png", 2), ("c.png", 3)]:
        (root / name).write_bytes(_encode(_rgb(400 + seed), "PNG"))
    store.add_class("salmon")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\na.png,salmon\nb.png,shark\nc.png,\nghost.png,salmon\n")
    report = import_path(store, root, labels="csv", labels_csv=labels, new_classes="reject")
    outcomes = _by_source(report)
    assert outcomes["a.png"].label == "salmon"
    assert outcomes["b.png"].status == "imported" and "unknown class 'shark'" in outcomes["b.png"].reason
    assert store.current_label(outcomes["b.png"].item_id) is None
    assert outcomes["c.png"].label is None
    assert outcomes["ghost.png"].status == "rejected" and "not in the import" in outcomes["ghost.png"].reason
    assert [c.name for c in store.classes()] == ["salmon"]


def test_labels_csv_without_the_right_header_is_refused_before_importing(
    store: Store, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.png").write_bytes(_encode(_rgb(1), "PNG"))
    bad = tmp_path / "labels.csv"
    bad.write_text("file;class\na.png;salmon\n")
    with pytest.raises(SourceError, match="filename,label"):
        import_path(store, root, labels="csv", labels_csv=bad)
    assert store.count_items() == 0


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_with_top_folder_imagefolder_and_zip_slip_entries(store: Store, tmp_path: Path) -> None:
    archive = tmp_path / "catch.zip"
    archive.write_bytes(
        _zip(
            {
                "catch/salmon/1.png": _encode(_rgb(500), "PNG"),
                "catch/trout/2.png": _encode(_rgb(501), "PNG"),
                "catch/../../evil.png": _encode(_rgb(502), "PNG"),
                "/etc/passwd.png": _encode(_rgb(503), "PNG"),
            }
        )
    )
    report = import_path(store, archive, labels="folders")
    outcomes = _by_source(report)
    assert outcomes["catch/salmon/1.png"].label == "salmon"
    assert outcomes["catch/trout/2.png"].label == "trout"
    for name in ("catch/../../evil.png", "/etc/passwd.png"):
        assert outcomes[name].status == "rejected" and "zip-slip" in outcomes[name].reason
    assert not (tmp_path / "evil.png").exists() and not any(tmp_path.parent.glob("evil.png"))
    assert store.count_items() == 2


def test_uploads_including_a_zip_and_a_broken_file(store: Store) -> None:
    report = import_uploads(
        store,
        [
            ("one.png", _encode(_rgb(600), "PNG")),
            ("bundle.zip", _zip({"a.jpg": _encode(_rgb(601), "JPEG"), "b.txt": b"hello"})),
            ("broken.jpg", b"\xff\xd8\xff\xe0garbage"),
        ],
    )
    outcomes = _by_source(report)
    assert outcomes["one.png"].status == "imported"
    assert outcomes["bundle.zip/a.jpg"].status == "imported"
    assert outcomes["bundle.zip/b.txt"].status == "rejected"
    assert outcomes["broken.jpg"].status == "rejected"
    assert store.count_items() == 2


def test_report_csv_lists_every_outcome(store: Store, corpus: Path) -> None:
    report = import_path(store, corpus)
    import pandas as pd

    written = pd.read_csv(report.csv_path, keep_default_na=False)
    assert len(written) == len(report.outcomes)
    assert set(written["status"]) == {"imported", "duplicate", "rejected"}
    assert report.csv_path.parent == store.workspace.reports


def test_missing_source_and_bad_options_fail_clearly(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        import_path(store, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="labels must be one of none, folders, csv"):
        import_path(store, tmp_path, labels="subdirs")


# ------------------------------------------------------------------------- hostile files, bombs
BOMB_SIDE = 8900  # 79.2 megapixels: under the pixel limit, so only the decoded-bytes limit stops it


def _bomb_png(mode: str) -> bytes:
    """A flat 8900² image: PNG compresses it to a few hundred KB whatever its decoded size."""
    return _encode(Image.new(mode, (BOMB_SIDE, BOMB_SIDE), 0), "PNG")


def _hostile_folder(root: Path, outside: Path) -> Path:
    folder = root / "hostile"
    folder.mkdir()
    (folder / "ok.png").write_bytes(_encode(_rgb(1), "PNG"))
    (folder / "z.png").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo.png")
    with open(folder / "sparse.png", "wb") as handle:
        handle.truncate(2**30)  # 1 GiB of nothing, no disk blocks
    (folder / "bomb16.png").write_bytes(_bomb_png("I;16"))
    outside.mkdir()
    (outside / "secret.png").write_bytes(_encode(_rgb(2), "PNG"))
    (folder / "escape.png").symlink_to(outside / "secret.png")
    (folder / "inner.png").symlink_to(folder / "ok.png")  # inside the folder: followed
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    return folder


IMPORT_AND_MEASURE = """
import json, resource, sys
from labelkit.importer import import_path
from labelkit.store import Store
from labelkit.workspace import Workspace
store = Store.open(Workspace.resolve(sys.argv[1]))
report = import_path(store, sys.argv[2])
# VmHWM is this process's own peak: getrusage's ru_maxrss also counts the pytest process this one
# was forked from (Linux keeps the high-water mark across fork and exec).
try:
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"outcomes": {o.source: [o.status, o.reason] for o in report.outcomes}, "peak_mib": peak}))
"""


def test_hostile_files_each_get_a_reason_without_hanging_or_eating_memory(tmp_path: Path) -> None:
    folder = _hostile_folder(tmp_path, tmp_path / "outside")
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_MEASURE, str(tmp_path / "ws"), str(folder)],
        capture_output=True,
        text=True,
        timeout=120,  # a FIFO read would hang forever
        cwd=Path(__file__).parents[1],
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    outcomes = {k: tuple(v) for k, v in result["outcomes"].items()}
    # a link inside the folder is followed: the one file is imported once
    assert sorted([outcomes["ok.png"][0], outcomes["inner.png"][0]]) == ["duplicate", "imported"]
    assert outcomes["z.png"] == (
        "rejected",
        "symbolic link to a file outside the source folder; not followed",
    )
    assert outcomes["escape.png"] == outcomes["z.png"]
    assert outcomes["fifo.png"] == ("rejected", "not a regular file (a FIFO); not read")
    assert outcomes["sparse.png"] == ("rejected", "file too large (1024 MiB; limit 256 MiB)")
    assert outcomes["linked-dir"] == ("rejected", "symbolic link to a folder; not followed")
    # the 16-bit bomb (151 MiB decoded) is under the limit and converts without float copies
    assert outcomes["bomb16.png"][0] == "imported"
    print(f"peak RSS of the hostile import: {result['peak_mib']:.0f} MiB")
    assert result["peak_mib"] < 500, result["peak_mib"]


def test_an_rgba_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    data = _bomb_png("RGBA")
    assert len(data) < 2**20
    with pytest.raises(images.ImageError, match=r"302 MiB decoded; limit 192 MiB"):
        images.decode(data)


def test_read_file_refuses_devices_and_fifos_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="a character device"):
        images.read_file("/dev/zero")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(images.ImageError, match="a FIFO"):
        images.read_file(tmp_path / "pipe")
    with pytest.raises(images.ImageError, match="a folder"):
        images.read_file(tmp_path)


def test_a_fifo_given_as_the_source_is_refused(store: Store, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.zip")
    with pytest.raises(SourceError, match="not a folder, a zip file or an image file"):
        import_path(store, tmp_path / "pipe.zip")


@pytest.mark.skipif("AVIF" not in images.FORMATS, reason="this Pillow does not read AVIF")
def test_avif_imports_where_pillow_reads_it(store: Store, tmp_path: Path) -> None:
    (tmp_path / "a.avif").write_bytes(_encode(_rgb(3, (32, 24)), "AVIF"))
    report = import_path(store, tmp_path / "a.avif")
    assert report.counts()["imported"] == 1
    item = store.item(report.outcomes[0].item_id)
    assert (item.format, item.width, item.height) == ("AVIF", 32, 24)
    assert item.path.endswith(".avif")


# ------------------------------------------------------------------- the labels CSV leaks nothing
@pytest.mark.parametrize(
    "content",
    [b"root:$6$S3CR3T:19000:0:99999:7:::\ndaemon:*:19000\n", b"\x89S3CR3T\xff\xfe", b"S3CR3T"],
)
def test_a_file_that_is_not_a_labels_csv_is_refused_without_quoting_it(
    store: Store, tmp_path: Path, content: bytes
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.png").write_bytes(_encode(_rgb(1), "PNG"))
    shadow = tmp_path / "shadow"
    shadow.write_bytes(content)
    with pytest.raises(SourceError) as info:
        import_path(store, root, labels="csv", labels_csv=shadow)
    assert "S3CR3T" not in str(info.value) and "$6$" not in str(info.value)
    assert store.count_items() == 0


def test_a_labels_csv_that_is_a_fifo_or_device_is_refused_unread(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    os.mkfifo(tmp_path / "labels.csv")
    with pytest.raises(SourceError, match="a FIFO"):
        import_path(store, root, labels="csv", labels_csv=tmp_path / "labels.csv")
    with pytest.raises(SourceError, match="a character device"):
        import_path(store, root, labels="csv", labels_csv="/dev/zero")


def test_the_import_report_csv_defuses_formula_file_names(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "=HYPERLINK(1).png").write_bytes(_encode(_rgb(1), "PNG"))
    (folder / "-bad.png").write_bytes(b"not an image")
    report = import_path(store, folder)
    sources = set(pd.read_csv(report.csv_path)["source"])
    assert sources == {"'=HYPERLINK(1).png", "'-bad.png"}
    assert {o.source for o in report.outcomes} == {"=HYPERLINK(1).png", "-bad.png"}  # stored as given
