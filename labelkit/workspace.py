"""Where a workspace lives: one folder with the database, the images, thumbnails, runs and reports."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = "data"
ENV_WORKSPACE = "LABELKIT_WORKSPACE"
ENV_DB_URL = "LABELKIT_DB_URL"
ENV_IMPORT_ROOTS = "LABELKIT_IMPORT_ROOTS"
DB_FILENAME = "labelkit.db"


class ImportRootError(ValueError):
    """A server path the app may not import from; the message is meant for the user."""


@dataclass(frozen=True)
class Workspace:
    """A workspace folder and the database URL that goes with it.

    The database defaults to SQLite inside the folder; ``LABELKIT_DB_URL`` (or ``db_url``) points
    it elsewhere, e.g. ``postgresql+psycopg2://user@host/db``, while files stay in the folder.

    ``import_roots`` (``LABELKIT_IMPORT_ROOTS``, folders separated by ``os.pathsep``) are the only
    folders the app's "From the server" import reads from; none means that import is off, since
    anyone who can reach the app could otherwise read any file the server can.
    """

    root: Path
    db_url: str
    import_roots: tuple[Path, ...] = ()

    @classmethod
    def resolve(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        db_url: str | None = None,
        import_roots: Sequence[str | os.PathLike[str]] | None = None,
    ) -> Workspace:
        root = Path(path or os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE).expanduser().resolve()
        url = db_url or os.environ.get(ENV_DB_URL) or f"sqlite:///{root / DB_FILENAME}"
        if import_roots is None:
            import_roots = [r for r in os.environ.get(ENV_IMPORT_ROOTS, "").split(os.pathsep) if r.strip()]
        roots = tuple(Path(r).expanduser().resolve() for r in import_roots)
        return cls(root=root, db_url=url, import_roots=roots)

    def server_path(self, path: str | os.PathLike[str]) -> Path:
        """``path`` with every symbolic link resolved, if it lies inside one of the import roots.

        Raises ``ImportRootError`` otherwise (also when no root is configured). The caller reads
        the returned path, not the one it was given, so a link cannot point the check elsewhere.
        """
        if not self.import_roots:
            raise ImportRootError(
                f"importing from the server is off: set {ENV_IMPORT_ROOTS} to the folders it may read"
            )
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(root) for root in self.import_roots):
            allowed = ", ".join(str(r) for r in self.import_roots)
            raise ImportRootError(f"{path} is outside the folders the server imports from ({allowed})")
        return resolved

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    def ensure(self) -> Workspace:
        for folder in (self.root, self.images, self.thumbs, self.runs, self.cache, self.reports, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, relative: str) -> Path:
        """Absolute path of a file the database names relative to the workspace root."""
        return self.root / relative
