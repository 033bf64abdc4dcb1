"""Handles shared by every session of the app, opened once per process."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from labelkit.store import Store
from labelkit.workspace import Workspace


@st.cache_resource(show_spinner="Opening the workspace…")
def _open_store(root: str, db_url: str, import_roots: tuple[Path, ...] = ()) -> Store:
    # Shared across sessions and threads: the Store opens a fresh database session per call.
    return Store.open(Workspace(root=Path(root), db_url=db_url, import_roots=import_roots))


def store() -> Store:
    """The Store of the workspace named by the environment (``labelkit serve --workspace`` sets it)."""
    workspace = Workspace.resolve()
    return _open_store(str(workspace.root), workspace.db_url, workspace.import_roots)
