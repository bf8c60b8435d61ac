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


# The test files that take 40 s or more (a worker's seconds in a whole run, `./dev test --durations=0`, 2026-12-08,
# on a fast day: 692 s for the suite), longest first. `./dev test` hands whole files to its workers in collection
# order (pytest-xdist --dist loadfile): one collected late could start near the end of the run while the other
# workers had nothing left to do. Collected first, the short files fill in around them. A file missing here only
# runs in its usual place.
LONG_FIRST = (
    "tests/deploy/test_agent_deb.py",  # 116 s
    "tests/e2e/test_wrong_clock.py",  # 74 s
    "tests/sim/test_virtual_exact.py",  # 72 s
    "tests/e2e/test_disk.py",  # 65 s
    "tests/e2e/test_cert_renewal.py",  # 60 s
    "tests/bench/test_scale.py",  # 57 s
    "tests/e2e/test_store_forward.py",  # 57 s
    "tests/commands/test_jobs.py",  # 56 s
    "tests/commands/test_on_postgresql.py",  # 52 s
    "tests/server/test_api_schemathesis.py",  # 49 s
    "tests/e2e/test_broker_identity.py",  # 49 s
    "tests/server/test_api_limits.py",  # 48 s
    "tests/commands/test_command_guards.py",  # 47 s
    "tests/e2e/test_cluster_postgresql.py",  # 47 s
    "tests/commands/test_abort_filters.py",  # 44 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files of :data:`LONG_FIRST` first, in its order; every other file after them, as collected (a stable
    sort: a file's tests stay together and in order)."""
    rank = {name: k for k, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


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
