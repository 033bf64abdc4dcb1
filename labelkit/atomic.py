"""Files that appear whole or not at all: checkpoints, maps, imported images, exported tables."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, durable: bool) -> None:
    """Write ``path`` through ``write(handle)`` under a temporary name in the same folder, then
    rename it into place: a reader, or a crash, sees the old file or the new one, never half of one.

    ``durable`` also flushes the bytes to disk before the rename, so that after a power loss the new
    name cannot point at missing data; it costs a disk sync per file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
