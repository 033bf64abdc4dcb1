"""Decoding image files safely and the same way everywhere: import, display, training and export.

Workspaces keep each imported file byte for byte (its sha256 is its identity); ``load`` turns those
bytes into a picture the way the user sees it in any viewer: EXIF orientation applied, first frame
of an animation, 16-bit, CMYK, palette and alpha converted to 8-bit grayscale or RGB.
"""

from __future__ import annotations

import io
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "GIF": ".gif",
}
MAX_FILE_BYTES = 256 * 2**20
# Pillow's own bomb guard warns at MAX_IMAGE_PIXELS and refuses at twice that; we refuse at our
# limit, which is generous for photographs (a 64-megapixel phone camera) and stops bombs early.
MAX_PIXELS = 80_000_000
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
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit or float grayscale: stretch the file's own range to 0..255 (a 12-bit X-ray
        # stored in 16 bits would otherwise be nearly black).
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(base, rgba).convert("RGB")
        return flat.convert("L") if mode in ("LA", "La") else flat
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


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
                probe.verify()
            opened = Image.open(io.BytesIO(data))
            opened.seek(0)  # GIF/TIFF/WebP animations: the first frame
            opened.load()
            mode = opened.mode
            flat = _flatten(ImageOps.exif_transpose(opened))
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def load(path: str | Path) -> Image.Image:
    """A stored image as L or RGB, exactly as import saw it."""
    return decode(Path(path).read_bytes()).image


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
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def display_name(name: str, *, limit: int = 200) -> str:
    """A file name safe to show and store: control characters replaced, length bounded.

    HTML in names is kept as text; pages render names as text, never as markup.
    """
    clean = "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in name)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
