"""CSV files a spreadsheet opens safely, and names a file system accepts.

Class names, annotators and file names come from users. A cell that starts with ``=``, ``+``,
``-`` or ``@`` (or a tab or carriage return) is a formula to Excel, LibreOffice and Google Sheets
(CSV injection), so every CSV labelkit writes prefixes such text cells with ``'`` as OWASP advises;
the apostrophe shows in a text editor and tells a spreadsheet to read the cell as text.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MAX_NAME_BYTES = 200  # NAME_MAX is 255 bytes on ext4, APFS and NTFS; room left for a "-<id>" suffix
_UNSAFE_IN_NAMES = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
# Windows refuses these as a file or folder name, with or without an extension, in any case.
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


def safe_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose text cells (and column names) cannot start a formula."""
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(safe_cell)
    out.columns = [safe_cell(str(c)) for c in out.columns]
    return out


def to_csv(table: pd.DataFrame, target: str | os.PathLike[str] | IO[Any] | None = None) -> str | None:
    """``table.to_csv(target, index=False)`` with formula cells defused; text when ``target`` is None."""
    return spreadsheet_safe(table).to_csv(target, index=False)


def csv_text(table: pd.DataFrame) -> str:
    """``to_csv`` as text (for a download button)."""
    return str(to_csv(table))


def safe_name(name: str, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A file or folder name every common file system accepts, as close to ``name`` as it can be:
    separators and control characters replaced, no leading or trailing dots and spaces, at most
    ``max_bytes`` of UTF-8 (cut on a character boundary), and Windows' reserved names suffixed."""
    clean = _UNSAFE_IN_NAMES.sub("_", name).strip(" .")
    encoded = clean.encode("utf-8")
    if len(encoded) > max_bytes:
        clean = encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip(" .")
    if not clean:
        return "_"
    if _RESERVED.match(clean):
        clean += "_"
    return clean
