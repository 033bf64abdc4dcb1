"""Fixtures shared by every test module: a fresh workspace and its store, and real PostgreSQL on request."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from labelkit.store import Store
from labelkit.workspace import Workspace


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own LABELKIT_* settings must never point a test at a real workspace.
    monkeypatch.delenv("LABELKIT_WORKSPACE", raising=False)
    monkeypatch.delenv("LABELKIT_DB_URL", raising=False)
    monkeypatch.delenv("LABELKIT_IMPORT_ROOTS", raising=False)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.resolve(tmp_path / "ws").ensure()


@pytest.fixture
def store(workspace: Workspace) -> Iterator[Store]:
    opened = Store.open(workspace)
    yield opened
    opened.close()


@pytest.fixture
def pg_url() -> str:
    """URL of a PostgreSQL database (``scripts/pg-test-server`` starts one; .ci/run always does)."""
    url = os.environ.get("LABELKIT_TEST_PG_URL")
    if not url:
        if os.environ.get("LABELKIT_REQUIRE_PG"):
            pytest.fail("LABELKIT_REQUIRE_PG is set but LABELKIT_TEST_PG_URL is not")
        pytest.skip('no PostgreSQL: run `eval "$(scripts/pg-test-server)"` to test against one')
    return url
