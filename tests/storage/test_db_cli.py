"""``posfleet server db``: copy a SQLite fleet into PostgreSQL and get the same availability answers; backups
that restore on both backends; status and upgrade; a copy into a database already in use is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from server.storage.schema import SCHEMA_VERSION
from tests.server.conftest import at, make_api
from tests.server.test_availability import DAY, _setup, _unit_a_day


def db(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from posfleet.cli import main; main()", "server", "db", *args],
                          capture_output=True, text=True, timeout=120)


async def _answers(api: Any) -> list[Any]:
    out = []
    for group in ("unit", "county", None):
        params = dict(DAY, **({"group_by": group} if group else {}))
        body = (await api.get("/api/v1/availability", **params)).json()
        out.append(body)
    drill = await api.get("/api/v1/units/HNA0000001/slots", date="2025-03-03")
    assert drill.status_code == 200, drill.text
    out.append(drill.json())
    out.append((await api.get("/api/v1/registry/units")).json())
    return out


async def test_a_sqlite_fleet_copied_into_postgresql_answers_the_same(tmp_path: Path, pg_url: str) -> None:
    src = tmp_path / "sqlite"
    async with make_api(src, now="2025-03-03 07:00", extra={"storage": {"url": f"sqlite:///{src}/fleet.sqlite"}}) as api:
        await _setup(api)
        await _unit_a_day(api)
        await api.minutes("HNB0000001", at("2025-03-03 08:00"), 600)
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        before = await _answers(api)
    assert before[0]["items"] and before[0]["complete"] is True

    run = db("copy", "--from", f"sqlite:///{src}/fleet.sqlite", "--to", pg_url)
    assert run.returncode == 0, run.stderr
    assert "copied and checked" in run.stdout and "samples: 1,170 rows" in run.stderr

    async with make_api(tmp_path / "pg", now="2025-03-04 00:00", extra={"storage": {"url": pg_url}}) as api:
        assert type(api.app.state.storage).__name__ == "PostgresStorage"
        after = await _answers(api)
    assert after[:4] == before[:4]
    assert [u["sn"] for u in after[4]["items"]] == [u["sn"] for u in before[4]["items"]]

    again = db("copy", "--from", f"sqlite:///{src}/fleet.sqlite", "--to", pg_url)
    assert again.returncode == 2 and "not empty" in again.stderr
    status = json.loads(db("status", "--url", pg_url).stdout)
    assert status["backend"] == "postgresql" and status["schema"] == status["server_schema"]
    assert status["rows"]["samples"] == 1170 and status["sample_partitions"] == ["2025-03-03"]
    await _resend_re_dated(pg_url)


async def _resend_re_dated(url: str) -> None:
    """The copied samples keep their identity: the same samples resent a day later (re-dated) are not stored."""
    from server.storage import SampleRow, open_storage

    st = open_storage(url)
    await st.open()
    try:
        rows = await st._all("SELECT sn, epoch, seq, ts FROM samples ORDER BY ts LIMIT 5")
        again = [SampleRow(r[0], r[1], r[2], r[3] + 86400, 60, 1, True, 80, {}, {"ts": r[3] + 86400}, 0.0)
                 for r in rows]
        assert len(again) == 5 and await st.store_telemetry(again, []) == 0
        assert await st.count_samples() == 1170
    finally:
        await st.close()


async def _tokens(url: str, tmp: Path) -> set[str]:
    from server.storage import open_storage

    st = open_storage(url)
    await st.open()
    try:
        return {t["name"] for t in await st.list_tokens()}
    finally:
        await st.close()


async def _add_token(url: str, name: str) -> None:
    from server.auth import create_token
    from server.storage import open_storage

    st = open_storage(url)
    await st.open()
    try:
        await create_token(st, name, "viewer")
    finally:
        await st.close()


async def test_backup_then_restore_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    for url in (f"sqlite:///{tmp_path / 'fleet.sqlite'}", pg_url):
        await _add_token(url, "kept")
        out = tmp_path / f"backup-{url[:6]}"
        r = db("backup", "--url", url, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert out.stat().st_mode & 0o077 == 0  # it holds contacts' phone numbers: the owner's alone
        await _add_token(url, "after the backup")
        assert await _tokens(url, tmp_path) == {"kept", "after the backup"}
        r = db("restore", "--url", url, "--from", str(out))
        assert r.returncode == 0, r.stderr
        assert await _tokens(url, tmp_path) == {"kept"}, url


def test_upgrade_makes_the_schema_and_status_names_an_unreachable_database(pg_url: str) -> None:
    r = db("upgrade", "--url", pg_url)
    assert r.returncode == 0 and r.stdout.strip() == f"schema 0 -> {SCHEMA_VERSION}", r.stdout + r.stderr
    assert db("upgrade", "--url", pg_url).stdout.strip() == f"schema {SCHEMA_VERSION} -> {SCHEMA_VERSION}"
    bad = db("status", "--url", "postgresql://nobody:secret@127.0.0.1:1/none")
    assert bad.returncode == 2 and "secret" not in bad.stderr and "posfleet server db:" in bad.stderr
