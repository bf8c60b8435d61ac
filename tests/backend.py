"""Which backend the server tests' app stores in: SQLite files by default, PostgreSQL with ``--storage postgresql``
(a database per test in the tests' own cluster). Kept in this module (imported once as ``tests.backend``) because
the conftest files are also imported under a second name by the tests that use their helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# a function giving a new database's URL while ``--storage postgresql`` is in force, else None
NEW_DATABASE: list[Callable[[], str] | None] = [None]


def storage_url(tmp_path: Path) -> str:
    """Where an app under test stores: ``fleet.sqlite`` in ``tmp_path``, or a new PostgreSQL database (one per
    ``tmp_path``: reopening an app there finds its data)."""
    make = NEW_DATABASE[0]
    if make is None:
        return f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    marker = tmp_path / ".pg-url"
    if not marker.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)  # (a test's own sub-folder for a second app)
        marker.write_text(make())
    return marker.read_text()


def db_count(url: str, sql: str) -> int:
    """One number from a server's database, SQLite file or PostgreSQL (psql): 0 while its tables do not exist yet."""
    if url.startswith("sqlite:///"):
        from tests.conftest import sqlite_count

        return sqlite_count(Path(url[len("sqlite:///"):]), sql)
    try:
        out = _psql(url, "-A", "-t", "-c", sql)
    except RuntimeError as err:
        if "does not exist" in str(err):
            return 0
        raise
    return int(out.strip() or 0)


def _psql(url: str, *args: str) -> str:
    import subprocess

    from simulator.postgres import pg_bindir

    r = subprocess.run([str(pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, *args],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


def db_rows(url: str, sql: str) -> list[tuple[str, ...]]:
    """A query's rows from a server's database, SQLite file or PostgreSQL, each value as text (NULL: '')."""
    if url.startswith("sqlite:///"):
        import sqlite3

        con = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return [tuple("" if v is None else str(v) for v in row) for row in con.execute(sql)]
        finally:
            con.close()
    out = _psql(url, "-A", "-t", "-F", "\x1f", "-0", "-c", sql)
    return [tuple(rec.split("\x1f")) for rec in out.split("\0") if rec.strip("\n")]


def db_execute(url: str, sql: str) -> None:
    """One statement written to a server's database (a test's own change behind the server's back)."""
    if url.startswith("sqlite:///"):
        import sqlite3

        con = sqlite3.connect(url[len("sqlite:///"):])
        try:
            con.execute(sql)
            con.commit()
        finally:
            con.close()
        return
    _psql(url, "-c", sql)


def db_dump(url: str) -> str:
    """Everything a server's database holds, as text (SQLite's dump; PostgreSQL's data through pg_dump)."""
    if url.startswith("sqlite:///"):
        import sqlite3

        con = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()
    import subprocess

    from simulator.postgres import pg_bindir

    r = subprocess.run([str(pg_bindir() / "pg_dump"), "--data-only", "-d", url], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout
