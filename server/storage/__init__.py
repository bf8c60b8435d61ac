"""Storage behind a small interface. SQLite (aiosqlite) is the default backend; PostgreSQL (asyncpg) for large fleets."""

from __future__ import annotations

from .base import EventRow, SampleRow, Storage, UnitQuery


def open_storage(url: str, base_dir: str = "", readers: int = 4) -> Storage:
    """The storage named by ``url``; ``readers``: read connections beside the writer."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        from .sqlite import SqliteStorage

        path = Path(url[len("sqlite:///"):])
        if not path.is_absolute() and base_dir:
            path = Path(base_dir) / path
        return SqliteStorage(path, readers)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return PostgresStorage(url, readers)
    raise ValueError(f"storage.url: unsupported backend in {url!r} (supported: sqlite:///PATH, "
                     "postgresql://USER@HOST:PORT/DB)")


__all__ = ["Storage", "SampleRow", "EventRow", "UnitQuery", "open_storage"]
