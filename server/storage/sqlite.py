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

# Registry, roll-ups, outages and alerts (issue 4).
_FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS institutions (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    county TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT '',
    hours TEXT NOT NULL DEFAULT '',
    contact TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS institutions_county ON institutions(county);
CREATE TABLE IF NOT EXISTS registry (
    sn TEXT PRIMARY KEY,
    insurance_sn TEXT NOT NULL DEFAULT '',
    terminal_type TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    vendor TEXT NOT NULL DEFAULT '',
    institution TEXT,
    stock_type TEXT NOT NULL DEFAULT 'deployed',
    status TEXT NOT NULL DEFAULT 'in_service',
    link_type TEXT NOT NULL DEFAULT '4g_vpdn',
    note TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'admin',
    registered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_institution ON registry(institution);
CREATE TABLE IF NOT EXISTS status_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sn TEXT NOT NULL,
    from_ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    by TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS status_history_sn ON status_history(sn, from_ts);
CREATE TABLE IF NOT EXISTS rollup_day (
    day INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service INTEGER NOT NULL,
    intact INTEGER NOT NULL,
    netok INTEGER NOT NULL,
    nodata INTEGER NOT NULL,
    hours BLOB NOT NULL,
    PRIMARY KEY (day, sn)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_day_sn ON rollup_day(sn, day);
CREATE TABLE IF NOT EXISTS rollup_month (
    month INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service INTEGER NOT NULL,
    intact INTEGER NOT NULL,
    netok INTEGER NOT NULL,
    nodata INTEGER NOT NULL,
    PRIMARY KEY (month, sn)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outages (
    county TEXT NOT NULL,
    minute INTEGER NOT NULL,
    units INTEGER NOT NULL,
    sns TEXT NOT NULL,
    PRIMARY KEY (county, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outages_minute ON outages(minute);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    sn TEXT,
    county TEXT,
    opened_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    closed_ts INTEGER,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    acked_by TEXT,
    acked_ts REAL,
    webhook TEXT NOT NULL DEFAULT 'none',
    webhook_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts(closed_ts, kind);
"""

_REGISTRY_FIELDS = ("insurance_sn", "terminal_type", "model", "vendor", "institution", "stock_type", "status",
                    "link_type", "note")
_INSTITUTION_FIELDS = ("name", "county", "region", "type", "hours", "contact")
_REGISTRY_SORTS = {"sn": "r.sn", "institution": "r.institution", "county": "i.county", "status": "r.status",
                   "last_seen": "u.last_seen", "online": "u.online"}

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
        await self._db.executescript(_FLEET_SCHEMA)
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

    # registry (issue 4) ------------------------------------------------------------------
    async def upsert_institutions(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update institutions by code, all in one transaction."""
        now = time.time()
        try:
            await self.db.executemany(
                "INSERT INTO institutions(code, name, county, region, type, hours, contact, updated) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(code) DO UPDATE SET name=excluded.name, county=excluded.county, "
                "region=excluded.region, type=excluded.type, hours=excluded.hours, contact=excluded.contact, "
                "updated=excluded.updated",
                [(r["code"], *(r.get(f) or "" for f in _INSTITUTION_FIELDS), now) for r in rows],
            )
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise

    async def list_institutions(self, county: str | None = None) -> list[dict[str, Any]]:
        if county:
            cur = await self.db.execute("SELECT * FROM institutions WHERE county=? ORDER BY code", (county,))
        else:
            cur = await self.db.execute("SELECT * FROM institutions ORDER BY code")
        return [dict(r) for r in await cur.fetchall()]

    async def get_institution(self, code: str) -> dict[str, Any] | None:
        row = await (await self.db.execute("SELECT * FROM institutions WHERE code=?", (code,))).fetchone()
        return dict(row) if row else None

    async def upsert_registry_units(self, rows: list[dict[str, Any]], ts: int, by: str) -> None:
        """Register or update units in one transaction; a new unit or a changed status adds a history row."""
        db = self.db
        try:
            for r in rows:
                old = await (await db.execute("SELECT status, source FROM registry WHERE sn=?", (r["sn"],))).fetchone()
                values = {f: r.get(f) for f in _REGISTRY_FIELDS if f in r}
                if old is None:
                    values.setdefault("status", "in_service")
                    cols = ["sn", *values, "source", "registered_at"]
                    await db.execute(
                        f"INSERT INTO registry({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                        [r["sn"], *values.values(), "admin", time.time()],
                    )
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (r["sn"], ts, values["status"], by, "registered"))
                    continue
                if values:
                    sets = ", ".join(f"{k}=?" for k in values)
                    await db.execute(f"UPDATE registry SET {sets}, source='admin' WHERE sn=?", [*values.values(), r["sn"]])
                if "status" in values and values["status"] != old["status"]:
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (r["sn"], ts, values["status"], by, r.get("status_note") or "updated"))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    async def ensure_registered(self, first_ts: dict[str, int]) -> list[str]:
        """Units seen by ingest join the registry (in service, no institution) from their earliest sample.

        A later-arriving older sample moves that automatic start earlier. Returns the SNs added.
        """
        db = self.db
        added: list[str] = []
        try:
            for sn, ts in first_ts.items():
                cur = await db.execute(
                    "INSERT OR IGNORE INTO registry(sn, status, source, registered_at) VALUES (?,?,?,?)",
                    (sn, "in_service", "ingest", time.time()))
                if cur.rowcount:
                    added.append(sn)
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (sn, ts, "in_service", "ingest", "first seen"))
                else:
                    await db.execute(
                        "UPDATE status_history SET from_ts=? WHERE sn=? AND by='ingest' AND from_ts>? "
                        "AND (SELECT count(*) FROM status_history WHERE sn=?)=1", (ts, sn, ts, sn))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        return added

    async def change_status(self, changes: list[tuple[str, int, str, str, str]],
                            updates: dict[str, dict[str, Any]] | None = None) -> None:
        """Status changes ``(sn, from_ts, status, by, note)`` and field updates, all in one transaction."""
        db = self.db
        try:
            for sn, ts, status, by, note in changes:
                cur = await db.execute("UPDATE registry SET status=? WHERE sn=?", (status, sn))
                if not cur.rowcount:
                    raise KeyError(sn)
                await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                 (sn, ts, status, by, note))
            for sn, fields in (updates or {}).items():
                fields = {k: v for k, v in fields.items() if k in _REGISTRY_FIELDS}
                if fields:
                    await db.execute(f"UPDATE registry SET {', '.join(f'{k}=?' for k in fields)} WHERE sn=?",
                                     [*fields.values(), sn])
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    async def registry_query(self, filters: dict[str, Any], sort: str = "sn", descending: bool = False,
                             limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """Registered units joined with their institution and live state, filtered, sorted and paged.

        Filters work on the registry alone (county and region through the institutions' index), and the
        page is cut before the joins when sorting by SN, so a page of 50 out of 50,000 reads 50 joined rows.
        """
        where, args = [], []
        if filters.get("q"):
            where.append("(r.sn LIKE ? OR r.insurance_sn LIKE ?)")
            args += [f"%{filters['q']}%"] * 2
        for key, col in (("institution", "r.institution"), ("status", "r.status"), ("link_type", "r.link_type"),
                         ("stock_type", "r.stock_type"), ("vendor", "r.vendor"), ("model", "r.model")):
            if filters.get(key):
                where.append(f"{col} = ?")
                args.append(filters[key])
        for key in ("county", "region"):
            if filters.get(key):
                where.append(f"r.institution IN (SELECT code FROM institutions WHERE {key} = ?)")
                args.append(filters[key])
        if filters.get("sns") is not None:
            sns = list(filters["sns"]) or [""]
            where.append(f"r.sn IN ({','.join('?' * len(sns))})")
            args += sns
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = (await (await self.db.execute(f"SELECT count(*) FROM registry r {clause}", args)).fetchone())[0]
        direction = "DESC" if descending else "ASC"
        cols = ("SELECT r.*, i.name AS institution_name, i.county, i.region, i.type AS institution_type, "
                "u.first_seen, u.last_seen, u.online AS broker_session, u.agent_version, u.identity, u.inventory ")
        joins = "LEFT JOIN institutions i ON i.code = r.institution LEFT JOIN units u ON u.sn = r.sn "
        if sort == "sn" or sort not in _REGISTRY_SORTS:
            sql = (f"{cols} FROM (SELECT * FROM registry r {clause} ORDER BY r.sn {direction} LIMIT ? OFFSET ?) r "
                   f"{joins} ORDER BY r.sn {direction}")
        else:
            sql = (f"{cols} FROM registry r {joins} {clause} ORDER BY {_REGISTRY_SORTS[sort]} {direction}, r.sn "
                   "LIMIT ? OFFSET ?")
        cur = await self.db.execute(sql, [*args, limit, offset])
        out = []
        for row in await cur.fetchall():
            d = dict(row)
            for key in ("identity", "inventory"):
                d[key] = json.loads(d[key]) if d.get(key) else None
            d["broker_session"] = bool(d["broker_session"])
            out.append(d)
        return int(total), out

    async def status_histories(self, sns: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        if sns is None:
            cur = await self.db.execute("SELECT sn, from_ts, status, by, note FROM status_history ORDER BY sn, from_ts, id")
        else:
            sns = list(sns) or [""]
            cur = await self.db.execute(
                f"SELECT sn, from_ts, status, by, note FROM status_history WHERE sn IN ({','.join('?' * len(sns))}) "
                "ORDER BY sn, from_ts, id", sns)
        out: dict[str, list[dict[str, Any]]] = {}
        for r in await cur.fetchall():
            out.setdefault(r[0], []).append({"from_ts": r[1], "status": r[2], "by": r[3], "note": r[4]})
        return out

    async def status_changes_between(self, start: int, end: int) -> list[dict[str, Any]]:
        cur = await self.db.execute(
            "SELECT sn, from_ts, status, by, note FROM status_history WHERE from_ts >= ? AND from_ts < ? "
            "ORDER BY from_ts, id", (start, end))
        return [dict(r) for r in await cur.fetchall()]

    async def registry_index(self) -> list[dict[str, Any]]:
        """Every registered unit with the institution fields the counting and grouping need."""
        cur = await self.db.execute(
            "SELECT r.sn, r.institution, r.status, r.link_type, r.stock_type, r.terminal_type, r.model, r.vendor, "
            "i.name AS institution_name, i.county, i.region, i.type AS institution_type, i.hours "
            "FROM registry r LEFT JOIN institutions i ON i.code = r.institution")
        return [dict(r) for r in await cur.fetchall()]

    async def live_index(self) -> list[dict[str, Any]]:
        """Live state of every unit known to ingest: session, last message, identity, inventory, newest sample."""
        cur = await self.db.execute(
            "SELECT sn, online, state_ts, last_seen, first_seen, agent_version, identity, inventory, latest FROM units")
        out = []
        for r in await cur.fetchall():
            d = dict(r)
            for key in ("identity", "inventory", "latest"):
                d[key] = json.loads(d[key]) if d.get(key) else None
            out.append(d)
        return out

    # roll-ups ---------------------------------------------------------------------------
    async def meta_get(self, key: str) -> str | None:
        row = await (await self.db.execute("SELECT value FROM meta WHERE key=?", (key,))).fetchone()
        return None if row is None else str(row[0])

    async def meta_set(self, key: str, value: str) -> None:
        await self.db.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                              (key, value))
        await self.db.commit()

    async def write_hour_counts(self, items: list[tuple[str, int, int, int, tuple[int, int, int, int]]]) -> None:
        """Store hour counts ``(sn, day ordinal, hour index, hours in that day, counts)`` in one transaction.

        Each day row keeps its totals and the packed hours; month rows are kept as sums of their days.
        """
        from datetime import date

        db = self.db
        by_day: dict[tuple[str, int], list[tuple[int, int, tuple[int, int, int, int]]]] = {}
        for sn, day, idx, nh, counts in items:
            by_day.setdefault((sn, day), []).append((idx, nh, counts))
        try:
            for (sn, day), hours in by_day.items():
                row = await (await db.execute(
                    "SELECT service, intact, netok, nodata, hours FROM rollup_day WHERE day=? AND sn=?", (day, sn))).fetchone()
                nh = hours[0][1]
                old_tot = (0, 0, 0, 0) if row is None else tuple(row[:4])
                buf = bytearray((b"" if row is None else bytes(row[4]))[: 4 * nh].ljust(4 * nh, b"\0"))
                for idx, _nh, counts in hours:
                    buf[4 * idx: 4 * idx + 4] = bytes(counts)
                tot = (sum(buf[0::4]), sum(buf[1::4]), sum(buf[2::4]), sum(buf[3::4]))
                await db.execute("INSERT OR REPLACE INTO rollup_day VALUES (?,?,?,?,?,?,?)", (day, sn, *tot, bytes(buf)))
                delta = [a - b for a, b in zip(tot, old_tot, strict=True)]
                if any(delta):
                    d = date.fromordinal(day)
                    month = d.year * 12 + d.month - 1
                    await db.execute(
                        "INSERT INTO rollup_month VALUES (?,?,?,?,?,?) ON CONFLICT(month, sn) DO UPDATE SET "
                        "service=service+excluded.service, intact=intact+excluded.intact, "
                        "netok=netok+excluded.netok, nodata=nodata+excluded.nodata", (month, sn, *delta))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    async def rollup_sums(self, months: list[int], days: list[int], parts: list[tuple[int, int, int]],
                          sns: list[str] | None = None) -> dict[str, list[int]]:
        """Per-unit sums of whole months, whole days and hour slices ``(day, first hour, end hour)``."""
        out: dict[str, list[int]] = {}
        filt, fargs = "", []
        if sns is not None:
            chosen = list(sns) or [""]
            filt = f" AND sn IN ({','.join('?' * len(chosen))})"
            fargs = chosen

        def add(sn: str, s: int, i: int, o: int, d: int) -> None:
            acc = out.get(sn)
            if acc is None:
                out[sn] = [s, i, o, d]
            else:
                acc[0] += s
                acc[1] += i
                acc[2] += o
                acc[3] += d

        selects, args = [], []
        if months:
            selects.append(f"SELECT sn, service, intact, netok, nodata FROM rollup_month "
                           f"WHERE month IN ({','.join('?' * len(months))}){filt}")
            args += [*months, *fargs]
        if days:
            selects.append(f"SELECT sn, service, intact, netok, nodata FROM rollup_day "
                           f"WHERE day IN ({','.join('?' * len(days))}){filt}")
            args += [*days, *fargs]
        if selects:
            sql = ("SELECT sn, sum(service), sum(intact), sum(netok), sum(nodata) FROM ("
                   + " UNION ALL ".join(selects) + ") GROUP BY sn")
            for r in await (await self.db.execute(sql, args)).fetchall():
                add(r[0], r[1], r[2], r[3], r[4])
        for day, a, b in parts:
            cur = await self.db.execute(f"SELECT sn, hours FROM rollup_day WHERE day=?{filt}", [day, *fargs])
            for sn, blob in await cur.fetchall():
                part = bytes(blob)[4 * a: 4 * b]
                add(sn, sum(part[0::4]), sum(part[1::4]), sum(part[2::4]), sum(part[3::4]))
        return out

    async def rollup_days(self, sn: str, first_day: int, last_day: int) -> list[tuple[int, int, int, int, int, bytes]]:
        cur = await self.db.execute(
            "SELECT day, service, intact, netok, nodata, hours FROM rollup_day WHERE sn=? AND day BETWEEN ? AND ? ORDER BY day",
            (sn, first_day, last_day))
        return [(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in await cur.fetchall()]

    async def purge_rollups(self, before_day: int) -> int:
        cur = await self.db.execute("DELETE FROM rollup_day WHERE day < ?", (before_day,))
        n = cur.rowcount
        from datetime import date

        d = date.fromordinal(before_day)
        await self.db.execute("DELETE FROM rollup_month WHERE month < ?", (d.year * 12 + d.month - 1,))
        await self.db.commit()
        return n

    async def sample_facts(self, sns: list[str], start: int, end: int) -> list[tuple[str, int, int, int, int | None, str]]:
        """What counting needs of the samples touching ``[start, end)``: (sn, ts, interval, connected, rtt_ms,
        checks as stored JSON text), unparsed (the caller memoises the parse: most samples say the same)."""
        chosen = list(sns) or [""]
        cur = await self.db.execute(
            f"SELECT sn, ts, interval, connected, rtt_ms, checks FROM samples WHERE sn IN ({','.join('?' * len(chosen))}) "
            "AND ts < ? AND ts >= ? - 3600 AND ts + interval > ?", [*chosen, end, start, start])
        return await cur.fetchall()  # type: ignore[return-value]

    async def link_down_samples(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """(sn, ts, interval) of samples taken with the link down that touch ``[start, end)``."""
        cur = await self.db.execute(
            "SELECT sn, ts, interval FROM samples WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0",
            (end, start, start))
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def replace_outages(self, start: int, end: int, rows: list[tuple[str, int, int, list[str]]]) -> None:
        """Correlated link-down minutes ``(county, minute start, units, sns)`` for ``[start, end)``."""
        try:
            await self.db.execute("DELETE FROM outages WHERE minute >= ? AND minute < ?", (start, end))
            await self.db.executemany("INSERT OR REPLACE INTO outages VALUES (?,?,?,?)",
                                      [(c, m, n, json.dumps(sorted(s))) for c, m, n, s in rows])
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise

    async def outages_between(self, start: int, end: int, county: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT county, minute, units, sns FROM outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        cur = await self.db.execute(sql + " ORDER BY county, minute", args)
        return [{"county": r[0], "minute": r[1], "units": r[2], "sns": json.loads(r[3])} for r in await cur.fetchall()]

    async def events_between(self, start: int, end: int, kinds: list[str] | None = None,
                             sns: list[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT sn, ts, kind, data FROM events WHERE ts >= ? AND ts < ?"
        args: list[Any] = [start, end]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        cur = await self.db.execute(sql + " ORDER BY ts", args)
        return [{"sn": r[0], "ts": r[1], "kind": r[2], "data": json.loads(r[3])} for r in await cur.fetchall()]

    async def unit_samples_window(self, sn: str, start: int, end: int) -> list[dict[str, Any]]:
        """Full sample bodies of one unit in ``[start, end)``, oldest first."""
        cur = await self.db.execute("SELECT body FROM samples WHERE sn=? AND ts >= ? AND ts < ? ORDER BY ts", (sn, start, end))
        return [json.loads(r[0]) for r in await cur.fetchall()]

    # alerts -------------------------------------------------------------------------------
    async def raise_alert(self, key: str, kind: str, sn: str | None, county: str | None, ts: int, message: str,
                          data: dict[str, Any], webhook: bool) -> bool:
        """Open an alert (or refresh the open one with this key). Returns True when newly opened."""
        row = await (await self.db.execute("SELECT id, closed_ts FROM alerts WHERE key=?", (key,))).fetchone()
        payload = json.dumps(data, ensure_ascii=False)
        if row is not None and row[1] is None:
            await self.db.execute("UPDATE alerts SET last_ts=?, message=?, data=? WHERE id=?", (ts, message, payload, row[0]))
            await self.db.commit()
            return False
        if row is not None:  # closed before: reopen as a new occurrence, keeping its id
            await self.db.execute(
                "UPDATE alerts SET opened_ts=?, last_ts=?, closed_ts=NULL, message=?, data=?, acked_by=NULL, acked_ts=NULL, "
                "webhook=?, webhook_attempts=0 WHERE id=?", (ts, ts, message, payload, "pending" if webhook else "none", row[0]))
        else:
            await self.db.execute(
                "INSERT INTO alerts(key, kind, sn, county, opened_ts, last_ts, message, data, webhook) VALUES (?,?,?,?,?,?,?,?,?)",
                (key, kind, sn, county, ts, ts, message, payload, "pending" if webhook else "none"))
        await self.db.commit()
        return True

    async def close_alerts(self, kind: str, keep_keys: set[str], ts: int) -> int:
        cur = await self.db.execute("SELECT key FROM alerts WHERE kind=? AND closed_ts IS NULL", (kind,))
        gone = [r[0] for r in await cur.fetchall() if r[0] not in keep_keys]
        await self.db.executemany("UPDATE alerts SET closed_ts=? WHERE key=?", [(ts, k) for k in gone])
        await self.db.commit()
        return len(gone)

    async def list_alerts(self, open_only: bool = True, kind: str | None = None, sn: str | None = None,
                          limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        if open_only:
            where.append("closed_ts IS NULL")
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if sn:
            where.append("sn = ?")
            args.append(sn)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = (await (await self.db.execute(f"SELECT count(*) FROM alerts {clause}", args)).fetchone())[0]
        cur = await self.db.execute(f"SELECT * FROM alerts {clause} ORDER BY last_ts DESC, id DESC LIMIT ? OFFSET ?",
                                    [*args, limit, offset])
        out = []
        for r in await cur.fetchall():
            d = dict(r)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return int(total), out

    async def ack_alert(self, alert_id: int, by: str, ts: float) -> bool:
        cur = await self.db.execute("UPDATE alerts SET acked_by=?, acked_ts=? WHERE id=?", (by, ts, alert_id))
        await self.db.commit()
        return bool(cur.rowcount)

    async def pending_webhooks(self, limit: int = 50) -> list[dict[str, Any]]:
        cur = await self.db.execute("SELECT * FROM alerts WHERE webhook='pending' ORDER BY id LIMIT ?", (limit,))
        out = []
        for r in await cur.fetchall():
            d = dict(r)
            d["data"] = json.loads(d["data"])
            out.append(d)
        return out

    async def mark_webhook(self, alert_id: int, state: str, attempts: int) -> None:
        await self.db.execute("UPDATE alerts SET webhook=?, webhook_attempts=? WHERE id=?", (state, attempts, alert_id))
        await self.db.commit()
