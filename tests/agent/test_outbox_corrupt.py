"""A damaged outbox is quarantined, replaced and reported (catalogue D3), at start and while running.

Five damaged files at start (each a real outbox first, then broken the way disks and power cuts break
them) and one found while the agent runs: every time the agent moves the file aside (kept, not deleted),
carries on with a fresh outbox, and the server receives a ``buffer_reset`` event naming the reason and the
quarantined file, followed by live samples with a healthy storage check. Without the quarantine a damaged
outbox is reopened for ever (the storage check stays at fault: the unit counts as not intact) or, for an
empty file or a garbage write-ahead log, silently taken as sound.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from agent.outbox import Outbox
from tests.fleet import AgentProc, agent_config, wait_for
from wire.messages import Check, Sample


def _real_outbox(data: Path, rows: int = 200) -> Path:
    """An outbox the agent wrote (several pages), closed cleanly: the state a power cut then damages."""
    data.mkdir(parents=True, exist_ok=True)
    ob = Outbox(data / "outbox.sqlite")
    for i in range(rows):
        ob.add(Sample(seq=0, ts=1_700_000_000 + 60 * i, cpu=10.0, checks={"storage": Check(0), "printer": Check(0)}),
               boot_id="old-boot", boottime=float(i))
    ob.close()
    return data / "outbox.sqlite"


def _zero_length(data: Path) -> None:
    _real_outbox(data).write_bytes(b"")


def _truncated_mid_page(data: Path) -> None:
    p = _real_outbox(data)
    raw = p.read_bytes()
    assert len(raw) >= 4 * 4096
    p.write_bytes(raw[: 2 * 4096 + 1500])


def _random_header(data: Path) -> None:
    p = _real_outbox(data)
    raw = bytearray(p.read_bytes())
    raw[:100] = random.Random(7).randbytes(100)
    p.write_bytes(bytes(raw))


def _garbage_wal(data: Path) -> None:
    p = _real_outbox(data)
    Path(f"{p}-wal").write_bytes(random.Random(8).randbytes(8192))


def _directory(data: Path) -> None:
    d = data / "outbox.sqlite"
    d.mkdir(parents=True)
    (d / "stray").write_text("a directory where the outbox file should be")


CASES = {
    "HN01200001": (_zero_length, "empty file"),
    "HN01200002": (_truncated_mid_page, "malformed"),
    "HN01200003": (_random_header, "not an SQLite database"),
    "HN01200004": (_garbage_wal, "write-ahead log"),
    "HN01200005": (_directory, "directory"),
}


def _events(server, sn: str, kind: str = "buffer_reset") -> list[dict]:
    r = server.get(f"/api/v1/units/{sn}/events", kind=kind)
    return r.json()["items"] if r.status_code == 200 else []


def _samples(server, sn: str) -> list[dict]:
    r = server.get(f"/api/v1/units/{sn}/samples", limit=1000)
    return r.json()["items"] if r.status_code == 200 else []


def _quarantined(data: Path) -> list[Path]:
    return [p for p in data.glob("outbox.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]


def test_damaged_outbox_at_start_is_quarantined_and_reported(pki, broker, server, tmp_path: Path) -> None:
    agents: dict[str, AgentProc] = {}
    try:
        for sn, (damage, _why) in CASES.items():
            data = tmp_path / sn / "data"
            damage(data)
            cfg = agent_config(pki, broker, sn, data, sampling_interval=5, link="batch_interval_s = 0")
            agents[sn] = AgentProc(cfg, tmp_path / f"{sn}.log").start()
        for sn, (_damage, why) in CASES.items():
            events = wait_for(lambda sn=sn: _events(server, sn), 60, f"{sn}: buffer_reset reported")
            assert len(events) == 1, events
            data = events[0]["data"]
            assert why in data["reason"], data
            assert data["quarantined"].startswith("outbox.sqlite.corrupt-"), data
            assert "while running" not in data["reason"] and str(tmp_path) not in data["reason"], data
            kept = _quarantined(tmp_path / sn / "data")
            assert [p.name for p in kept] == [data["quarantined"]], "moved aside, not deleted"
            if why != "directory":
                assert kept[0].is_file()
            # live reporting continues on the fresh outbox, and the storage check is healthy again
            wait_for(lambda sn=sn: len(_samples(server, sn)) >= 2, 30, f"{sn}: live samples")
            assert _samples(server, sn)[0]["checks"]["storage"][0] == 0, _samples(server, sn)[0]["checks"]
            with sqlite3.connect(tmp_path / sn / "data" / "outbox.sqlite") as con:
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for sn, a in agents.items():
            assert a.alive(), f"{sn}: the agent exited"
    finally:
        for a in agents.values():
            a.stop()
    for sn in CASES:
        log = (tmp_path / f"{sn}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("starting as") == 1, "started once: no crash loop"
        assert "outbox damaged" in log


def test_corruption_found_while_running_is_quarantined_and_reported(pki, broker, server, tmp_path: Path) -> None:
    """The outbox breaks under the running agent ("malformed database schema" on its next write, here made by
    another SQLite connection pointing the outbox table at a page that does not exist): the agent moves the
    file aside, reports ``buffer_reset`` and keeps reporting; no restart."""
    sn = "HN01200010"
    data = tmp_path / "data"
    cfg = agent_config(pki, broker, sn, data, sampling_interval=5, link="batch_interval_s = 0")
    agent = AgentProc(cfg, tmp_path / "agent.log").start()
    try:
        wait_for(lambda: len(_samples(server, sn)) >= 1, 30, "first samples")
        con = sqlite3.connect(data / "outbox.sqlite", isolation_level=None, timeout=10)
        version = con.execute("PRAGMA schema_version").fetchone()[0]
        con.execute("PRAGMA writable_schema=ON")
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE sqlite_master SET rootpage=99999 WHERE name='outbox'")
        con.execute(f"PRAGMA schema_version={version + 1}")
        con.execute("COMMIT")
        con.close()
        events = wait_for(lambda: _events(server, sn), 60, "buffer_reset reported")
        reason = events[0]["data"]["reason"]
        assert reason.startswith("found while running:") and "malformed" in reason, events
        assert _quarantined(data), "the damaged file was kept"
        n = len(_samples(server, sn))
        wait_for(lambda: len(_samples(server, sn)) >= n + 2, 30, "samples after the reset")
        assert _samples(server, sn)[0]["checks"]["storage"][0] == 0
        assert agent.alive()
    finally:
        agent.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("starting as") == 1


def test_quarantined_copies_are_bounded(tmp_path: Path) -> None:
    """A disk that keeps corrupting the outbox cannot fill itself with quarantined copies: the newest few stay."""
    from agent.outbox import KEEP_QUARANTINED

    for _ in range(KEEP_QUARANTINED + 2):
        p = _real_outbox(tmp_path, rows=5)
        p.write_bytes(b"")
        ob = Outbox(p)
        assert ob.reset is not None
        ob.close()
    assert len(_quarantined(tmp_path)) == KEEP_QUARANTINED
