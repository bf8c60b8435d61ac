"""The storage tests' fixtures: each test runs on a SQLite file and on the suite's PostgreSQL (``pg_url``), and a
second storage object on the same database stands for a second server process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.storage import open_storage


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(url: str) -> AsyncIterator[Any]:
    st = open_storage(url, readers=2)
    await st.open()
    yield st
    await st.close()


@pytest.fixture
async def other(url: str, store: Any) -> AsyncIterator[Any]:
    """A second process's storage on the same database."""
    st = open_storage(url, readers=2)
    await st.open()
    yield st
    await st.close()


@pytest.fixture
async def two(url: str) -> AsyncIterator[tuple[Any, Any]]:
    """Two processes' storage on one database, neither made first by another fixture."""
    a, b = open_storage(url, readers=2), open_storage(url, readers=2)
    await a.open()
    await b.open()
    yield a, b
    await b.close()
    await a.close()


@pytest.fixture
async def ref(url: str) -> AsyncIterator[Any]:
    """A third process's storage that answers from SQL alone, without the kept scope lists (decisions 034 and 036):
    what the kept path's answers are compared with."""
    st = open_storage(url, readers=2)
    st.kept_lists = False
    await st.open()
    yield st
    await st.close()
