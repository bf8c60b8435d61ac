from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.postgres import Postgres
from tests import backend
from tests.fleet import Broker, Pki, Server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--storage", choices=("sqlite", "postgresql"), default="sqlite",
                     help="the backend the server tests' app stores in (postgresql: a cluster of the tests' own)")


def pytest_configure(config: pytest.Config) -> None:
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        raise pytest.UsageError("mosquitto is not installed: run ./dev test (it installs it)")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    b = Broker(pki, tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def server(pki: Pki, broker: Broker, tmp_path: Path) -> Iterator[Server]:
    s = Server(pki, broker, tmp_path / "server").start()
    yield s
    s.stop()
    log = (tmp_path / "server" / "server.log")
    if log.exists():
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster of the tests' own (initdb in a temporary folder, a free loopback port), shared by the
    session; each test takes a fresh database of it with ``pg_url``."""
    pg = Postgres(settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}).start()
    yield pg
    pg.stop()


_pg_dbs = iter(range(1, 1_000_000))


@pytest.fixture(autouse=True)
def _storage_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    """``--storage postgresql``: every app a test makes through ``tests.backend.storage_url`` stores in PostgreSQL."""
    if request.config.getoption("--storage") == "postgresql":
        pg = request.getfixturevalue("postgres")
        backend.NEW_DATABASE[0] = lambda: pg.create(f"t{next(_pg_dbs)}")
    yield
    backend.NEW_DATABASE[0] = None


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """The URL of a new, empty database in the tests' PostgreSQL."""
    return postgres.create(f"t{next(_pg_dbs)}")


def epoch(text: str) -> float:
    """Epoch seconds of a time in an API answer (ISO 8601 with offset, docs/api.md)."""
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def sqlite_count(db: Path, sql: str) -> int:
    import sqlite3

    con = sqlite3.connect(db, timeout=10)
    try:
        return int(con.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError as err:
        # polled while the process is still creating the file's schema: nothing counted yet
        if "no such table" in str(err):
            return 0
        raise
    finally:
        con.close()
