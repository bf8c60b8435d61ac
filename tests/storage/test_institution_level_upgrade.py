"""The schema step that gives institutions their level (issue 18, schema 12) on a database of the schema before it:
the institutions are kept with level '' on SQLite and PostgreSQL, and the list filters by it. SQLite runs each
step with its version in one transaction: a step that fails half way leaves nothing (no table, no version), so
the next start runs it again (an ALTER TABLE cannot be written to be run twice)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from server.storage import engine, open_storage
from server.storage.schema import MIGRATIONS, PG_MIGRATIONS, SCHEMA_VERSION

BEFORE = 11  # the schema before the level


def _sqlite_before(db: Path) -> None:
    con = sqlite3.connect(db)
    for n, _what, scripts in MIGRATIONS:
        if n <= BEFORE:
            for script in scripts:
                con.executescript(script)
    con.execute(f"PRAGMA user_version = {BEFORE}")
    con.execute("INSERT INTO institutions(code, name, county, updated) VALUES ('I1', '东村卫生室', '长安区', 1)")
    con.commit()
    con.close()


async def _levels(url: str) -> list[tuple[str, str]]:
    st = open_storage(url, "", readers=0)
    await st.open()
    try:
        assert await st.schema_version() == SCHEMA_VERSION
        await st.upsert_institutions([{"code": "I2", "name": "韦曲街道卫生院", "county": "长安区", "level": "township"}])
        assert [i["code"] for i in await st.list_institutions(level="township")] == ["I2"]
        return [(i["code"], i["level"]) for i in await st.list_institutions()]
    finally:
        await st.close()


def test_an_older_sqlite_database_gains_the_level_whole_or_not_at_all(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "fleet.sqlite"
    _sqlite_before(db)

    async def open_close() -> None:
        st = open_storage(f"sqlite:///{db}", "", readers=0)
        await st.open()
        await st.close()

    broken = (SCHEMA_VERSION + 1, "a step that fails half way",
              ("CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);",))
    monkeypatch.setattr(engine, "MIGRATIONS", [*MIGRATIONS, broken])
    monkeypatch.setattr(engine, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        asyncio.run(open_close())
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION, "the level's step is done"
    assert con.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None, \
        "the failed step left nothing behind"
    con.close()
    monkeypatch.undo()
    assert asyncio.run(_levels(f"sqlite:///{db}")) == [("I1", ""), ("I2", "township")]


async def test_an_older_postgresql_database_gains_the_level(pg_url: str) -> None:
    from server.storage.postgres import connect

    conn = await connect(pg_url)
    try:
        await conn.execute("CREATE TABLE posfleet_schema (version BIGINT NOT NULL, what TEXT NOT NULL, "
                           "at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for n, what, ddl in PG_MIGRATIONS:
            if n <= BEFORE:
                await conn.execute(ddl)
                await conn.execute("INSERT INTO posfleet_schema(version, what) VALUES ($1, $2)", n, what)
        await conn.execute("INSERT INTO institutions(code, name, county, updated) VALUES ('I1', '东村卫生室', '长安区', 1)")
    finally:
        await conn.close()
    assert await _levels(pg_url) == [("I1", ""), ("I2", "township")]
