"""SQLite backend through aiosqlite (WAL; one writer connection)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiosqlite

from .base import EventRow, SampleRow, UnitQuery

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    sn TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    state_ts REAL,
    state_reason TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    latest_ts INTEGER,
    latest TEXT,
    inventory TEXT,
    identity TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    sn TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    interval INTEGER NOT NULL,
    clock INTEGER NOT NULL,
    connected INTEGER NOT NULL,
    rtt_ms INTEGER,
    checks TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_sn_ts ON samples(sn, ts);
CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);
CREATE TABLE IF NOT EXISTS events (
    sn TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_sn_ts ON events(sn, ts);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
"""

_UNIT_SORTS = {"sn": "sn", "last_seen": "last_seen", "first_seen": "first_seen", "online": "online"}


def _unit(row: aiosqlite.Row) -> dict[str, Any]:
    d = dict(row)
    for key in ("latest", "inventory", "identity"):
        d[key] = json.loads(d[key]) if d.get(key) else None
    d["online"] = bool(d["online"])
    return d


class SqliteStorage:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("storage is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(str(self.path))
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    # ingest --------------------------------------------------------------------
    async def store_telemetry(self, samples: list[SampleRow], events: list[EventRow]) -> int:
        db = self.db
        now = time.time()
        stored = 0
        try:
            if samples:
                before = db.total_changes
                await db.executemany(
                    "INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (s.sn, s.epoch, s.seq, s.ts, s.interval, s.clock, int(s.connected), s.rtt_ms,
                         json.dumps(s.checks, ensure_ascii=False, separators=(",", ":")),
                         json.dumps(s.body, ensure_ascii=False, separators=(",", ":")), s.received_at)
                        for s in samples
                    ],
                )
                stored += db.total_changes - before
            if events:
                before = db.total_changes
                await db.executemany(
                    "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)",
                    [(e.sn, e.epoch, e.seq, e.ts, e.kind, json.dumps(e.data, ensure_ascii=False), e.received_at)
                     for e in events],
                )
                stored += db.total_changes - before
            # registry: first/last seen, newest sample, inventory
            latest: dict[str, SampleRow] = {}
            for s in samples:
                if s.sn not in latest or s.ts > latest[s.sn].ts:
                    latest[s.sn] = s
            sns = {s.sn for s in samples} | {e.sn for e in events}
            for sn in sns:
                await db.execute(
                    "INSERT INTO units(sn, first_seen, last_seen) VALUES (?,?,?) "
                    "ON CONFLICT(sn) DO UPDATE SET last_seen=excluded.last_seen",
                    (sn, now, now),
                )
            for sn, s in latest.items():
                await db.execute(
                    "UPDATE units SET latest_ts=?, latest=? WHERE sn=? AND (latest_ts IS NULL OR latest_ts <= ?)",
                    (s.ts, json.dumps(s.body, ensure_ascii=False), sn, s.ts),
                )
            for e in events:
                if e.kind == "inventory":
                    await db.execute("UPDATE units SET inventory=? WHERE sn=?", (json.dumps(e.data, ensure_ascii=False), e.sn))
                if e.kind in ("inventory", "identity", "sim_changed"):
                    ident = {k: e.data.get(k) for k in ("iccid", "imsi", "imei", "carrier", "mcc_mnc",
                                                          "modem_model", "modem_firmware") if e.data.get(k)}
                    if ident:
                        await db.execute("UPDATE units SET identity=? WHERE sn=?", (json.dumps(ident), e.sn))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        return stored

    async def set_state(self, sn: str, online: bool, ts: float, reason: str, version: str) -> None:
        now = time.time()
        await self.db.execute(
            "INSERT INTO units(sn, first_seen, last_seen, online, state_ts, state_reason, agent_version) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(sn) DO UPDATE SET online=excluded.online, state_ts=excluded.state_ts, "
            "state_reason=excluded.state_reason, last_seen=max(units.last_seen, excluded.last_seen), "
            "agent_version=CASE WHEN excluded.agent_version<>'' THEN excluded.agent_version ELSE units.agent_version END",
            (sn, now, now, int(online), ts, reason, version),
        )
        await self.db.commit()

    # registry ----------------------------------------------------------------------
    async def list_units(self, query: UnitQuery) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        if query.q:
            where.append("sn LIKE ?")
            args.append(f"%{query.q}%")
        if query.online is not None:
            where.append("online = ?")
            args.append(int(query.online))
        if query.sns:
            where.append(f"sn IN ({','.join('?' * len(query.sns))})")
            args.extend(query.sns)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = _UNIT_SORTS.get(query.sort, "sn")
        total = (await (await self.db.execute(f"SELECT count(*) FROM units {clause}", args)).fetchone())[0]
        cur = await self.db.execute(
            f"SELECT * FROM units {clause} ORDER BY {order} {'DESC' if query.descending else 'ASC'}, sn LIMIT ? OFFSET ?",
            [*args, query.limit, query.offset],
        )
        return int(total), [_unit(r) for r in await cur.fetchall()]

    async def get_unit(self, sn: str) -> dict[str, Any] | None:
        row = await (await self.db.execute("SELECT * FROM units WHERE sn=?", (sn,))).fetchone()
        return _unit(row) if row else None

    async def recent_samples(self, sn: str, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        if before is None:
            cur = await self.db.execute("SELECT body FROM samples WHERE sn=? ORDER BY ts DESC LIMIT ?", (sn, limit))
        else:
            cur = await self.db.execute(
                "SELECT body FROM samples WHERE sn=? AND ts < ? ORDER BY ts DESC LIMIT ?", (sn, before, limit))
        return [json.loads(r[0]) for r in await cur.fetchall()]

    async def samples_between(self, sns: list[str] | None, start: int, end: int) -> list[SampleRow]:
        sql = "SELECT sn, epoch, seq, ts, interval, clock, connected, rtt_ms, checks, received_at FROM samples WHERE ts < ? AND ts + interval > ?"
        args: list[Any] = [end, start]
        if sns is not None:
            sql += f" AND sn IN ({','.join('?' * len(sns))})"
            args.extend(sns)
        cur = await self.db.execute(sql + " ORDER BY sn, ts", args)
        return [
            SampleRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], json.loads(r[8]), {}, r[9])
            for r in await cur.fetchall()
        ]

    async def count_samples(self) -> int:
        return int((await (await self.db.execute("SELECT count(*) FROM samples")).fetchone())[0])

    async def purge_samples(self, before_ts: int) -> int:
        cur = await self.db.execute("DELETE FROM samples WHERE ts < ?", (before_ts,))
        await self.db.commit()
        return cur.rowcount

    # tokens --------------------------------------------------------------------------
    async def add_token(self, name: str, role: str, token_hash: str, created: float) -> None:
        await self.db.execute("INSERT INTO tokens(hash, name, role, created) VALUES (?,?,?,?)", (token_hash, name, role, created))
        await self.db.commit()

    async def find_token(self, token_hash: str) -> dict[str, Any] | None:
        row = await (await self.db.execute("SELECT name, role, revoked FROM tokens WHERE hash=?", (token_hash,))).fetchone()
        return dict(row) if row and not row["revoked"] else None
