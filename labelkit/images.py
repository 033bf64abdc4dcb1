"""Decoding image files safely and the same way everywhere: import, display, training and export.

Workspaces keep each imported file byte for byte (its sha256 is its identity); ``load`` turns those
bytes into a picture the way the user sees it in any viewer: EXIF orientation applied, first frame
of an animation, 16-bit, CMYK, palette and alpha converted to 8-bit grayscale or RGB.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "GIF": ".gif",
    "AVIF": ".avif",
    "HEIF": ".heic",
}
Image.init()
# AVIF and HEIC only where the installed Pillow reads them (Pillow ≥ 11.3 built with libavif; the
# pillow-heif plugin registers HEIF).
FORMATS = frozenset(f for f in EXTENSIONS if f not in ("AVIF", "HEIF") or f in Image.OPEN)
MAX_FILE_BYTES = 256 * 2**20
# Pillow's own bomb guard warns at MAX_IMAGE_PIXELS and refuses at twice that; we refuse at our
# limit, which is generous for photographs (a 64-megapixel phone camera) and stops bombs early.
MAX_PIXELS = 80_000_000
# The pixel count alone lets a small file ask for a lot of memory: a 154 KB 16-bit 8900² PNG
# decodes to 151 MiB, an RGBA one to 302 MiB. Width × height × bands × bytes per sample bounds the
# decoded buffer itself (a 64-megapixel 8-bit RGB photo is 183 MiB).
MAX_DECODED_BYTES = 192 * 2**20
_SAMPLE_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
_ROWS_PER_CHUNK = 256  # rows converted at a time when stretching 16-bit images to 8 bits
MAX_ASPECT = 50  # a 1 × 10,000 strip is a corrupt header or a barcode, not something to classify
THUMB_SIDE = 160


class ImageError(ValueError):
    """A file that is not an image labelkit can use; the message says why, for a person."""


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # mode "L" or "RGB", orientation applied
    format: str  # Pillow's format name of the file
    mode: str  # mode of the file before conversion (e.g. "CMYK", "I;16", "P")
    width: int  # after orientation
    height: int


def _flatten(image: Image.Image) -> Image.Image:
    """8-bit L or RGB; transparency composited on white (what viewers show)."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in _SAMPLE_BYTES:
        return _stretch_to_8_bits(image)
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        # Pasted through its own alpha onto white: one new 8-bit image, no RGBA copies.
        gray = mode in ("LA", "La")
        flat = Image.new("L" if gray else "RGB", image.size, 255 if gray else (255, 255, 255))
        alpha = image.getchannel("A")
        flat.paste(
            image.convert("L" if gray else "RGB") if mode in ("PA", "RGBa", "La") else image, mask=alpha
        )
        return flat
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _stretch_to_8_bits(image: Image.Image) -> Image.Image:
    """16-bit or float grayscale stretched from the file's own range to 0..255 (a 12-bit X-ray
    stored in 16 bits would otherwise be nearly black), a band of rows at a time so the working
    memory is the 8-bit result, not float copies of the whole image."""
    lo, hi = (float(v) for v in image.getextrema())  # type: ignore[arg-type]  # one band: (min, max)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, _ROWS_PER_CHUNK):
        rows = np.asarray(image.crop((0, top, width, min(top + _ROWS_PER_CHUNK, height))), dtype=np.float32)
        out[top : top + rows.shape[0]] = np.clip(np.rint((rows - lo) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def decode(data: bytes) -> Decoded:
    """Verify and decode one file's bytes; raise ``ImageError`` with a reason a person understands."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"file too large ({len(data) / 2**20:.0f} MiB; limit {MAX_FILE_BYTES // 2**20} MiB)")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                if fmt not in FORMATS:
                    raise ImageError(
                        f"unsupported format {fmt or 'unknown'} (supported: {', '.join(sorted(FORMATS))})"
                    )
                width, height = probe.size
                _check_size(width, height)
                _check_decoded_bytes(width, height, probe.mode, len(probe.getbands()))
                probe.verify()
            opened = Image.open(io.BytesIO(data))
            opened.seek(0)  # GIF/TIFF/WebP animations: the first frame
            opened.load()
            mode = opened.mode
            # in place: a transposed copy of a large image would double the decode's memory
            ImageOps.exif_transpose(opened, in_place=True)
            flat = _flatten(opened)
            del opened
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image too large to decode safely (over {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (Pillow cannot identify the file)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated JPEG/PNG data, bad CRCs, broken headers all land here.
        raise ImageError(f"corrupt or truncated image ({_first_line(exc)})") from None
    return Decoded(flat, fmt, mode, flat.width, flat.height)


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width} × {height})")
    if width * height > MAX_PIXELS:
        raise ImageError(f"image too large ({width} × {height} pixels; limit {MAX_PIXELS:,} pixels)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"absurd aspect ratio ({width} × {height}; at most {MAX_ASPECT}:1)")


def _check_decoded_bytes(width: int, height: int, mode: str, bands: int) -> None:
    need = width * height * bands * _SAMPLE_BYTES.get(mode, 1)
    if need > MAX_DECODED_BYTES:
        raise ImageError(
            f"image too large to decode ({width} × {height} × {bands} band(s) of mode {mode} = "
            f"{need / 2**20:.0f} MiB decoded; limit {MAX_DECODED_BYTES // 2**20} MiB)"
        )


def read_file(path: str | Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, checked before reading: no device files, FIFOs or sockets (opened
    without blocking, so a FIFO cannot hang the caller), and the size limit read from ``fstat``,
    so a sparse or endless file is refused without reading it. Raises ``ImageError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise ImageError("cannot read the file: permission denied") from None
        raise ImageError(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"not a regular file ({_file_kind(info.st_mode)}); not read")
        if info.st_size > limit:
            raise ImageError(f"file too large ({info.st_size / 2**20:.0f} MiB; limit {limit // 2**20} MiB)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise ImageError(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ImageError(f"file too large (over {limit // 2**20} MiB)")
    return data


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def load(path: str | Path) -> Image.Image:
    """A stored image as L or RGB, exactly as import saw it."""
    return decode(read_file(path)).image


@dataclass(frozen=True)
class ImageSpec:
    size: int
    channels: int  # 1 (grey) or 3 (RGB)
    fit: str  # "crop": short side to size, centre crop; "squash": both sides to size

    @property
    def key(self) -> str:
        return f"images-{self.fit}-{self.channels}x{self.size}"


def decode_for(path: Path, spec: ImageSpec) -> np.ndarray:
    """One stored image decoded as import saw it, at ``spec``: uint8 (C, S, S)."""
    img = load(path).convert("L" if spec.channels == 1 else "RGB")
    s = spec.size
    if spec.fit == "crop":
        w, h = img.size
        scale = s / min(w, h)
        # round up so the short side is never a pixel short of the crop
        img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = img.size
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    elif spec.fit == "squash":
        img = img.resize((s, s), Image.Resampling.BICUBIC)
    else:
        raise ValueError(f"fit must be 'crop' or 'squash', got {spec.fit!r}")
    array = np.asarray(img, dtype=np.uint8)
    return array[None].copy() if spec.channels == 1 else array.transpose(2, 0, 1).copy()


def thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> Image.Image | None:
    """A copy at most ``side`` pixels on its long edge, or None when the image is already that small."""
    if max(image.size) <= side:
        return None
    # Box-reduce a large image to about 4× the size first (cheap, and no full-size copy), then
    # resample what is left with Lanczos.
    factor = max(1, max(image.size) // (4 * side))
    copy = image.reduce(factor) if factor > 1 else image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def display_name(name: str, *, limit: int = 200) -> str:
    """A file name safe to show and store: control characters replaced, length bounded.

    HTML in names is kept as text; pages render names as text, never as markup.
    """
    clean = "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in name)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
