"""Upgrades keep the server's data (issue 13, item 2): schema versions, migrations at start, a newer schema refused.

``data/release-e236811.sqlite`` was written by the previous release (commit e236811, the last one before schema
versions) through its own app: an institution, two registered units, one day of samples (unit A all day, unit B
the morning), the day's roll-ups, and an admin token. Opening it with this server must bring it to the current
schema without losing or recounting anything; a database written by a newer server must be refused before the
server starts, naming the setting and the file.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from server.storage.sqlite import SCHEMA_VERSION
from tests.failfast import assert_refused, posfleet
from tests.server.conftest import make_api

OLD = Path(__file__).parent / "data" / "release-e236811.sqlite"
OLD_TOKEN = "pf_T-9O7aDalM5j4MTBDm2FCroKqFwKCTYbfEdaTt-_AY8"  # the fixture's admin token (a test database's)
DAY = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00", "group_by": "unit"}


def _version(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


async def test_previous_release_database_survives_the_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    shutil.copy(OLD, db)
    assert _version(db) == 0, "the fixture is from before schema versions"
    file = {"storage": {"url": f"sqlite:///{db}"}}  # that release's SQLite file, whatever backend --storage names
    async with make_api(tmp_path, file, now="2025-03-05 09:00") as api:
        assert _version(db) == SCHEMA_VERSION
        headers = {"Authorization": f"Bearer {OLD_TOKEN}"}
        r = await api.client.get("/api/v1/availability", params=DAY, headers=headers)
        assert r.status_code == 200, "the old release's token still works"
        units = {u["sn"]: u for u in r.json()["items"]}
        assert r.json()["complete"] is True
        a, b = units["HNA0000001"], units["HNB0000001"]
        assert (a["service_slots"], a["intact_slots"], a["no_data_slots"]) == (600, 600, 0)
        assert (b["service_slots"], b["intact_slots"], b["no_data_slots"]) == (600, 300, 300)
        reg = (await api.get("/api/v1/registry/units")).json()
        assert {u["sn"] for u in reg["items"]} == {"HNA0000001", "HNB0000001"}
        assert reg["items"][0]["institution_name"] == "秀英村卫生室"
        samples = (await api.get("/api/v1/units/HNA0000001/samples", limit=5)).json()
        assert len(samples["items"] if isinstance(samples, dict) else samples) == 5
        # what the new schema added is there and works
        assert (await api.get("/api/v1/ingest/dead-letters")).json()["total"] == 0
    # opening it again changes nothing
    async with make_api(tmp_path, file, now="2025-03-05 09:00"):
        assert _version(db) == SCHEMA_VERSION
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from samples").fetchone()[0] == 900
    con.close()


def test_a_newer_schema_is_refused_before_anything_starts(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    db = root / "fleet.sqlite"
    shutil.copy(OLD, db)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    before = db.read_bytes()
    config = root / "server.toml"
    config.write_text(f'ingest_enabled = false\n[storage]\nurl = "sqlite:///{db}"\n[http]\nhost = "127.0.0.1"\nport = 0\n')
    for command in ("run", "check-config"):
        out = posfleet("server", command, "--config", str(config))
        assert_refused(out, "storage.url", db, "newer than this server")
    assert db.read_bytes() == before, "a refused database is left exactly as it was"
