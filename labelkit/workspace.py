"""Where a workspace lives: one folder with the database, the images, thumbnails, runs and reports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = "data"
ENV_WORKSPACE = "LABELKIT_WORKSPACE"
ENV_DB_URL = "LABELKIT_DB_URL"
DB_FILENAME = "labelkit.db"


@dataclass(frozen=True)
class Workspace:
    """A workspace folder and the database URL that goes with it.

    The database defaults to SQLite inside the folder; ``LABELKIT_DB_URL`` (or ``db_url``) points
    it elsewhere, e.g. ``postgresql+psycopg2://user@host/db``, while files stay in the folder.
    """

    root: Path
    db_url: str

    @classmethod
    def resolve(cls, path: str | os.PathLike[str] | None = None, *, db_url: str | None = None) -> Workspace:
        root = Path(path or os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE).expanduser().resolve()
        url = db_url or os.environ.get(ENV_DB_URL) or f"sqlite:///{root / DB_FILENAME}"
        return cls(root=root, db_url=url)

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
