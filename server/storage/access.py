"""Issue 18's stores: IP pools and addresses, network/business access applications, the business interfaces and
which terminal reaches them, the address each terminal reports, and service statistics (hourly aggregates per
terminal with day/month roll-ups per county and institution).

One set of queries for both backends (the engine's ``write()`` / ``reader()``, SQL both SQLite and PostgreSQL
run). The tables are created by storage's migrations (``ACCESS_SCHEMA`` below, schema 4 in ``schema.py``).

No address is ever handed out twice: ``ip_addresses.ip`` is the primary key, an allocation is an
``INSERT ... ON CONFLICT DO NOTHING RETURNING``; a process that loses a race on an address (another server
process on PostgreSQL) takes the next free one.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import date, timedelta
from typing import Any

ACCESS_SCHEMA = """
CREATE TABLE IF NOT EXISTS ip_pools (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    region TEXT NOT NULL,
    link_type TEXT NOT NULL,
    cidr TEXT NOT NULL,
    first_ip INTEGER NOT NULL,
    last_ip INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ip_pools_region ON ip_pools(region, link_type);
CREATE TABLE IF NOT EXISTS ip_addresses (
    ip INTEGER PRIMARY KEY,
    pool INTEGER NOT NULL,
    state TEXT NOT NULL,
    sn TEXT,
    institution TEXT,
    application INTEGER,
    note TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ip_addresses_pool ON ip_addresses(pool, ip);
CREATE INDEX IF NOT EXISTS ip_addresses_sn ON ip_addresses(sn);
CREATE TABLE IF NOT EXISTS access_applications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL,
    action TEXT NOT NULL,
    institution TEXT NOT NULL,
    county TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    sn TEXT NOT NULL DEFAULT '',
    link_type TEXT NOT NULL DEFAULT '',
    carrier TEXT NOT NULL DEFAULT '',
    interface TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    steps TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    ip INTEGER,
    reject_reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    created_by TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS access_applications_state ON access_applications(state, county);
CREATE INDEX IF NOT EXISTS access_applications_sn ON access_applications(sn);
CREATE TABLE IF NOT EXISTS access_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    application INTEGER NOT NULL,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    step TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS access_steps_application ON access_steps(application, id);
CREATE TABLE IF NOT EXISTS biz_interfaces (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    inputs TEXT NOT NULL DEFAULT '',
    outputs TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'active',
    updated REAL NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS biz_access (
    sn TEXT NOT NULL,
    interface TEXT NOT NULL,
    granted INTEGER NOT NULL DEFAULT 0,
    application INTEGER,
    reached INTEGER,
    reached_ts INTEGER,
    reported_ts INTEGER,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sn, interface)
);
CREATE TABLE IF NOT EXISTS unit_address (
    sn TEXT PRIMARY KEY,
    ip TEXT NOT NULL,
    link TEXT NOT NULL,
    ts INTEGER NOT NULL,
    prev_link TEXT NOT NULL DEFAULT '',
    prev_ip TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS service_hour (
    sn TEXT NOT NULL,
    hour INTEGER NOT NULL,
    county TEXT NOT NULL DEFAULT '',
    institution TEXT NOT NULL DEFAULT '',
    services INTEGER NOT NULL DEFAULT 0,
    face INTEGER NOT NULL DEFAULT 0,
    idcard INTEGER NOT NULL DEFAULT 0,
    evoucher INTEGER NOT NULL DEFAULT 0,
    other INTEGER NOT NULL DEFAULT 0,
    business TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (sn, hour)
);
CREATE TABLE IF NOT EXISTS service_county_day (
    county TEXT NOT NULL,
    day INTEGER NOT NULL,
    services INTEGER NOT NULL DEFAULT 0,
    face INTEGER NOT NULL DEFAULT 0,
    idcard INTEGER NOT NULL DEFAULT 0,
    evoucher INTEGER NOT NULL DEFAULT 0,
    other INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (county, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS service_inst_month (
    institution TEXT NOT NULL,
    month INTEGER NOT NULL,
    county TEXT NOT NULL DEFAULT '',
    services INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (institution, month)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS service_inst_month_county ON service_inst_month(county, month, institution, services);
"""
# The two roll-ups are WITHOUT ROWID (SQLite): the key is the table, so the year's top 10 reads the institutions'
# months in key order with no look-up per row (20,000 institutions x 13 months: ~0.1 s instead of ~0.7 s at load
# 14 on 2 cores); a scoped user's top 10 reads its counties' slice of the covering county index.

COUNTS = ("services", "face", "idcard", "evoucher", "other")
APP_COLUMNS = ("id", "domain", "action", "institution", "county", "region", "sn", "link_type", "carrier",
               "interface", "note", "steps", "step", "state", "ip", "reject_reason", "created", "created_by",
               "updated")
INTERFACE_COLUMNS = ("code", "name", "address", "inputs", "outputs", "description", "state", "updated",
                     "updated_by")


class AddressTaken(Exception):
    """A reserved address is already reserved or allocated."""


class PoolExhausted(Exception):
    """No free address left in any pool that fits."""


def ip_text(value: int | None) -> str | None:
    return None if value is None else str(ipaddress.ip_address(value))


def _app(row: Any) -> dict[str, Any]:
    d = {k: row[k] for k in APP_COLUMNS}
    d["steps"] = json.loads(d["steps"])
    d["ip"] = ip_text(d["ip"])
    return d


class AccessStore:
    """The queries of issue 18's network access, business access and service statistics, on a storage engine."""

    def __init__(self, storage: Any) -> None:
        self.s = storage

    async def _rows(self, sql: str, args: Any = ()) -> list[Any]:
        async with self.s.reader() as db:
            cur = await db.execute(sql, list(args))
            return list(await cur.fetchall())

    # IP pools --------------------------------------------------------------------------------------------
    async def add_pool(self, region: str, link_type: str, cidr: str, first: int, last: int, note: str,
                       by: str, ts: float) -> int:
        async with self.s.write() as db:
            overlap = await (await db.execute(
                "SELECT id, cidr FROM ip_pools WHERE first_ip <= ? AND last_ip >= ?", [last, first])).fetchone()
            if overlap is not None:
                raise AddressTaken(f"overlaps pool {overlap['id']} ({overlap['cidr']})")
            cur = await db.execute(
                "INSERT INTO ip_pools(region, link_type, cidr, first_ip, last_ip, note, created, created_by) "
                "VALUES (?,?,?,?,?,?,?,?) RETURNING id", [region, link_type, cidr, first, last, note, ts, by])
            return int((await cur.fetchone())[0])

    async def pools(self, regions: list[str] | None = None, link_type: str | None = None
                    ) -> list[dict[str, Any]]:
        where, args = [], []
        if regions is not None:
            where.append(f"p.region IN ({','.join('?' * len(regions))})" if regions else "1=0")
            args.extend(regions)
        if link_type:
            where.append("p.link_type = ?")
            args.append(link_type)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._rows(
            "SELECT p.id, p.region, p.link_type, p.cidr, p.first_ip, p.last_ip, p.note, p.created, p.created_by, "
            "(SELECT count(*) FROM ip_addresses a WHERE a.pool = p.id AND a.state = 'allocated') AS allocated, "
            "(SELECT count(*) FROM ip_addresses a WHERE a.pool = p.id AND a.state = 'reserved') AS reserved "
            f"FROM ip_pools p {clause} ORDER BY p.region, p.link_type, p.first_ip", args)
        out = []
        for r in rows:
            d = dict(r)
            d["size"] = d["last_ip"] - d["first_ip"] + 1
            d["free"] = d["size"] - d["allocated"] - d["reserved"]
            d["first_ip"], d["last_ip"] = ip_text(d["first_ip"]), ip_text(d["last_ip"])
            out.append(d)
        return out

    async def pool(self, pool_id: int) -> dict[str, Any] | None:
        rows = await self._rows("SELECT * FROM ip_pools WHERE id = ?", [pool_id])
        return dict(rows[0]) if rows else None

    async def pool_addresses(self, pool_id: int, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        total = (await self._rows("SELECT count(*) FROM ip_addresses WHERE pool = ?", [pool_id]))[0][0]
        rows = await self._rows("SELECT ip, pool, state, sn, institution, application, note, ts FROM ip_addresses "
                                "WHERE pool = ? ORDER BY ip LIMIT ? OFFSET ?", [pool_id, limit, offset])
        out = []
        for r in rows:
            d = dict(r)
            d["ip"] = ip_text(d["ip"])
            out.append(d)
        return int(total), out

    async def reserve(self, pool_id: int, ip: int, note: str, ts: float) -> None:
        async with self.s.write() as db:
            cur = await db.execute(
                "INSERT INTO ip_addresses(ip, pool, state, note, ts) VALUES (?,?,'reserved',?,?) "
                "ON CONFLICT(ip) DO NOTHING RETURNING ip", [ip, pool_id, note, ts])
            if await cur.fetchone() is None:
                raise AddressTaken(f"{ip_text(ip)} is already reserved or allocated")

    async def release_reserved(self, pool_id: int, ip: int) -> bool:
        async with self.s.write() as db:
            cur = await db.execute("DELETE FROM ip_addresses WHERE ip = ? AND pool = ? AND state = 'reserved' "
                                   "RETURNING ip", [ip, pool_id])
            return await cur.fetchone() is not None

    async def allocate(self, db: Any, regions: list[str], link_type: str, sn: str, institution: str,
                       application: int, ts: float) -> int:
        """The lowest free address of the first pool (in ``regions`` order: county before city) with one free,
        in the caller's write transaction; :class:`PoolExhausted` when none. Safe against other processes: the
        insert of an address someone else took meanwhile does nothing and the next free one is tried."""
        for region in regions:
            cur = await db.execute("SELECT id, first_ip, last_ip FROM ip_pools WHERE region = ? AND link_type = ? "
                                   "ORDER BY first_ip", [region, link_type])
            for pool in list(await cur.fetchall()):
                for _attempt in range(64):
                    cur = await db.execute("SELECT ip FROM ip_addresses WHERE pool = ? ORDER BY ip", [pool["id"]])
                    taken = [int(r[0]) for r in await cur.fetchall()]
                    candidate = _first_gap(int(pool["first_ip"]), int(pool["last_ip"]), taken)
                    if candidate is None:
                        break
                    cur = await db.execute(
                        "INSERT INTO ip_addresses(ip, pool, state, sn, institution, application, ts) "
                        "VALUES (?,?,'allocated',?,?,?,?) ON CONFLICT(ip) DO NOTHING RETURNING ip",
                        [candidate, pool["id"], sn, institution, application, ts])
                    if await cur.fetchone() is not None:
                        return candidate
        raise PoolExhausted(f"no free {link_type} address in {' / '.join(r for r in regions if r) or 'any pool'}")

    @staticmethod
    async def release_unit(db: Any, sn: str) -> list[int]:
        cur = await db.execute("DELETE FROM ip_addresses WHERE sn = ? AND state = 'allocated' RETURNING ip", [sn])
        return [int(r[0]) for r in await cur.fetchall()]

    async def allocations(self, sns: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each unit's allocated addresses with their pool's link type and range."""
        if not sns:
            return {}
        out: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(sns), 500):
            part = sns[i:i + 500]
            rows = await self._rows(
                "SELECT a.sn, a.ip, p.link_type, p.region, p.id AS pool FROM ip_addresses a "
                f"JOIN ip_pools p ON p.id = a.pool WHERE a.state = 'allocated' AND a.sn IN ({','.join('?' * len(part))})",
                part)
            for r in rows:
                out.setdefault(r["sn"], []).append({"ip": int(r["ip"]), "link_type": r["link_type"],
                                                    "region": r["region"], "pool": r["pool"]})
        return out

    # applications ----------------------------------------------------------------------------------------
    async def add_application(self, fields: dict[str, Any], steps: list[str], by: str, ts: float) -> int:
        async with self.s.write() as db:
            cur = await db.execute(
                "INSERT INTO access_applications(domain, action, institution, county, region, sn, link_type, carrier, "
                "interface, note, steps, step, state, created, created_by, updated) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?) RETURNING id",
                [fields["domain"], fields["action"], fields["institution"], fields.get("county", ""),
                 fields.get("region", ""), fields.get("sn", ""), fields.get("link_type", ""),
                 fields.get("carrier", ""), fields.get("interface", ""), fields.get("note", ""), json.dumps(steps),
                 f"pending_{steps[0]}" if steps else "approved", ts, by, ts])
            app_id = int((await cur.fetchone())[0])
            await db.execute("INSERT INTO access_steps(application, ts, actor, step, decision, note) "
                             "VALUES (?,?,?,?,?,?)", [app_id, ts, by, "apply", "submitted", fields.get("note", "")])
            return app_id

    async def application(self, app_id: int, db: Any = None) -> dict[str, Any] | None:
        if db is not None:
            row = await (await db.execute("SELECT * FROM access_applications WHERE id = ?", [app_id])).fetchone()
            return _app(row) if row is not None else None
        rows = await self._rows("SELECT * FROM access_applications WHERE id = ?", [app_id])
        return _app(rows[0]) if rows else None

    async def steps_of(self, app_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._rows(
            "SELECT ts, actor, role, step, decision, note FROM access_steps WHERE application = ? ORDER BY id",
            [app_id])]

    @staticmethod
    async def record_step(db: Any, app_id: int, ts: float, actor: str, role: str, step: str, decision: str,
                          note: str) -> None:
        await db.execute("INSERT INTO access_steps(application, ts, actor, role, step, decision, note) "
                         "VALUES (?,?,?,?,?,?,?)", [app_id, ts, actor, role, step, decision, note])

    @staticmethod
    async def move(db: Any, app_id: int, expect_state: str, state: str, step: int, ts: float,
                   ip: int | None = None, reject_reason: str = "") -> bool:
        """Move an application on, only from the state the caller read (two reviewers at once: one wins)."""
        cur = await db.execute(
            "UPDATE access_applications SET state = ?, step = ?, updated = ?, "
            "ip = COALESCE(?, ip), reject_reason = ? WHERE id = ? AND state = ? RETURNING id",
            [state, step, ts, ip, reject_reason, app_id, expect_state])
        return await cur.fetchone() is not None

    async def applications(self, filters: dict[str, Any], counties: list[str] | None, limit: int, offset: int
                           ) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        for col in ("domain", "action", "state", "institution", "sn", "link_type", "carrier", "interface", "county"):
            if filters.get(col):
                where.append(f"{col} = ?")
                args.append(filters[col])
        if counties is not None:
            where.append(f"county IN ({','.join('?' * len(counties))})" if counties else "1=0")
            args.extend(counties)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = (await self._rows(f"SELECT count(*) FROM access_applications {clause}", args))[0][0]
        rows = await self._rows(f"SELECT * FROM access_applications {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                                [*args, limit, offset])
        return int(total), [_app(r) for r in rows]

    # combined network query ------------------------------------------------------------------------------
    async def network_query(self, filters: dict[str, Any], counties: list[str] | None, limit: int, offset: int
                            ) -> tuple[int, list[dict[str, Any]]]:
        """Registered terminals with their allocated address, reported address, link type and carrier."""
        where, args = [], []
        if filters.get("ip") is not None:
            where.append("(a.ip = ? OR ua.ip = ?)")
            args.extend([filters["ip"], ip_text(filters["ip"])])
        for key, col in (("institution", "r.institution"), ("sn", "r.sn"), ("link_type", "r.link_type"),
                         ("county", "i.county")):
            if filters.get(key):
                where.append(f"{col} = ?")
                args.append(filters[key])
        if filters.get("carrier"):  # units.identity is json.dumps()'d with its defaults: match that very text
            # ESCAPE: PostgreSQL's LIKE would otherwise read the JSON's backslashes (\\u4e2d...) as escapes
            text = json.dumps({"carrier": filters["carrier"]})[1:-1]
            where.append("u.identity LIKE ? ESCAPE '!'")
            args.append("%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%")
        if counties is not None:
            where.append(f"i.county IN ({','.join('?' * len(counties))})" if counties else "1=0")
            args.extend(counties)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        base = ("FROM registry r LEFT JOIN institutions i ON i.code = r.institution "
                "LEFT JOIN ip_addresses a ON a.sn = r.sn AND a.state = 'allocated' "
                "LEFT JOIN unit_address ua ON ua.sn = r.sn LEFT JOIN units u ON u.sn = r.sn")
        total = (await self._rows(f"SELECT count(*) {base} {clause}", args))[0][0]
        rows = await self._rows(
            "SELECT r.sn, r.institution, i.name AS institution_name, i.county, i.region, r.link_type, a.ip, "
            f"ua.ip AS reported_ip, ua.link AS reported_link, ua.ts AS reported_ts, u.identity {base} {clause} "
            "ORDER BY r.sn LIMIT ? OFFSET ?", [*args, limit, offset])
        out = []
        for r in rows:
            d = dict(r)
            ident = json.loads(d.pop("identity") or "{}")
            d["carrier"] = ident.get("carrier")
            d["ip"] = ip_text(d["ip"])
            out.append(d)
        return int(total), out

    # reported addresses ----------------------------------------------------------------------------------
    async def note_address(self, sn: str, ip: str, link: str, ts: int) -> dict[str, Any] | None:
        """Store what a terminal reports; returns the previous report (None: first)."""
        async with self.s.write() as db:
            prev = await (await db.execute("SELECT ip, link, ts FROM unit_address WHERE sn = ?", [sn])).fetchone()
            if prev is not None and int(prev["ts"]) > ts:
                return dict(prev)  # an older report arriving late changes nothing
            await db.execute(
                "INSERT INTO unit_address(sn, ip, link, ts, prev_link, prev_ip) VALUES (?,?,?,?,'','') "
                "ON CONFLICT(sn) DO UPDATE SET prev_link = unit_address.link, prev_ip = unit_address.ip, "
                "ip = excluded.ip, link = excluded.link, ts = excluded.ts", [sn, ip, link, ts])
            return dict(prev) if prev is not None else None

    async def reported_addresses(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._rows("SELECT sn, ip, link, ts, prev_link, prev_ip FROM unit_address")]

    # business interfaces -------------------------------------------------------------------------------
    async def put_interface(self, fields: dict[str, Any], by: str, ts: float) -> bool:
        """Create or replace; True when it was new."""
        async with self.s.write() as db:
            existed = await (await db.execute("SELECT 1 FROM biz_interfaces WHERE code = ?",
                                              [fields["code"]])).fetchone()
            await db.execute(
                "INSERT INTO biz_interfaces(code, name, address, inputs, outputs, description, state, updated, "
                "updated_by) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(code) DO UPDATE SET name = excluded.name, "
                "address = excluded.address, inputs = excluded.inputs, outputs = excluded.outputs, "
                "description = excluded.description, state = excluded.state, updated = excluded.updated, "
                "updated_by = excluded.updated_by",
                [fields["code"], fields["name"], fields["address"], fields.get("inputs", ""),
                 fields.get("outputs", ""), fields.get("description", ""), fields.get("state", "active"), ts, by])
            return existed is None

    async def interfaces(self) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT b.*, (SELECT count(*) FROM biz_access x WHERE x.interface = b.code AND x.granted = 1) AS granted, "
            "(SELECT count(*) FROM biz_access x WHERE x.interface = b.code AND x.reached = 1) AS reached "
            "FROM biz_interfaces b ORDER BY b.code")
        return [dict(r) for r in rows]

    async def interface(self, code: str) -> dict[str, Any] | None:
        rows = await self._rows("SELECT * FROM biz_interfaces WHERE code = ?", [code])
        return dict(rows[0]) if rows else None

    @staticmethod
    async def grant(db: Any, sn: str, interface: str, granted: bool, application: int) -> None:
        await db.execute(
            "INSERT INTO biz_access(sn, interface, granted, application) VALUES (?,?,?,?) "
            "ON CONFLICT(sn, interface) DO UPDATE SET granted = excluded.granted, application = excluded.application",
            [sn, interface, int(granted), application])

    async def note_reach(self, rows: list[tuple[str, str, bool, int | None, int, str]]) -> None:
        """(sn, interface, reached, last success ts, reported ts, short detail) as the agent reports them."""
        async with self.s.write() as db:
            await db.executemany(
                "INSERT INTO biz_access(sn, interface, reached, reached_ts, reported_ts, detail) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(sn, interface) DO UPDATE SET reached = excluded.reached, "
                "reached_ts = CASE WHEN excluded.reached_ts IS NULL THEN biz_access.reached_ts ELSE excluded.reached_ts END, "
                "reported_ts = excluded.reported_ts, detail = excluded.detail "
                "WHERE biz_access.reported_ts IS NULL OR biz_access.reported_ts <= excluded.reported_ts",
                [(sn, i, int(ok), last, rep, detail) for sn, i, ok, last, rep, detail in rows])

    async def access_status(self, counties: list[str] | None, interface: str | None, state: str | None,
                            limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        if interface:
            where.append("x.interface = ?")
            args.append(interface)
        if state == "working":
            where.append("x.reached = 1")
        elif state == "failing":
            where.append("x.reached = 0")
        elif state == "unknown":
            where.append("x.reached IS NULL")
        if counties is not None:
            where.append(f"i.county IN ({','.join('?' * len(counties))})" if counties else "1=0")
            args.extend(counties)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        base = ("FROM biz_access x LEFT JOIN registry r ON r.sn = x.sn "
                "LEFT JOIN institutions i ON i.code = r.institution")
        total = (await self._rows(f"SELECT count(*) {base} {clause}", args))[0][0]
        rows = await self._rows(
            "SELECT x.sn, x.interface, x.granted, x.reached, x.reached_ts, x.reported_ts, x.detail, r.institution, "
            f"i.county {base} {clause} ORDER BY x.sn, x.interface LIMIT ? OFFSET ?", [*args, limit, offset])
        out = []
        for r in rows:
            d = dict(r)
            d["granted"] = bool(d["granted"])
            d["reached"] = None if d["reached"] is None else bool(d["reached"])
            out.append(d)
        return int(total), out

    # service statistics ----------------------------------------------------------------------------------
    async def put_service_hours(self, rows: list[dict[str, Any]]) -> int:
        """Each row (sn, hour, county, institution, counts, business) replaces that terminal's hour (the agent
        resends a whole hour; a resend is idempotent); the per-county day and per-institution month roll-ups
        move by the difference, in the same transaction. An hour keeps the county and institution it was first
        counted for (a unit moved later does not move its past). Batched: one read of the old rows, one upsert
        batch per table."""
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        for r in rows:
            latest[(r["sn"], int(r["hour"]))] = r  # the last report of an hour in this batch wins
        if not latest:
            return 0
        county_delta: dict[tuple[str, int], list[int]] = {}
        inst_delta: dict[tuple[str, int], list[Any]] = {}

        def roll(county: str, institution: str, hour: int, tz_offset: int, delta: list[int]) -> None:
            day = (hour + tz_offset) // 86400  # the fleet's local day
            acc = county_delta.setdefault((county, day), [0] * len(COUNTS))
            for i, v in enumerate(delta):
                acc[i] += v
            m = inst_delta.setdefault((institution, _month_of(day)), [county, 0])
            m[1] += delta[0]

        changed = []
        async with self.s.write() as db:
            old: dict[tuple[str, int], Any] = {}
            keys = sorted(latest)
            for i in range(0, len(keys), 400):
                part = keys[i:i + 400]
                sns = sorted({k[0] for k in part})
                hours = sorted({k[1] for k in part})
                cur = await db.execute(
                    "SELECT sn, hour, county, institution, services, face, idcard, evoucher, other FROM service_hour "
                    f"WHERE sn IN ({','.join('?' * len(sns))}) AND hour IN ({','.join('?' * len(hours))})",
                    [*sns, *hours])
                for o in await cur.fetchall():
                    old[(o["sn"], int(o["hour"]))] = o
            for key in keys:
                r, o = latest[key], old.get(key)
                new = [int(r[c]) for c in COUNTS]
                county, institution = (o["county"], o["institution"]) if o is not None else (r["county"], r["institution"])
                if o is not None:
                    before = [int(o[c]) for c in COUNTS]
                    if before == new:
                        continue
                    new_delta = [a - b for a, b in zip(new, before, strict=True)]
                else:
                    new_delta = new
                roll(county, institution, key[1], int(r["tz_offset"]), new_delta)
                changed.append((key[0], key[1], county, institution, *new,
                                json.dumps(r.get("business") or {}, sort_keys=True)))
            if not changed:
                return 0
            await db.executemany(
                "INSERT INTO service_hour(sn, hour, county, institution, services, face, idcard, evoucher, other, "
                "business) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(sn, hour) DO UPDATE SET "
                "services = excluded.services, face = excluded.face, idcard = excluded.idcard, "
                "evoucher = excluded.evoucher, other = excluded.other, business = excluded.business", changed)
            await db.executemany(
                "INSERT INTO service_county_day(county, day, services, face, idcard, evoucher, other) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(county, day) DO UPDATE SET "
                "services = service_county_day.services + excluded.services, "
                "face = service_county_day.face + excluded.face, idcard = service_county_day.idcard + excluded.idcard, "
                "evoucher = service_county_day.evoucher + excluded.evoucher, "
                "other = service_county_day.other + excluded.other",
                [(c, d, *v) for (c, d), v in sorted(county_delta.items())])
            await db.executemany(
                "INSERT INTO service_inst_month(institution, month, county, services) VALUES (?,?,?,?) "
                "ON CONFLICT(institution, month) DO UPDATE SET services = service_inst_month.services + "
                "excluded.services", [(i, m, c, n) for (i, m), (c, n) in sorted(inst_delta.items())])
        return len(changed)

    async def service_days(self, first_day: int, last_day: int, counties: list[str] | None
                           ) -> list[tuple[int, list[int]]]:
        where, args = ["day >= ?", "day <= ?"], [first_day, last_day]
        if counties is not None:
            where.append(f"county IN ({','.join('?' * len(counties))})" if counties else "1=0")
            args.extend(counties)
        rows = await self._rows(
            f"SELECT day, sum(services), sum(face), sum(idcard), sum(evoucher), sum(other) FROM service_county_day "
            f"WHERE {' AND '.join(where)} GROUP BY day ORDER BY day", args)
        return [(int(r[0]), [int(x or 0) for x in r[1:]]) for r in rows]

    async def top_institutions(self, first_month: int, last_month: int, counties: list[str] | None, n: int
                               ) -> list[tuple[str, int, str, str]]:
        """(code, services, name, county) of the ``n`` institutions with most services in the months."""
        where, args = ["month >= ?", "month <= ?"], [first_month, last_month]
        if counties is not None:
            where.append(f"county IN ({','.join('?' * len(counties))})" if counties else "1=0")
            args.extend(counties)
        rows = await self._rows(
            "SELECT t.institution, t.n, i.name, i.county FROM (SELECT institution, sum(services) AS n "
            f"FROM service_inst_month WHERE {' AND '.join(where)} GROUP BY institution ORDER BY n DESC, institution "
            "LIMIT ?) t LEFT JOIN institutions i ON i.code = t.institution ORDER BY t.n DESC, t.institution", [*args, n])
        return [(r[0], int(r[1]), r[2] or "", r[3] or "") for r in rows]

    async def services_by_level(self, first_month: int, last_month: int, counties: list[str] | None
                                ) -> list[tuple[str, int]]:
        """(institution level, services) over the months, per level of the institutions served ('' : not given,
        or an institution no longer in the registry), from the per-institution month roll-up."""
        where, args = ["m.month >= ?", "m.month <= ?"], [first_month, last_month]
        if counties is not None:
            where.append(f"m.county IN ({','.join('?' * len(counties))})" if counties else "1=0")
            args.extend(counties)
        rows = await self._rows(
            "SELECT coalesce(i.level, '') AS level, sum(m.services) FROM service_inst_month m LEFT JOIN institutions i "
            f"ON i.code = m.institution WHERE {' AND '.join(where)} GROUP BY coalesce(i.level, '') ORDER BY 1", args)
        return [(r[0] or "", int(r[1] or 0)) for r in rows]

    # deployment coverage ---------------------------------------------------------------------------------
    async def coverage_rows(self, model: str | None = None) -> list[dict[str, Any]]:
        """Per institution: type, level, county, region, deployed terminals (of ``model`` if given), the first
        one's registration time and every one's (``times``). Two plain reads merged here: a grouped join of 50,000
        units with 20,000 institutions sorted on four columns cost more than both."""
        insts = await self._rows("SELECT code, type, county, region, level FROM institutions")
        units = await self._rows(
            "SELECT institution, registered_at FROM registry WHERE stock_type = 'deployed' AND institution IS NOT NULL"
            + (" AND model = ?" if model else ""), [model] if model else [])
        times: dict[str, list[float]] = {}
        for r in units:
            times.setdefault(r[0], []).append(float(r[1]))
        out = []
        for r in insts:
            mine = times.get(r[0], [])
            out.append({"code": r[0], "type": r[1], "county": r[2], "region": r[3], "level": r[4], "units": len(mine),
                        "first_ts": min(mine) if mine else None, "times": mine})
        return out

    async def map_rows(self) -> list[dict[str, Any]]:
        """Per county (and its city): institutions, deployed terminals, those online now."""
        units = await self._rows(
            "SELECT i.county, i.region, count(r.sn) AS units, sum(CASE WHEN u.online = 1 THEN 1 ELSE 0 END) AS online "
            "FROM registry r JOIN institutions i ON i.code = r.institution LEFT JOIN units u ON u.sn = r.sn "
            "WHERE r.stock_type = 'deployed' GROUP BY i.county, i.region")
        insts = await self._rows("SELECT county, region, count(*) AS n FROM institutions GROUP BY county, region")
        out: dict[tuple[str, str], dict[str, Any]] = {
            (r["county"] or "", r["region"] or ""): {"name": r["county"] or "", "region": r["region"] or "",
                                                     "units": 0, "online": 0, "institutions": int(r["n"])}
            for r in insts}
        for r in units:
            a = out.get((r["county"] or "", r["region"] or ""))
            if a is not None:
                a["units"], a["online"] = int(r["units"]), int(r["online"] or 0)
        return list(out.values())

    # the map's figures in parts (server/access/service.py ``Access.map_rows`` keeps the registry's between requests) --
    async def institutions_by_place(self) -> list[tuple[str, str, int]]:
        """(county, region, institutions) of every county and city that has institutions."""
        rows = await self._rows("SELECT county, region, count(*) FROM institutions GROUP BY county, region")
        return [(r[0] or "", r[1] or "", int(r[2])) for r in rows]

    async def deployed_places(self) -> list[tuple[str, str, str]]:
        """(SN, county, region) of every deployed unit of a registered institution: the units the map counts."""
        rows = await self._rows("SELECT r.sn, i.county, i.region FROM registry r JOIN institutions i "
                                "ON i.code = r.institution WHERE r.stock_type = 'deployed'")
        return [(r[0], r[1] or "", r[2] or "") for r in rows]

    async def never_heard(self) -> list[str]:
        """Deployed units nothing has been heard from (no live row): never online."""
        rows = await self._rows("SELECT r.sn FROM registry r WHERE r.stock_type = 'deployed' "
                                "AND NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn)")
        return [r[0] for r in rows]

    async def not_online(self) -> list[str]:
        """Units whose live row says they are not online now (a few thousand of 50,000 on a normal day)."""
        return [r[0] for r in await self._rows("SELECT sn FROM units WHERE online <> 1")]

    async def units_heard(self) -> int:
        """A number that grows whenever a unit is first heard (the storage's ``units_grown_sql``)."""
        row = await self.s._quick_one(self.s.units_grown_sql)
        return int(row[0] or 0) if row else 0

    async def counties_of_cities(self, cities: list[str]) -> list[str]:
        if not cities:
            return []
        rows = await self._rows(f"SELECT DISTINCT county FROM institutions WHERE region IN "
                                f"({','.join('?' * len(cities))})", cities)
        return [r[0] for r in rows if r[0]]


def _first_gap(first: int, last: int, taken: list[int]) -> int | None:
    expect = first
    for ip in taken:
        if ip > expect:
            break
        if ip == expect:
            expect += 1
    return expect if expect <= last else None


def _month_of(day: int) -> int:
    """YYYYMM of a day number (days since 1970-01-01)."""
    d = date(1970, 1, 1) + timedelta(days=day)
    return d.year * 100 + d.month
