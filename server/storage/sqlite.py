"""The domain stores' SQL, one implementation for both backends, and the SQLite storage.

:class:`SqlStore` holds the queries of every domain (units and ingest, samples, registry, roll-ups and slot codes,
outages, data use, alerts; users, sessions and tokens are :class:`~server.storage.accounts.AccountStore`'s) written
against the engine's small surface (``server/storage/engine.py``) in the SQL both SQLite and PostgreSQL run;
:class:`SqliteStorage` is it on SQLite (:class:`SqliteEngine`),
:class:`server.storage.postgres.PostgresStorage` on PostgreSQL.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from typing import Any

import msgspec

from .accounts import AccountStore, Within, places_sql, units_within_sql
from .alerts import AlertStore
from .base import EventRow, SampleRow, UnitQuery
from .datause import DataUseStore
from .engine import (  # noqa: F401  (re-exported: the names other modules import from here)
    VERSION_KEYS,
    VERSION_TTL_S,
    SqliteEngine,
    private_database,
    schema_version,
    too_new,
)
from .reportfiles import ReportFileStore
from .rollups import RollupStore
from .schema import (  # noqa: F401
    _DEAD_LETTER_SCHEMA,
    _FLEET_SCHEMA,
    _SCHEMA,
    SCHEMA_VERSION,
    SchemaTooNew,
)

log = logging.getLogger(__name__)

# Ingest's dead letters: a message that passed the boundary but could not be stored even alone. Kept (bounded)
# with its reason and its validated rows, so nothing is lost and an administrator can see and replay it.
DEAD_LETTERS_KEPT = 10_000

_REGISTRY_FIELDS = ("insurance_sn", "terminal_type", "model", "vendor", "institution", "stock_type", "status",
                    "link_type", "note")
_INSTITUTION_FIELDS = ("name", "county", "region", "type", "hours", "contact", "level")
_REGISTRY_SORTS = {"sn": "r.sn", "institution": "r.institution", "county": "i.county", "status": "r.status",
                   "last_seen": "u.last_seen", "online": "u.online"}

_UNIT_SORTS = {"sn": "sn", "last_seen": "last_seen", "first_seen": "first_seen", "online": "online"}


def _unit(row: Any) -> dict[str, Any]:
    d = dict(row)
    for key in ("latest", "inventory", "identity"):
        d[key] = json.loads(d[key]) if d.get(key) else None
    d["online"] = bool(d["online"])
    return d


_json_decode = msgspec.json.decode  # the same values as json.loads, faster

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}  # SQLite's LIKE folds ASCII letters only
_CONTAINS_MAX = 2000  # more matches than this: page them with LIKE instead of a list of SNs

_COUNT_CACHE_S = 3600.0  # a registry count is reused this long at most (keyed by registry_version, which every
# registry or institution write bumps, so another process's write is seen within VERSION_TTL_S anyway)


def prefix_range(prefix: str) -> tuple[str, str]:
    """``[low, high)`` such that ``low <= x < high`` exactly when ``x`` starts with ``prefix`` (index-friendly)."""
    return prefix, prefix + "\U0010ffff"


class SqlStore(AlertStore, RollupStore, DataUseStore, ReportFileStore):
    """Every domain's queries, on an engine (``write()``, ``_all``, ``_quick``, ... and the dialect hooks)."""

    def __init__(self) -> None:
        self._registry_gen = 0  # bumped by every registry / institution write of this process
        self._counts: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._haystack: tuple[str, int, str, list[int], list[str]] | None = None  # see _sn_contains

    def _registry_written(self) -> None:
        self._registry_gen += 1
        self._counts.clear()
        self._versions_at = float("-inf")

    # ingest --------------------------------------------------------------------
    async def store_telemetry(self, samples: list[SampleRow], events: list[EventRow]) -> int:
        now = time.time()
        stored = 0
        async with self.write() as db:
            stored += await self.insert_ignore(db, "samples", [
                (s.sn, s.epoch, s.seq, s.ts, s.interval, s.clock, int(s.connected), s.rtt_ms,
                 json.dumps(s.checks, ensure_ascii=False, separators=(",", ":")),
                 json.dumps(s.body, ensure_ascii=False, separators=(",", ":")), s.received_at)
                for s in samples])
            stored += await self.insert_ignore(db, "events", [
                (e.sn, e.epoch, e.seq, e.ts, e.kind, json.dumps(e.data, ensure_ascii=False), e.received_at)
                for e in events])
            # registry: first/last seen, newest sample, inventory
            latest: dict[str, SampleRow] = {}
            for s in samples:
                if s.sn not in latest or s.ts > latest[s.sn].ts:
                    latest[s.sn] = s
            sns = sorted({s.sn for s in samples} | {e.sn for e in events})  # sorted: two processes lock rows in
            # the same order, so their transactions cannot deadlock on units
            await db.executemany(  # one batch of statements (PostgreSQL: one round trip), not one per unit
                "INSERT INTO units(sn, first_seen, last_seen) VALUES (?,?,?) "
                "ON CONFLICT(sn) DO UPDATE SET last_seen=excluded.last_seen", [(sn, now, now) for sn in sns])
            await db.executemany(
                "UPDATE units SET latest_ts=?, latest=? WHERE sn=? AND (latest_ts IS NULL OR latest_ts <= ?)",
                [(s.ts, json.dumps(s.body, ensure_ascii=False), sn, s.ts) for sn, s in sorted(latest.items())])
            spans: dict[str, list[int]] = {}  # the hours these samples touch, kept with them (recount_queue)
            for s in samples:
                span = spans.setdefault(s.sn, [s.ts, s.ts + s.interval])
                span[0], span[1] = min(span[0], s.ts), max(span[1], s.ts + s.interval)
            await db.executemany("INSERT INTO recount_queue(sn, from_ts, to_ts) VALUES (?,?,?)",
                                 [(sn, a, b) for sn, (a, b) in sorted(spans.items())])
            for e in events:
                if e.kind == "inventory":
                    await db.execute("UPDATE units SET inventory=? WHERE sn=?", (json.dumps(e.data, ensure_ascii=False), e.sn))
                if e.kind in ("inventory", "identity", "sim_changed"):
                    ident = {k: e.data.get(k) for k in ("iccid", "imsi", "imei", "carrier", "mcc_mnc",
                                                          "modem_model", "modem_firmware") if e.data.get(k)}
                    if ident:
                        await db.execute("UPDATE units SET identity=? WHERE sn=?", (json.dumps(ident), e.sn))
        return stored

    async def set_state(self, sn: str, online: bool, ts: float, reason: str, version: str) -> None:
        now = time.time()
        async with self.write() as db:
            await db.execute(
                "INSERT INTO units(sn, first_seen, last_seen, online, state_ts, state_reason, agent_version) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(sn) DO UPDATE SET online=excluded.online, state_ts=excluded.state_ts, "
                "state_reason=excluded.state_reason, last_seen=CASE WHEN units.last_seen > excluded.last_seen THEN units.last_seen ELSE excluded.last_seen END, "
                "agent_version=CASE WHEN excluded.agent_version<>'' THEN excluded.agent_version ELSE units.agent_version END",
                (sn, now, now, int(online), ts, reason, version),
            )

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
        if query.within is not None:
            cond, more = units_within_sql(query.within)
            where.append(cond)
            args.extend(more)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = _UNIT_SORTS.get(query.sort, "sn")
        total = (await self._one(f"SELECT count(*) FROM units {clause}", args))[0]
        rows = await self._all(
            f"SELECT * FROM units {clause} ORDER BY {order} {'DESC' if query.descending else 'ASC'}, sn LIMIT ? OFFSET ?",
            [*args, query.limit, query.offset],
        )
        return int(total), [_unit(r) for r in rows]

    async def get_unit(self, sn: str) -> dict[str, Any] | None:
        row = await self._one("SELECT * FROM units WHERE sn=?", (sn,))
        return _unit(row) if row else None

    async def recent_samples(self, sn: str, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        if before is None:
            rows = await self._all("SELECT body FROM samples WHERE sn=? ORDER BY ts DESC LIMIT ?", (sn, limit))
        else:
            rows = await self._all(
                "SELECT body FROM samples WHERE sn=? AND ts < ? ORDER BY ts DESC LIMIT ?", (sn, before, limit))
        return [json.loads(r[0]) for r in rows]

    async def samples_between(self, sns: list[str] | None, start: int, end: int) -> list[SampleRow]:
        sql = "SELECT sn, epoch, seq, ts, interval, clock, connected, rtt_ms, checks, received_at FROM samples WHERE ts < ? AND ts + interval > ?"
        args: list[Any] = [end, start]
        if sns is not None:
            sql += f" AND sn IN ({','.join('?' * len(sns))})"
            args.extend(sns)
        return [
            SampleRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], json.loads(r[8]), {}, r[9])
            for r in await self._all(sql + " ORDER BY sn, ts", args)
        ]

    async def count_samples(self) -> int:
        return int((await self._one("SELECT count(*) FROM samples"))[0])

    async def purge_events(self, before_ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM events WHERE ts < ?", (before_ts,))
        return cur.rowcount

    # dead letters --------------------------------------------------------------------
    async def add_dead_letter(self, received_at: float, sn: str, topic: str, reason: str, size: int, sha256: str,
                              body: str) -> None:
        """Keep one message ingest could not store; only the newest :data:`DEAD_LETTERS_KEPT` are kept."""
        async with self.write() as db:
            cur = await db.execute(
                "INSERT INTO dead_letters(received_at, sn, topic, reason, size, sha256, body) VALUES (?,?,?,?,?,?,?) "
                "RETURNING id", (received_at, sn, topic, reason[:500], size, sha256, body))
            new_id = int((await cur.fetchone())[0])
            if new_id % 100 == 0:
                await db.execute("DELETE FROM dead_letters WHERE id <= ?", (new_id - DEAD_LETTERS_KEPT,))

    async def dead_letters(self, limit: int = 100, sn: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        where, args = ("WHERE sn = ?", [sn]) if sn else ("", [])
        total = int((await self._one(f"SELECT count(*) FROM dead_letters {where}", args))[0])
        rows = await self._all(f"SELECT id, received_at, sn, topic, reason, size, sha256, body FROM dead_letters {where} "
                               "ORDER BY id DESC LIMIT ?", [*args, limit])
        return total, [dict(r) for r in rows]

    # registry (issue 4) ------------------------------------------------------------------
    async def upsert_institutions(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update institutions by code, all in one transaction. An existing institution changes only in
        the fields a row gives (an import file's columns); a new one (which needs a name) takes the table's defaults
        for the others."""
        self._registry_written()
        now = time.time()
        batches: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for r in rows:
            given = tuple(f for f in _INSTITUTION_FIELDS if f in r)
            batches.setdefault(given, []).append((*(r[f] or "" for f in given), now, r["code"]))
        async with self.write() as db:
            for given, values in batches.items():
                cols = (*given, "updated")
                await db.executemany(f"UPDATE institutions SET {', '.join(f'{c}=?' for c in cols)} WHERE code=?",
                                     values)
                if "name" in given:  # the new ones (SQLite checks NOT NULL before an upsert's conflict)
                    await db.executemany(
                        f"INSERT INTO institutions({', '.join(cols)}, code) VALUES ({','.join('?' * (len(cols) + 1))}) "
                        "ON CONFLICT(code) DO NOTHING", values)
            await self._bump(db, "registry_version")
        self._registry_written()

    async def list_institutions(self, county: str | None = None, within: Within = None, level: str | None = None
                                ) -> list[dict[str, Any]]:
        cond, args = places_sql(within)
        if county:
            cond += " AND county=?"
            args.append(county)
        if level is not None:
            cond += " AND level=?"
            args.append(level)
        rows = await self._all(f"SELECT * FROM institutions WHERE {cond} ORDER BY code", args)
        return [dict(r) for r in rows]

    async def get_institution(self, code: str) -> dict[str, Any] | None:
        row = await self._one("SELECT * FROM institutions WHERE code=?", (code,))
        return dict(row) if row else None

    async def upsert_registry_units(self, rows: list[dict[str, Any]], ts: int, by: str) -> None:
        """Register or update units in one transaction; a new unit or a changed status adds a history row."""
        self._registry_written()
        async with self.write() as db:
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
            await self._bump(db, "registry_version")
        self._registry_written()

    async def ensure_registered(self, first_ts: dict[str, int]) -> list[str]:
        """Units seen by ingest join the registry (in service, no institution) from their earliest sample.

        A later-arriving older sample moves that automatic start earlier. Returns the SNs added.
        """
        self._registry_written()
        added: list[str] = []
        async with self.write() as db:
            for sn, ts in first_ts.items():
                cur = await db.execute(
                    "INSERT INTO registry(sn, status, source, registered_at) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                    (sn, "in_service", "ingest", time.time()))
                if cur.rowcount:
                    added.append(sn)
                    await db.execute("INSERT INTO status_history(sn, from_ts, status, by, note) VALUES (?,?,?,?,?)",
                                     (sn, ts, "in_service", "ingest", "first seen"))
                else:
                    await db.execute(
                        "UPDATE status_history SET from_ts=? WHERE sn=? AND by='ingest' AND from_ts>? "
                        "AND (SELECT count(*) FROM status_history WHERE sn=?)=1", (ts, sn, ts, sn))
            await self._bump(db, "registry_version")
        self._registry_written()
        return added

    async def change_status(self, changes: list[tuple[str, int, str, str, str]],
                            updates: dict[str, dict[str, Any]] | None = None) -> None:
        """Status changes ``(sn, from_ts, status, by, note)`` and field updates, all in one transaction."""
        self._registry_written()
        async with self.write() as db:
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
            await self._bump(db, "registry_version")
        self._registry_written()

    async def registry_query(self, filters: dict[str, Any], sort: str = "sn", descending: bool = False,
                             limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """Registered units joined with their institution and live state, filtered, sorted and paged.

        ``filters["q"]`` matches the start of the SN or the insurance SN through their indexes
        (``filters["match"] == "contains"``: anywhere in them, which reads every row). Filters work on the
        registry alone (county and region through the institutions' index; ``registry_filter`` covers the common
        filters), and the page's keys are found before the joins, so a page of 50 out of 50,000 reads 50 joined
        rows. The total is not counted when the page shows it (a short page), and a count is otherwise reused until
        the registry changes (at most ``_COUNT_CACHE_S``)."""
        where, args = [], []
        if filters.get("q"):
            q = str(filters["q"])
            found = await self._sn_contains(q) if filters.get("match") == "contains" else None
            if found is not None:  # the SNs holding q, from this process's in-memory text of every SN
                where.append(f"r.sn IN ({','.join('?' * len(found))})" if found else "1 = 0")
                args += found
            elif filters.get("match") == "contains":
                where.append("(r.sn LIKE ? ESCAPE '\\' OR r.insurance_sn LIKE ? ESCAPE '\\')")
                pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                args += [pattern] * 2
            else:
                lo, hi = prefix_range(q)
                where.append("((r.sn >= ? AND r.sn < ?) OR (r.insurance_sn >= ? AND r.insurance_sn < ?))")
                args += [lo, hi, lo, hi]
        for key, col in (("institution", "r.institution"), ("status", "r.status"), ("link_type", "r.link_type"),
                         ("stock_type", "r.stock_type"), ("vendor", "r.vendor"), ("model", "r.model"),
                         ("terminal_type", "r.terminal_type")):
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
        if filters.get("within") is not None:  # a scoped caller's cities and counties
            cond, more = places_sql(filters["within"])
            where.append(f"r.institution IN (SELECT code FROM institutions WHERE {cond})")
            args += more
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        direction = "DESC" if descending else "ASC"
        cols = ("SELECT r.*, i.name AS institution_name, i.county, i.region, i.type AS institution_type, "
                "u.first_seen, u.last_seen, u.online AS broker_session, u.agent_version, u.identity, u.inventory ")
        joins = "LEFT JOIN institutions i ON i.code = r.institution LEFT JOIN units u ON u.sn = r.sn "
        if sort == "last_seen" and descending:
            rows = await self._by_last_seen_desc(cols, joins, clause, args, limit, offset)
        elif sort == "last_seen":
            rows = await self._by_last_seen_asc(cols, joins, clause, args, limit, offset)
        else:  # the page's keys (by SN: from the indexes alone, mostly), then the joined rows of those 50
            by_sn = sort == "sn" or sort not in _REGISTRY_SORTS
            order = f"r.sn {direction}" if by_sn else f"{_REGISTRY_SORTS[sort]} {direction}, r.sn"
            quick = by_sn and "LIKE" not in clause  # by SN: an index walk; others sort (or LIKE-scan) every row
            keys = await (self._quick if quick else self._all)(
                f"SELECT r.sn FROM registry r {'' if by_sn else joins} {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, limit, offset])
            rows = await self._page([k[0] for k in keys], cols, joins)
        if len(rows) < limit and (rows or offset == 0):
            total = offset + len(rows)  # the page ends the list: no count needed
        else:
            total = await self._registry_count(clause, args)
        out = []
        for row in rows:
            d = dict(row)
            for key in ("identity", "inventory"):
                d[key] = _json_decode(d[key]) if d.get(key) else None
            d["broker_session"] = bool(d["broker_session"])
            out.append(d)
        return int(total), out

    async def _sn_contains(self, q: str) -> list[str] | None:
        """SNs whose SN or insurance SN holds ``q`` (ASCII letters in any case, as SQLite's LIKE), found with
        ``str.find`` in one text of every registered SN, kept per ``registry_version``: ~1 ms instead of a LIKE
        over every row (twice, with the count). None when the text cannot answer (q with a separator, or more
        than ``_CONTAINS_MAX`` matches: then the LIKE scan pages them)."""
        if not q or "\n" in q or "\t" in q:
            return None
        _v, _g, text, starts, sns = await self._sn_text()
        needle = q.translate(_ASCII_LOWER)
        found: list[str] = []
        i = text.find(needle)
        while i >= 0:
            k = bisect.bisect_right(starts, i) - 1
            found.append(sns[k])
            if len(found) > _CONTAINS_MAX:
                return None
            nxt = starts[k + 1] if k + 1 < len(starts) else len(text)
            i = text.find(needle, nxt)  # next line: one hit per unit
        return found

    async def warm(self) -> None:
        """Build this process's in-memory indexes before the first request needs them (the text of every SN
        for substring search: ~0.1 s at 50,000 units, paid by a request otherwise)."""
        await self._sn_text()

    async def _sn_text(self) -> tuple[str, int, str, list[int], list[str]]:
        version = (await self.versions())["registry_version"]
        hay = self._haystack
        if hay is None or hay[0] != version or hay[1] != self._registry_gen:
            gen = self._registry_gen
            rows = await self._all("SELECT sn, insurance_sn FROM registry ORDER BY sn")
            sns = [r[0] for r in rows]
            lines = [f"{r[0]}\t{r[1]}".translate(_ASCII_LOWER) for r in rows]
            starts, pos = [], 0
            for line in lines:
                starts.append(pos)
                pos += len(line) + 1
            hay = (version, gen, "\n".join(lines), starts, sns)
            self._haystack = hay
        return hay

    async def _by_last_seen_desc(self, cols: str, joins: str, clause: str, args: list[Any], limit: int,
                                 offset: int) -> list[Any]:
        """Most recently heard first: walk ``units(last_seen)`` backwards and keep the registry's matches (a page
        reads about page / share-matching rows, not the whole filtered set sorted); units never heard from come
        last, by SN. Ties in ``last_seen`` go by SN descending."""
        seen_clause = f"{clause} AND" if clause else "WHERE"
        keys = await self._all(
            f"SELECT u.sn FROM units u CROSS JOIN registry r ON r.sn = u.sn {clause} "  # CROSS: units first
            "ORDER BY u.last_seen DESC, u.sn DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        sns = [k[0] for k in keys]
        if len(sns) < limit:
            n_seen = offset + len(sns) if sns else int((await self._one(
                f"SELECT count(*) FROM units u JOIN registry r ON r.sn = u.sn {clause}", args))[0])
            rest = await self._all(
                f"SELECT r.sn FROM registry r {seen_clause} NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn) "
                "ORDER BY r.sn LIMIT ? OFFSET ?", [*args, limit - len(sns), max(0, offset - n_seen)])
            sns += [k[0] for k in rest]
        return await self._page(sns, cols, joins)

    async def _by_last_seen_asc(self, cols: str, joins: str, clause: str, args: list[Any], limit: int,
                                offset: int) -> list[Any]:
        """Oldest report first: units never heard from first (by SN), then a walk up ``units(last_seen)``
        keeping the registry's matches; ties go by SN. How many matching units were never heard from is kept
        until the registry changes or a unit is first heard (``units`` grows): a scan of the registry, ~8 ms
        at 50,000 units, instead of sorting every match (~15 ms)."""
        seen_clause = f"{clause} AND" if clause else "WHERE"
        never = f"{seen_clause} NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn)"
        grown = (await self._quick_one(self.units_grown_sql))[0]
        walk = self._quick if offset < 1000 else self._all  # a first page reads about page / share rows
        key = ("never_heard", (await self.versions())["registry_version"], self._registry_gen, grown, clause, *args)
        hit = self._counts.get(key)
        if hit is not None and time.monotonic() - hit[0] < _COUNT_CACHE_S:
            n_never = hit[1]
        else:
            n_never = int((await self._one(f"SELECT count(*) FROM registry r {never}", args))[0])
            self._keep_count(key, n_never)
        sns: list[str] = []
        if offset < n_never:
            sns = [k[0] for k in await self._all(f"SELECT r.sn FROM registry r {never} ORDER BY r.sn LIMIT ? OFFSET ?",
                                                 [*args, limit, offset])]
        if len(sns) < limit:
            keys = await walk(
                f"SELECT u.sn FROM units u CROSS JOIN registry r ON r.sn = u.sn {clause} "  # CROSS: units first
                "ORDER BY u.last_seen ASC, u.sn ASC LIMIT ? OFFSET ?",
                [*args, limit - len(sns), max(0, offset - n_never)])
            sns += [k[0] for k in keys]
        return await self._page(sns, cols, joins)

    async def _page(self, sns: list[str], cols: str, joins: str) -> list[Any]:
        """The joined rows of ``sns``, in that order."""
        if not sns:
            return []
        rows = await self._quick(f"{cols} FROM registry r {joins} WHERE r.sn IN ({','.join('?' * len(sns))})", sns)
        pos = {sn: k for k, sn in enumerate(sns)}
        return sorted(rows, key=lambda r: pos[r["sn"]])

    async def _registry_count(self, clause: str, args: list[Any]) -> int:
        key = ((await self.versions())["registry_version"], clause, *args)  # another process's write: a new key
        now = time.monotonic()
        hit = self._counts.get(key)
        if hit is not None and now - hit[0] < _COUNT_CACHE_S:
            return hit[1]
        gen = self._registry_gen
        # at most a scan of one covering index (~3 ms at 50,000 units): inline, unless a LIKE reads every row
        count = self._all if "LIKE" in clause else self._quick
        total = int((await count(f"SELECT count(*) FROM registry r {clause}", args))[0][0])
        if gen == self._registry_gen:  # no registry write meanwhile
            self._keep_count(key, total)
        return total

    def _keep_count(self, key: tuple[Any, ...], n: int) -> None:
        """Remember a count, dropping the oldest beyond 1,024 (a search's one-off counts must not push out the
        counts every page of a county asks for)."""
        self._counts.pop(key, None)
        self._counts[key] = (time.monotonic(), n)
        while len(self._counts) > 1024:
            self._counts.pop(next(iter(self._counts)))

    async def status_histories(self, sns: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        if sns is None:
            rows = await self._all("SELECT sn, from_ts, status, by, note FROM status_history ORDER BY sn, from_ts, id")
        else:
            sns = list(sns) or [""]
            rows = await (self._quick if len(sns) <= 50 else self._all)(
                f"SELECT sn, from_ts, status, by, note FROM status_history WHERE sn IN ({','.join('?' * len(sns))}) "
                "ORDER BY sn, from_ts, id", sns)
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r[0], []).append({"from_ts": r[1], "status": r[2], "by": r[3], "note": r[4]})
        return out

    async def status_changes_between(self, start: int, end: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT sn, from_ts, status, by, note FROM status_history WHERE from_ts >= ? AND from_ts < ? "
            "ORDER BY from_ts, id", (start, end))
        return [dict(r) for r in rows]

    async def registry_index(self) -> list[dict[str, Any]]:
        """Every registered unit with the institution fields the counting and grouping need."""
        rows = await self._all(
            "SELECT r.sn, r.institution, r.status, r.link_type, r.stock_type, r.terminal_type, r.model, r.vendor, "
            "i.name AS institution_name, i.county, i.region, i.type AS institution_type, i.hours "
            "FROM registry r LEFT JOIN institutions i ON i.code = r.institution")
        return [dict(r) for r in rows]

    async def live_index(self) -> list[dict[str, Any]]:
        """Live state of every unit known to ingest: session, last message, identity, inventory, newest sample."""
        rows = await self._all(
            "SELECT sn, online, state_ts, last_seen, first_seen, agent_version, identity, inventory, latest FROM units")
        out = []
        for r in rows:
            d = dict(r)
            for key in ("identity", "inventory", "latest"):
                d[key] = json.loads(d[key]) if d.get(key) else None
            out.append(d)
        return out

    # roll-ups ---------------------------------------------------------------------------
    async def meta_get(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def meta_set(self, key: str, value: str) -> None:
        async with self.write() as db:
            await db.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, value))
        self._rollups_written()

    async def sample_facts(self, sns: list[str], start: int, end: int) -> list[tuple[str, int, int, int, int | None, str]]:
        """What counting needs of the samples touching ``[start, end)``: (sn, ts, interval, connected, rtt_ms,
        checks as stored JSON text), unparsed (the caller memoises the parse: most samples say the same)."""
        chosen = list(sns) or [""]
        return await self._all(
            f"SELECT sn, ts, interval, connected, rtt_ms, checks FROM samples WHERE sn IN ({','.join('?' * len(chosen))}) "
            "AND ts < ? AND ts >= ? - 3600 AND ts + interval > ?", [*chosen, end, start, start])

    async def count_samples_touching(self, sn: str, start: int, end: int) -> tuple[int, int]:
        """How many samples of one unit :meth:`sample_facts` may read for ``[start, end)``, and how many of them
        are dated in it (index only): a late sample or a purge changes them, so they key the drill-down cache."""
        row = await self._quick_one("SELECT count(*), count(*) FILTER (WHERE ts >= ?) FROM samples "
                                    "WHERE sn = ? AND ts < ? AND ts >= ? - 3600", (start, sn, end, start))
        return int(row[0]), int(row[1])

    async def link_down_samples(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """(sn, ts, interval) of samples taken with the link down that touch ``[start, end)``."""
        rows = await self._all(
            "SELECT sn, ts, interval FROM samples WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0",
            (end, start, start))
        return [(r[0], r[1], r[2]) for r in rows]

    async def replace_outages(self, start: int, end: int, rows: list[tuple[str, int, int, list[str]]]) -> None:
        """Correlated link-down minutes ``(county, minute start, units, sns)`` for ``[start, end)``."""
        async with self.write() as db:
            await db.execute("DELETE FROM outages WHERE minute >= ? AND minute < ?", (start, end))
            await db.executemany("INSERT INTO outages VALUES (?,?,?,?) ON CONFLICT(county, minute) DO UPDATE SET "
                                 "units=excluded.units, sns=excluded.sns",
                                 [(c, m, n, json.dumps(sorted(s))) for c, m, n, s in rows])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def outages_between(self, start: int, end: int, county: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT county, minute, units, sns FROM outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        short = county is not None and end - start <= 86400 * 2  # one county's day: an index range
        rows = await (self._quick if short else self._all)(sql + " ORDER BY county, minute", args)
        return [{"county": r[0], "minute": r[1], "units": r[2], "sns": json.loads(r[3])} for r in rows]

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
        rows = await self._all(sql + " ORDER BY ts", args)
        return [{"sn": r[0], "ts": r[1], "kind": r[2], "data": json.loads(r[3])} for r in rows]

    async def unit_events(self, sn: str, kinds: list[str] | None, limit: int, before: int | None = None
                          ) -> list[dict[str, Any]]:
        """One unit's events, newest first (``before``: dated before that second)."""
        sql, args = "SELECT ts, kind, data, received_at FROM events WHERE sn = ?", [sn]
        if before is not None:
            sql += " AND ts < ?"
            args.append(before)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        rows = await self._all(sql + " ORDER BY ts DESC, epoch DESC, seq DESC LIMIT ?", [*args, limit])
        return [{"ts": r[0], "kind": r[1], "data": json.loads(r[2]), "received_at": r[3]} for r in rows]

    async def unit_samples_window(self, sn: str, start: int, end: int) -> list[dict[str, Any]]:
        """Full sample bodies of one unit in ``[start, end)``, oldest first."""
        rows = await self._all("SELECT body FROM samples WHERE sn=? AND ts >= ? AND ts < ? ORDER BY ts", (sn, start, end))
        return [json.loads(r[0]) for r in rows]

    # cell sites -----------------------------------------------------------------------------
    async def link_down_cells(self, start: int, end: int, lookback: int = 6 * 3600
                              ) -> list[tuple[str, int, int, int | None, int | None]]:
        """(sn, ts, interval, tac, cell_id) of link-down samples touching ``[start, end)``, each attributed to
        the serving cell of the unit's last *connected* sample before it (within ``lookback`` s), else to the
        cell the down sample itself reports (a modem that lost its cell often reports none, or a neighbour)."""
        tac_, cell_ = self.json_int("body", "tac"), self.json_int("body", "cell_id")
        down = await self._all(
            f"SELECT sn, ts, interval, {tac_}, {cell_} FROM samples "
            "WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0 ORDER BY sn, ts",
            (end, start, start))
        if not down:
            return []
        sns = sorted({r[0] for r in down})
        up: dict[str, list[tuple[int, int, int]]] = {}
        for i in range(0, len(sns), 500):
            chunk = sns[i: i + 500]
            rows = await self._all(
                f"SELECT sn, ts, {tac_}, {cell_} FROM samples "
                f"WHERE sn IN ({','.join('?' * len(chunk))}) AND ts >= ? AND ts < ? AND connected = 1 "
                f"AND {cell_} IS NOT NULL ORDER BY sn, ts",
                [*chunk, start - lookback, end])
            for sn, ts, tac, cell in rows:
                up.setdefault(sn, []).append((ts, tac, cell))
        import bisect

        out = []
        for sn, ts, iv, tac, cell in down:
            seen = up.get(sn, [])
            k = bisect.bisect_left(seen, (ts,)) - 1
            if k >= 0 and seen[k][0] >= ts - lookback:
                tac, cell = seen[k][1], seen[k][2]
            out.append((sn, ts, iv, tac, cell))
        return out

    async def replace_cell_outages(self, start: int, end: int,
                                   rows: list[tuple[int, int, int, str, list[str]]]) -> None:
        """Link-down minutes shared by several units of one cell ``(tac, cell, minute, county, sns)``."""
        async with self.write() as db:
            await db.execute("DELETE FROM cell_outages WHERE minute >= ? AND minute < ?", (start, end))
            await db.executemany("INSERT INTO cell_outages VALUES (?,?,?,?,?,?) ON CONFLICT(tac, cell, minute) DO UPDATE SET "
                                 "county=excluded.county, units=excluded.units, sns=excluded.sns",
                                 [(t, c, m, county, len(sns), json.dumps(sorted(sns)))
                                  for t, c, m, county, sns in rows])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def cell_outages_between(self, start: int, end: int, county: str | None = None,
                                   sn: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT tac, cell, minute, county, units, sns FROM cell_outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        if sn is not None:
            sql += " AND sns LIKE ?"
            args.append(f'%"{sn}"%')
        rows = await self._all(sql + " ORDER BY tac, cell, minute", args)
        return [{"tac": r[0], "cell": r[1], "minute": r[2], "county": r[3], "units": r[4], "sns": json.loads(r[5])}
                for r in rows]

    # the operations report (issue 17) ------------------------------------------------------------------------
    async def network_samples(self, start: int, end: int, sns: list[str] | None = None
                              ) -> list[tuple[str, int, int, bool, int | None, int | None, int | None, int | None]]:
        """(sn, ts, interval, connected, rtt_ms, rtt_var_ms, retrans, segs_out) of the raw samples dated in
        ``[start, end)``, by unit then time: what the report's network service-level section counts."""
        j = self.json_int
        sql = (f"SELECT sn, ts, interval, connected, rtt_ms, {j('body', 'rtt_var_ms')}, {j('body', 'retrans')}, "
               f"{j('body', 'segs_out')} FROM samples WHERE ts >= ? AND ts < ?")
        args: list[Any] = [start, end]
        if sns is not None:
            sql += f" AND sn IN ({','.join('?' * len(sns))})"
            args.extend(sns)
        return [(r[0], int(r[1]), int(r[2]), bool(r[3]), r[4], r[5], r[6], r[7])
                for r in await self._all(sql + " ORDER BY sn, ts", args)]

    async def rollup_day_totals(self, first_day: int, last_day: int, sns: list[str] | None = None
                                ) -> dict[int, tuple[int, int, int, int]]:
        """Per local day (ordinal) in ``[first_day, last_day]``: (service, intact, netok, nodata) summed over the
        units (all, or ``sns``): the report's daily trend in one query instead of one figures request a day."""
        sql = "SELECT day, sum(service), sum(intact), sum(netok), sum(nodata) FROM rollup_day WHERE day BETWEEN ? AND ?"
        args: list[Any] = [first_day, last_day]
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        return {int(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in await self._all(sql + " GROUP BY day", args)}

    async def last_commands(self, kind: str) -> dict[str, dict[str, Any]]:
        """The newest finished command of type ``kind`` per unit: {sn: {finished, state, code}} (the report's
        "last test page")."""
        rows = await self._all("SELECT sn, finished, state, code FROM cmd_commands WHERE type=? AND finished IS NOT NULL "
                               "ORDER BY sn, finished", (kind,))
        return {r[0]: {"finished": r[1], "state": r[2], "code": r[3]} for r in rows}

    async def meta_claim(self, key: str, value: str) -> bool:
        """Set ``key`` only if it is not set yet; whether this call set it (one process wins, whatever the
        backend: a scheduled report is made and sent once per period)."""
        async with self.write() as db:
            cur = await db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value))
            return bool(cur.rowcount == 1)

    async def meta_replace(self, key: str, expected: str, value: str) -> bool:
        """Set ``key`` to ``value`` only if it still holds ``expected`` (compare and set); whether it did."""
        async with self.write() as db:
            cur = await db.execute("UPDATE meta SET value=? WHERE key=? AND value=?", (value, key, expected))
            return bool(cur.rowcount == 1)

    async def meta_prefix(self, prefix: str) -> dict[str, str]:
        rows = await self._all("SELECT key, value FROM meta WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))
        return {str(r[0]): str(r[1]) for r in rows}


class SqliteStorage(SqliteEngine, AccountStore, SqlStore):
    def __init__(self, path: Any, readers: int = 4) -> None:
        SqliteEngine.__init__(self, path, readers)
        SqlStore.__init__(self)
