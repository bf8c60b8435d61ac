"""The registry's store: institutions, registered units and their status history, the units' live state (broker
session, first/last heard, identity, inventory, newest sample), the unit lists and the registry search.

One domain store of the storage (issue 15's split of ``sqlite.py``), on whichever engine the storage has, in the SQL
both backends run; ``SqlStore`` inherits it. What it hands out is typed (:class:`Institution`,
:class:`RegistryUnit`, :class:`StatusChange`, ...: plain dicts, as the API answers them). The registry's rules (which
statuses exist, what an import may change, when a status change is allowed) are ``server/registry``'s.

This process keeps small caches here, keyed by ``registry_version`` (bumped in the same transaction as every
registry or institution write): the text of every SN for substring search (another process's write is seen within
``VERSION_TTL_S``); and, checked against ``registry_version`` and the number of units read at every call (once for
a whole API request: :func:`stamp_once`), so another process's write is seen at once (decision
034): registry counts (reused at most ``_COUNT_CACHE_S``) and the kept lists of each scope's SNs the unit list pages
and the registry list by last seen tests against.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple, TypedDict

import msgspec

from .accounts import Within, places_sql, units_within_sql
from .base import UnitQuery

_REGISTRY_FIELDS = ("insurance_sn", "terminal_type", "model", "vendor", "institution", "stock_type", "status",
                    "link_type", "note")
_INSTITUTION_FIELDS = ("name", "county", "region", "type", "hours", "contact", "level")
_REGISTRY_SORTS = {"sn": "r.sn", "institution": "r.institution", "county": "i.county", "status": "r.status",
                   "last_seen": "u.last_seen", "online": "u.online"}

_UNIT_SORTS = {"sn": "sn", "last_seen": "last_seen", "first_seen": "first_seen", "online": "online"}

_json_decode = msgspec.json.decode  # the same values as json.loads, faster

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}  # SQLite's LIKE folds ASCII letters only
_CONTAINS_MAX = 2000  # more matches than this: page them with LIKE instead of a list of SNs

_KEPT_SCOPES = 1024  # kept unit lists one process keeps (decision 034): scopes (the province's is one), and each
# county's registered units and those in each status (decision 039): 8 bytes a unit in each, the SNs shared
_LOOKUP_COST = 4  # one unit's last_seen looked up costs about this many units_last_seen entries walked and tested
# (decision 034: raw SQLite, 50,000 units: the county's 355 lookups 0.25-0.4 ms, its ~7,000 entries walked 1.4-1.8 ms)
def _slice(sns: list[str], offset: int, limit: int, descending: bool) -> list[str]:
    """A page of an ascending list of SNs, in either order."""
    n = len(sns)
    return sns[offset:offset + limit] if not descending else sns[max(0, n - offset - limit):max(0, n - offset)][::-1]


# filters a county's kept list does not answer (it answers a county, and a status within it)
_NOT_COUNTY = ("q", "institution", "region", "link_type", "stock_type", "vendor", "model", "terminal_type")

# the stamp (registry_version, units grown) read once for everything inside stamp_once() (see there)
class _Once:
    """One request's stamp (None: not read yet); ``open`` until the request ends: a task the request started and
    that outlives it (its context copied) reads the stamp at each use again, as outside any request."""

    __slots__ = ("stamp", "open")

    def __init__(self) -> None:
        self.stamp: tuple[str, str] | None = None
        self.open = True


_STAMP_ONCE: ContextVar[_Once | None] = ContextVar("registry_stamp_once", default=None)


@contextlib.contextmanager
def stamp_once() -> Iterator[None]:
    """Within it (one API request, and the tasks it starts: the server's app wraps each), the registry's stamp is
    read from the database once, at its first use (with the caller's token or session, :meth:`AccountStore.find_token`),
    not at each: a unit list's token, cache key, kept lists and count each read it otherwise, a round trip apiece on
    PostgreSQL. What the request answers is the registry as of that read or newer (a write committed by another
    process meanwhile is a new stamp for the next request), as a request reading it at each step could answer
    anyway; a registry write of this process drops it (:meth:`RegistryStore._registry_written`), so a request reads
    its own writes."""
    once = _Once()
    token = _STAMP_ONCE.set(once)
    try:
        yield
    finally:
        once.open = False
        _STAMP_ONCE.reset(token)


# the registry list's equality filters, counted together by value (see RegistryStore._facet_count)
_FACETS = {"institution": "r.institution", "status": "r.status", "link_type": "r.link_type",
           "stock_type": "r.stock_type", "vendor": "r.vendor", "model": "r.model", "terminal_type": "r.terminal_type",
           "county": "i.county", "region": "i.region"}
# a registered unit's joined row, as the registry list and a unit's detail show it
_UNIT_COLS = ("SELECT r.*, i.name AS institution_name, i.county, i.region, i.type AS institution_type, "
              "u.first_seen, u.last_seen, u.online AS broker_session, u.agent_version, u.identity, u.inventory ")
_UNIT_JOINS = "LEFT JOIN institutions i ON i.code = r.institution LEFT JOIN units u ON u.sn = r.sn "
_COUNT_CACHE_S = 3600.0  # a registry count is reused this long at most (keyed by registry_version, which every
# registry or institution write bumps, so another process's write is seen within VERSION_TTL_S anyway)


class Institution(TypedDict):
    code: str
    name: str
    county: str
    region: str  # the city (统筹区)
    type: str
    hours: str  # service hours as written (counting.hours parses them)
    contact: str
    level: str  # provincial, prefectural, county_level, township, village; '': not given (issue 18)
    updated: float


class StatusChange(TypedDict):
    """One row of a unit's status history: ``status`` from ``from_ts`` on."""
    from_ts: int
    status: str
    by: str
    note: str


class UnitStatusChange(StatusChange):
    """A status change of some unit (:meth:`RegistryStore.status_changes_between`)."""
    sn: str


class RegistryUnit(TypedDict):
    """A registered unit joined with its institution and its live state (:meth:`RegistryStore.registry_query`)."""
    sn: str
    insurance_sn: str
    terminal_type: str
    model: str
    vendor: str
    institution: str | None
    stock_type: str
    status: str
    link_type: str
    note: str
    source: str  # "admin" or "ingest" (joined the registry when first heard)
    registered_at: float
    institution_name: str | None  # None: no institution, or an unknown code
    county: str | None
    region: str | None
    institution_type: str | None
    first_seen: float | None  # None: never heard from
    last_seen: float | None
    broker_session: bool
    agent_version: str | None
    identity: dict[str, Any] | None
    inventory: dict[str, Any] | None


class IndexedUnit(TypedDict):
    """A registered unit with what counting and grouping need of it (:meth:`RegistryStore.registry_index`)."""
    sn: str
    institution: str | None
    status: str
    link_type: str
    stock_type: str
    terminal_type: str
    model: str
    vendor: str
    institution_name: str | None
    county: str | None
    region: str | None
    institution_type: str | None
    hours: str | None


class LiveUnit(TypedDict):
    """What ingest knows of a unit (:meth:`RegistryStore.live_index`)."""
    sn: str
    online: int  # the broker session: 1 up, 0 down (as stored)
    state_ts: float | None
    last_seen: float
    first_seen: float
    agent_version: str
    identity: dict[str, Any] | None
    inventory: dict[str, Any] | None
    latest: dict[str, Any] | None  # the newest sample's body


class UnitState(TypedDict):
    """A unit as ingest keeps it (:meth:`RegistryStore.list_units`, :meth:`RegistryStore.get_unit`)."""
    sn: str
    first_seen: float
    last_seen: float
    online: bool  # the broker session
    state_ts: float | None
    state_reason: str
    agent_version: str
    latest_ts: int | None
    latest: dict[str, Any] | None
    inventory: dict[str, Any] | None
    identity: dict[str, Any] | None


def _unit(row: Any) -> UnitState:
    d = dict(row)
    for key in ("latest", "inventory", "identity"):
        d[key] = json.loads(d[key]) if d.get(key) else None
    d["online"] = bool(d["online"])
    return d  # type: ignore[return-value]


def _institutions_where(county: str | None, within: Within, level: str | None = None) -> tuple[str, list[Any]]:
    cond, args = places_sql(within)
    if county:
        cond += " AND county=?"
        args.append(county)
    if level is not None:  # the institutions' level (issue 18)
        cond += " AND level=?"
        args.append(level)
    return cond, args


def prefix_range(prefix: str) -> tuple[str, str]:
    """``[low, high)`` such that ``low <= x < high`` exactly when ``x`` starts with ``prefix`` (index-friendly)."""
    return prefix, prefix + "\U0010ffff"


class _Haystack(NamedTuple):
    """The registered SNs kept for search: ``text`` holds one line per unit, ``sn<TAB>insurance_sn`` with ASCII
    letters folded to lower case (substring search), starting at ``starts[k]``, for ``sns[k]`` (in SN order);
    ``insurance`` the non-empty insurance SNs in order, each of unit ``insured[k]`` (prefix search)."""

    version: str
    gen: int
    text: str
    starts: list[int]
    sns: list[str]
    insurance: list[str]
    insured: list[str]


def _status_change(from_ts: Any, status: str, by: str, note: str) -> StatusChange:
    """A status history entry as the stores hand it out (:meth:`RegistryStore.status_histories`, ``registry_unit``)."""
    return {"from_ts": from_ts, "status": status, "by": by, "note": note}


def history_from_json(text: str | None) -> list[StatusChange]:
    """:meth:`RegistryStore.history_json_sql`'s text as :meth:`RegistryStore.status_histories` gives a unit's
    history: oldest first, two changes at the same second in the order made."""
    changes = sorted(_json_decode(text or "[]"), key=lambda c: (c[0], c[4]))
    return [_status_change(*c[:4]) for c in changes]


class RegistryStore:
    kept_lists = True  # False: every unit list from SQL (the tests compare the two ways; decision 034)
    seen_lookup: bool | None = None  # a scope's registry list by last seen: None chooses (_look_up_seen)

    def __init__(self) -> None:
        self._registry_gen = 0  # bumped by every registry / institution write of this process
        self._counts: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._counting: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # counts being read (see _count_once)
        self._facets: dict[tuple[Any, ...], dict[tuple[Any, ...], int]] = {}  # see _facet_count
        self._haystack: _Haystack | None = None  # see _sn_text
        self._kept_stamp: tuple[str, str] | None = None  # see _kept_units: what the kept unit lists were read at
        self._kept_units_lists: dict[Any, list[str]] = {}  # a scope's (None: the province's) SNs in units, by SN;
        # ("registry", scope): its registered SNs (see _kept_units)
        self._kept_building: dict[Any, asyncio.Lock] = {}  # one read of a scope's list at a time (see _kept_units)
        self.kept_reads = 0  # lists read from the database (the rest answered from memory)

    def _registry_written(self) -> None:
        self._registry_gen += 1
        self._counts.clear()
        self._versions_at = float("-inf")
        once = _STAMP_ONCE.get()
        if once is not None:  # the request that writes reads its write (stamp_once)
            once.stamp = None

    # the units' live state (ingest's store_telemetry keeps first/last heard and the newest sample) ------------
    async def set_state(self, sn: str, online: bool, ts: float, reason: str, version: str) -> None:
        """The unit's broker session went up or down (``reason``), with the agent's version when it says it."""
        now = time.time()
        async with self.write() as db:
            grew = await self.units_new(db, [sn])
            await db.execute(
                "INSERT INTO units(sn, first_seen, last_seen, online, state_ts, state_reason, agent_version) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(sn) DO UPDATE SET online=excluded.online, state_ts=excluded.state_ts, "
                "state_reason=excluded.state_reason, last_seen=CASE WHEN units.last_seen > excluded.last_seen THEN units.last_seen ELSE excluded.last_seen END, "
                "agent_version=CASE WHEN excluded.agent_version<>'' THEN excluded.agent_version ELSE units.agent_version END",
                (sn, now, now, int(online), ts, reason, version),
            )
            if grew:
                await self.units_grew(db)

    async def list_units(self, query: UnitQuery) -> tuple[int, list[UnitState]]:
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
        if self.kept_lists and order == "sn" and not query.q and query.online is None and not query.sns:
            return await self._units_from_kept(query)
        total = (await self._one(f"SELECT count(*) FROM units {clause}", args))[0]
        rows = await self._all(
            f"SELECT * FROM units {clause} ORDER BY {order} {'DESC' if query.descending else 'ASC'}, sn LIMIT ? OFFSET ?",
            [*args, query.limit, query.offset],
        )
        return int(total), [_unit(r) for r in rows]

    async def _units_from_kept(self, query: UnitQuery) -> tuple[int, list[UnitState]]:
        """:meth:`list_units` by SN with no filter but the scope: the page sliced from the kept list of the scope's
        SNs (:meth:`_kept_units`), then only its rows read by primary key. The same total, items and order as the
        SQL (``ORDER BY sn`` with ``LIMIT``/``OFFSET`` and a count) without walking the units before the page."""
        sns = await self._kept_units(query.within)
        total, offset, limit = len(sns), query.offset, query.limit
        if query.descending:  # the kept list backwards: ORDER BY sn DESC
            page = sns[max(0, total - offset - limit):max(0, total - offset)][::-1]
        else:
            page = sns[offset:offset + limit]
        if not page:
            return total, []
        rows = await (self._quick if len(page) <= 100 else self._all)(
            f"SELECT * FROM units WHERE sn IN ({','.join('?' * len(page))})", page)
        pos = {sn: k for k, sn in enumerate(page)}
        return total, [_unit(r) for r in sorted(rows, key=lambda r: pos[r["sn"]])]

    async def registry_version(self) -> str:
        """``registry_version`` read now: what every write to the registry or the institutions moves, in whichever
        process (the registry's kept answers, server/registry/pages.py, hold it in their keys). Read with the
        units' number (one short read all the same), which the kept lists inside the same :func:`stamp_once` use."""
        return (await self._stamp())[0]

    def _stamp_sql(self) -> tuple[str, str]:
        """The two sub-selects that read the stamp."""
        return "(SELECT value FROM meta WHERE key = 'registry_version')", f"({self.units_grown_sql})"

    @staticmethod
    def stamp_seen(version: Any, units: Any) -> None:
        """The stamp read with the caller's token or session (:meth:`AccountStore.find_token`): this request's, if
        it has none yet (inside :func:`stamp_once`)."""
        once = _STAMP_ONCE.get()
        if once is not None and once.open and once.stamp is None:
            once.stamp = (str(version or ""), str(units))

    async def _stamp(self, units: bool = True) -> tuple[str, str]:
        """``registry_version`` and ``units_grown_sql`` read now (one short read): what the kept lists are valid for
        (decision 034); ``units=False``: the version alone (the registry counts: on PostgreSQL the units' number is
        a count). Inside :func:`stamp_once`, both are read once, by whichever asks first."""
        once = _STAMP_ONCE.get()
        if once is not None and once.open:
            if once.stamp is None:
                row = await self._quick_one(f"SELECT {', '.join(self._stamp_sql())}")
                once.stamp = (str(row[0] or ""), str(row[1]))
            return once.stamp if units else (once.stamp[0], "")
        if not units:
            row = await self._quick_one("SELECT value FROM meta WHERE key = 'registry_version'")
            return str(row[0]) if row else "", ""
        row = await self._quick_one(f"SELECT {', '.join(self._stamp_sql())}")
        return str(row[0] or ""), str(row[1])

    async def _kept_units(self, within: Within, registered: bool = False, status: str | None = None) -> list[str]:
        """The SNs of ``units`` in ``within`` (None: every unit), in the database's ``ORDER BY sn`` (``registered``:
        of the registry, by SN, a scope's only; ``status``: those in that status only), kept in this
        process (decision 034) while what they depend on is unchanged: the registry and the institutions
        (``registry_version``, bumped by every write to them, whichever process) and the set of units (which
        only grows, ``units_grown_sql``). Both are read from the database at every call, before the lists (a
        write between the two reads makes a list newer than its stamp, read again at the next call): another
        process's change shows at once, not after ``VERSION_TTL_S``."""
        stamp = await self._stamp()
        if stamp != self._kept_stamp:
            self._kept_units_lists = {}
            self._kept_stamp = stamp
        key = ("registry", within, status) if registered else within
        sns = self._kept_units_lists.get(key)
        if sns is not None:
            return sns
        # the first requests after a start or a change arrive together (fifty dashboards): one of them reads the
        # list, the others wait for it, instead of each reading the 200,000 SNs of the province at once
        building = self._kept_building.setdefault(key, asyncio.Lock())
        async with building:
            kept = self._kept_units_lists
            sns = kept.get(key) if self._kept_stamp == stamp else None
            if sns is not None:
                return sns
            if registered:
                cond, args = places_sql(within)
                sql = (f"SELECT r.sn FROM registry r WHERE r.institution IN (SELECT code FROM institutions WHERE {cond}) "
                       f"{'AND r.status = ? ' if status else ''}ORDER BY r.sn")
                args += [status] if status else []
            else:
                cond, args = units_within_sql(within)
                sql = f"SELECT sn FROM units WHERE {cond} ORDER BY sn"
            # interned: a unit's SN is one string in every kept list it is in (a county's, its statuses', the province's)
            sns = [sys.intern(r[0]) for r in await self._all(sql, args)]
            self.kept_reads += 1
            kept = self._kept_units_lists
            if self._kept_stamp == stamp:  # another call meanwhile may have seen a newer stamp
                kept.pop(key, None)
                kept[key] = sns
                while len(kept) > _KEPT_SCOPES:  # the longest kept first
                    kept.pop(next(iter(kept)))
            if len(self._kept_building) > 4 * _KEPT_SCOPES:  # (scopes no longer asked for)
                self._kept_building = {k: v for k, v in self._kept_building.items() if v.locked()}
        return sns

    async def get_unit(self, sn: str) -> UnitState | None:
        row = await self._one("SELECT * FROM units WHERE sn=?", (sn,))
        return _unit(row) if row else None

    # institutions ------------------------------------------------------------------------------------------
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
                                ) -> list[Institution]:
        """Every institution (of ``county``; in ``within``: a scoped caller's cities and counties; of ``level``), by
        code."""
        cond, args = _institutions_where(county, within, level)
        rows = await self._all(f"SELECT * FROM institutions WHERE {cond} ORDER BY code", args)
        return [dict(r) for r in rows]  # type: ignore[misc]

    async def institutions_page(self, county: str | None = None, within: Within = None, limit: int = 1000,
                                offset: int = 0, level: str | None = None) -> tuple[int, list[Institution]]:
        """How many institutions :meth:`list_institutions` would give, and the ``limit`` of them from ``offset``
        on: paged in SQL (the province's 20,000 are not all read for a page of them). The total is not counted
        when the page shows it (a short page)."""
        cond, args = _institutions_where(county, within, level)
        rows = await self._all(f"SELECT * FROM institutions WHERE {cond} ORDER BY code LIMIT ? OFFSET ?",
                               [*args, limit, offset])
        if len(rows) < limit and (rows or offset == 0):
            total = offset + len(rows)  # the page ends the list
        else:
            total = int((await self._one(f"SELECT count(*) FROM institutions WHERE {cond}", args))[0])
        return total, [dict(r) for r in rows]  # type: ignore[misc]

    async def get_institution(self, code: str) -> Institution | None:
        row = await self._one("SELECT * FROM institutions WHERE code=?", (code,))
        return dict(row) if row else None  # type: ignore[return-value]

    # registered units and their status history ---------------------------------------------------------------
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
        added: list[str] = []
        moved = 0
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
                    cur = await db.execute(
                        "UPDATE status_history SET from_ts=? WHERE sn=? AND by='ingest' AND from_ts>? "
                        "AND (SELECT count(*) FROM status_history WHERE sn=?)=1", (ts, sn, ts, sn))
                    moved += max(0, cur.rowcount)
            # only a write that changed something moves the version: every process's registry caches (the index,
            # the SN text, kept lists, counts, the figures' universe) are read again when it moves, and ingest asks
            # this for every unit it hears from (200,000 terminals: every pass; issue 15)
            if added or moved:
                await self._bump(db, "registry_version")
        if added or moved:
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
                             limit: int = 50, offset: int = 0) -> tuple[int, list[RegistryUnit]]:
        """Registered units joined with their institution and live state, filtered, sorted and paged.

        ``filters["q"]`` matches the start of the SN or the insurance SN through their indexes
        (``filters["match"] == "contains"``: anywhere in them, which reads every row). Filters work on the
        registry alone (county and region through the institutions' index; ``registry_filter`` covers the common
        filters), and the page's keys are found before the joins, so a page of 50 out of 50,000 reads 50 joined
        rows. The total is not counted when the page shows it (a short page), and a count is otherwise reused until
        the registry changes (at most ``_COUNT_CACHE_S``)."""
        where, args = [], []
        found: list[str] | None = None
        if filters.get("q"):
            q = str(filters["q"])
            contains = filters.get("match") == "contains"
            found = await (self._sn_contains(q) if contains else self._sn_prefix(q))
            if found is not None:  # the SNs holding (or starting with) q, from this process's kept SNs
                where.append(f"r.sn IN ({','.join('?' * len(found))})" if found else "1 = 0")
                args += found
            elif contains:
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
        # only equality filters: their totals come from grouped counts (see _facet_count)
        facets = {k: filters[k] for k in _FACETS if filters.get(k)}
        plain = not any(filters.get(k) for k in ("q", "within")) and filters.get("sns") is None
        direction = "DESC" if descending else "ASC"
        cols, joins = _UNIT_COLS, _UNIT_JOINS
        seen: tuple[str, list[Any]] | None = None  # the heard units matching: "[INDEXED BY ...] WHERE" on units u
        if sort == "last_seen" and self.kept_lists and filters.get("within") is not None and len(where) == 1:
            mine = await self._kept_units(filters["within"], registered=True)
            lookup = self._look_up_seen(len(mine), offset + limit)
            cond, cargs = self.in_set_sql("u.sn", mine, lookup=lookup)
            seen = (f"{self.indexed_by('units_sn_last_seen')} WHERE {cond}" if lookup else f"WHERE {cond}", cargs)
        if sort == "last_seen" and descending:
            rows = await self._by_last_seen_desc(cols, joins, clause, args, limit, offset, seen)
        elif sort == "last_seen":
            rows = await self._by_last_seen_asc(cols, joins, clause, args, limit, offset, seen,
                                                facets=facets if plain and seen is None else None)
        elif found is not None and len(where) == 1 and (sort == "sn" or sort not in _REGISTRY_SORTS):
            # a search text alone: the matching SNs are known, in SN order (the kept text is), and so is their number
            return len(found), self._registry_rows(await self._page(_slice(found, offset, limit, descending), cols,
                                                                    joins))
        elif (filters.get("sns") is not None and len(where) == 1 and offset == 0
              and len(set(filters["sns"])) <= limit and (sort == "sn" or sort not in _REGISTRY_SORTS)):
            # named units alone, all on the page (an import's current rows): their joined rows at once, without
            # first finding the page's keys (a round trip more on PostgreSQL)
            rows = await self._page(_slice(sorted(set(filters["sns"])), 0, limit, descending), cols, joins)
        elif (self.kept_lists and self.dialect == "postgresql" and filters.get("county")
              and filters.get("within") is None and (sort == "sn" or sort not in _REGISTRY_SORTS)
              and not any(filters.get(k) for k in _NOT_COUNTY) and filters.get("sns") is None):
            # a county's units, or those in one status (a dashboard's county page and its tabs): the county's
            # registered SNs kept in this process while the stamp holds (decision 039), not its ~1,500 units found
            # through its institutions and sorted at every page (2.6 ms of PostgreSQL at 210,000 units). Not on
            # SQLite: its page walks the SN index only until the page is full (~1-2 ms), so the lists save it little,
            # and with them the first list requests of the 200,000-terminal run waited up to 1.3 s (run n)
            sns = await self._kept_units(((), (filters["county"],)), registered=True, status=filters.get("status"))
            return len(sns), self._registry_rows(await self._page(_slice(sns, offset, limit, descending), cols, joins))
        elif not where and (sort == "sn" or sort not in _REGISTRY_SORTS):
            # every unit by SN: the page's keys from this process's ordered SN list (kept for substring search),
            # not an index walk of ``offset`` entries on the event loop (a page 118,000 deep: 13 ms of CPU). The
            # list follows registry_version as the counts do (read now); units are never deleted: each key has its row.
            sns = (await self._sn_text()).sns
            return len(sns), self._registry_rows(await self._page(_slice(sns, offset, limit, descending), cols, joins))
        else:  # the page's keys (by SN: from the indexes alone, mostly), then the joined rows of those 50
            by_sn = sort == "sn" or sort not in _REGISTRY_SORTS
            order = f"r.sn {direction}" if by_sn else f"{_REGISTRY_SORTS[sort]} {direction}, r.sn"
            quick = by_sn and "LIKE" not in clause  # by SN: an index walk; others sort (or LIKE-scan) every row
            read = self._quick if quick else self._all
            if by_sn and self.dialect == "postgresql" and (filters.get("county") or filters.get("region")):
                # PostgreSQL walks the SN index testing each unit's institution (15 ms for a county's first page at
                # 210,000 units); the county's units found through its institutions and sorted: 2.5-3.6 ms
                keys = f"SELECT sn FROM (SELECT r.sn FROM registry r {clause} OFFSET 0) AS q ORDER BY sn {direction}"
                read = self._all
            else:
                keys = f"SELECT r.sn FROM registry r {'' if by_sn else joins} {clause} ORDER BY {order}"
            if self.dialect == "postgresql":  # the keys found inside the statement that joins their rows: one
                # round trip, not two (each costs the API process and the database more than the statement's work)
                rows = await read(f"{cols} FROM registry r {joins} WHERE r.sn IN ({keys} LIMIT ? OFFSET ?) "
                                  f"ORDER BY {order}", [*args, limit, offset])
            else:
                rows = await self._page([k[0] for k in await read(f"{keys} LIMIT ? OFFSET ?", [*args, limit, offset])],
                                        cols, joins)
        if len(rows) < limit and (rows or offset == 0):
            total = offset + len(rows)  # the page ends the list: no count needed
        elif filters.get("sns") is not None and offset == 0 and len(rows) >= len(set(filters["sns"])):
            total = len(rows)  # every SN asked for is on the page (a unit's detail): no count either
        else:
            total = await self._facet_count(facets) if plain else await self._registry_count(clause, args)
        return int(total), self._registry_rows(rows)

    @staticmethod
    def _registry_rows(rows: list[Any]) -> list[RegistryUnit]:
        out = []
        for row in rows:
            d = dict(row)
            for key in ("identity", "inventory"):
                d[key] = _json_decode(d[key]) if d.get(key) else None
            d["broker_session"] = bool(d["broker_session"])
            out.append(d)
        return out  # type: ignore[return-value]

    def _look_up_seen(self, scope: int, depth: int) -> bool:
        """Whether a page ``depth`` deep of a scope's ``scope`` units by last seen is cheaper looked up (each of
        its units' ``last_seen`` read from ``units_sn_last_seen``, then sorted: ~``scope`` lookups) than walked
        (``units_last_seen`` read in order, each entry tested against the set, until ``depth`` match: about
        ``depth * units / scope`` entries). A lookup costs ``_LOOKUP_COST`` entries walked (decision 034); the
        units' number is the stamp's (SQLite ``max(rowid)``, PostgreSQL ``count(*)``). ``seen_lookup`` (not None)
        decides instead (the tests and the benchmark take each way)."""
        if self.seen_lookup is not None:
            return self.seen_lookup
        units = self._kept_stamp[1] if self._kept_stamp else ""
        n = int(units) if units.isdigit() else 0
        return scope * scope * _LOOKUP_COST < depth * n

    async def _sn_prefix(self, q: str) -> list[str] | None:
        """SNs whose SN or insurance SN starts with ``q`` (case as typed: the SQL's index range, byte-wise), in SN
        order, found by bisecting this process's sorted SNs and insurance SNs, checked against ``registry_version``
        read now (with the request's token, no round trip more): a search typed into the registry page costs no
        statement before its page (its prefix statement, then, empty, the substring search's page, was three round
        trips with the token's; issue 15). None when more than ``_CONTAINS_MAX`` units match (the SQL pages them)."""
        if not q or not self.kept_lists:
            return None
        hay = await self._sn_text()
        lo, hi = prefix_range(q)
        a, b = bisect.bisect_left(hay.sns, lo), bisect.bisect_left(hay.sns, hi)
        c, d = bisect.bisect_left(hay.insurance, lo), bisect.bisect_left(hay.insurance, hi)
        if (b - a) + (d - c) > _CONTAINS_MAX:
            return None
        if c == d:
            return hay.sns[a:b]
        return sorted(set(hay.sns[a:b]).union(hay.insured[c:d]))

    async def _sn_contains(self, q: str) -> list[str] | None:
        """SNs whose SN or insurance SN holds ``q`` (ASCII letters in any case, as SQLite's LIKE), found with
        ``str.find`` in one text of every registered SN, kept per ``registry_version``: ~1 ms instead of a LIKE
        over every row (twice, with the count). None when the text cannot answer (q with a separator, or more
        than ``_CONTAINS_MAX`` matches: then the LIKE scan pages them)."""
        if not q or "\n" in q or "\t" in q:
            return None
        hay = await self._sn_text()
        text, starts, sns = hay.text, hay.starts, hay.sns
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
        for substring search: ~0.1 s at 50,000 units, paid by a request otherwise; the list totals by the registry
        page's filters; the province's kept unit list, which the first unit lists would otherwise wait for
        together)."""
        await self._sn_text()
        # the registry page's filters: totals by each, and by county and status; units never heard from by each
        # (the list by last seen, oldest first, starts with them)
        for names in (("county",), ("county", "status"), ("status",), ("link_type",), ("stock_type",), ("region",)):
            await self._facet_table(names)
            await self._facet_table(names, never_heard=True)
        if self.kept_lists:
            await self._kept_units(None)
        if self.kept_lists and self.dialect == "postgresql":
            # every county's registered units, and those in each status (a county's dashboard page and its tabs;
            # PostgreSQL keeps them, decision 039): read here, not by the first list requests after a start, which
            # waited for them together (up to 1.7 s at 210,000 units, issue 15). At most half the lists kept.
            pairs = set(await self._facet_table(("county", "status")))
            scopes = sorted({(k[0], None) for k in pairs} | pairs, key=lambda k: (str(k[0]), str(k[1])))
            for county, status in [k for k in scopes if k[0]][:_KEPT_SCOPES // 2]:
                await self._kept_units(((), (county,)), registered=True, status=status)

    async def _sn_text(self) -> _Haystack:
        """Every registered SN, in order, for search (see :class:`_Haystack`), kept while ``registry_version``
        holds, read now as the counts read it (inside a request: the stamp read with its token), not within
        ``VERSION_TTL_S``: a list of every unit counts another process's new unit at once, a search finds it, and
        every caller compares with the same version (one comparing with a version up to a second older would read
        the 200,000 SNs again after each registry write, and the next caller again)."""
        version = (await self._stamp(units=False))[0]
        hay = self._haystack
        if hay is None or hay.version != version or hay.gen != self._registry_gen:
            gen = self._registry_gen
            rows = await self._all("SELECT sn, insurance_sn FROM registry ORDER BY sn")
            sns = [r[0] for r in rows]
            lines = [f"{r[0]}\t{r[1]}".translate(_ASCII_LOWER) for r in rows]
            starts, pos = [], 0
            for line in lines:
                starts.append(pos)
                pos += len(line) + 1
            insured = sorted((r[1], r[0]) for r in rows if r[1])
            hay = _Haystack(version, gen, "\n".join(lines), starts, sns, [k for k, _ in insured],
                            [sn for _, sn in insured])
            self._haystack = hay
        return hay

    async def _by_last_seen_desc(self, cols: str, joins: str, clause: str, args: list[Any], limit: int,
                                 offset: int, seen: tuple[str, list[Any]] | None = None) -> list[Any]:
        """Most recently heard first: walk ``units(last_seen)`` backwards and keep the registry's matches (a page
        reads about page / share-matching rows, not the whole filtered set sorted); units never heard from come
        last, by SN. Ties in ``last_seen`` go by SN descending. ``seen``: the matching units as a ``WHERE`` on
        ``units u`` alone (a scope's kept SNs, decision 034), tested on the walked index instead of a join, or (a
        small scope) looked up in ``units_sn_last_seen`` and sorted, its ``INDEXED BY`` first."""
        seen_clause = f"{clause} AND" if clause else "WHERE"
        heard, heard_args = (f"units u CROSS JOIN registry r ON r.sn = u.sn {clause}", args) if seen is None else (
            f"units u {seen[0]}", seen[1])
        keys = await self._all(
            f"SELECT u.sn FROM {heard} "  # CROSS: units first
            "ORDER BY u.last_seen DESC, u.sn DESC LIMIT ? OFFSET ?", [*heard_args, limit, offset])
        sns = [k[0] for k in keys]
        if len(sns) < limit:
            n_seen = offset + len(sns) if sns else int((await self._one(
                f"SELECT count(*) FROM {heard}", heard_args))[0])
            rest = await self._all(
                f"SELECT r.sn FROM registry r {seen_clause} NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn) "
                "ORDER BY r.sn LIMIT ? OFFSET ?", [*args, limit - len(sns), max(0, offset - n_seen)])
            sns += [k[0] for k in rest]
        return await self._page(sns, cols, joins)

    async def _by_last_seen_asc(self, cols: str, joins: str, clause: str, args: list[Any], limit: int,
                                offset: int, seen: tuple[str, list[Any]] | None = None,
                                facets: dict[str, Any] | None = None) -> list[Any]:
        """Oldest report first: units never heard from first (by SN), then a walk up ``units(last_seen)``
        keeping the registry's matches; ties go by SN. How many matching units were never heard from is kept
        until the registry changes or a unit is first heard (``units`` grows): a scan of the registry, ~8 ms
        at 50,000 units, instead of sorting every match (~15 ms); under equality filters only (``facets``), one
        grouped count per set of filter names (see :meth:`_facet_count`)."""
        seen_clause = f"{clause} AND" if clause else "WHERE"
        never = f"{seen_clause} NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn)"
        walk = self._quick if offset < 1000 else self._all  # a first page reads about page / share rows
        if facets is not None:
            n_never = await self._facet_count(facets, never_heard=True)
        else:
            key = ("never_heard", await self._stamp(), self._registry_gen, clause, *args)
            n_never = await self._count_once(key, self._all, f"SELECT count(*) FROM registry r {never}", args)
        sns: list[str] = []
        if offset < n_never:
            sns = [k[0] for k in await self._all(f"SELECT r.sn FROM registry r {never} ORDER BY r.sn LIMIT ? OFFSET ?",
                                                 [*args, limit, offset])]
        if len(sns) < limit:
            heard, heard_args = (f"units u CROSS JOIN registry r ON r.sn = u.sn {clause}", args) if seen is None \
                else (f"units u {seen[0]}", seen[1])  # (see _by_last_seen_desc)
            keys = await walk(
                f"SELECT u.sn FROM {heard} "  # CROSS: units first
                "ORDER BY u.last_seen ASC, u.sn ASC LIMIT ? OFFSET ?",
                [*heard_args, limit - len(sns), max(0, offset - n_never)])
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
        key = (await self._stamp(units=False), clause, *args)  # read now: another process's write is a new key
        # at most a scan of one covering index (~3 ms at 50,000 units): inline, unless a LIKE reads every row
        count = self._all if "LIKE" in clause else self._quick
        return await self._count_once(key, count, f"SELECT count(*) FROM registry r {clause}", args)

    async def _facet_count(self, facets: dict[str, Any], never_heard: bool = False) -> int:
        """How many registered units have every value of ``facets`` (county, status, link type...), from one grouped
        count per set of filter names, kept as the counts are: the first list of each of 82 counties no longer
        counts its county on its own (at 210,000 units those first counts held a burst of list requests up to
        0.7 s; issue 15)."""
        names = tuple(sorted(facets))
        return (await self._facet_table(names, never_heard)).get(tuple(facets[n] for n in names), 0)

    async def _facet_table(self, names: tuple[str, ...], never_heard: bool = False) -> dict[tuple[Any, ...], int]:
        """Registered units counted by the values of ``names`` (sorted :data:`_FACETS` keys); ``never_heard``:
        those no unit row exists for yet (kept until ``units`` grows too)."""
        key = ("facets", await self._stamp(units=never_heard), never_heard, *names)
        hit = self._facets.get(key)
        if hit is not None:
            return hit

        async def read() -> dict[tuple[Any, ...], int]:
            cols = ", ".join(_FACETS[n] for n in names)
            join = "LEFT JOIN institutions i ON i.code = r.institution" if "i." in cols else ""
            never = "WHERE NOT EXISTS (SELECT 1 FROM units u WHERE u.sn = r.sn)" if never_heard else ""
            rows = await self._all(f"SELECT {cols + ', ' if cols else ''}count(*) FROM registry r {join} "
                                   f"{never} {'GROUP BY ' + cols if cols else ''}")
            return {tuple(r[:-1]): int(r[-1]) for r in rows}

        def keep(table: dict[tuple[Any, ...], int]) -> None:
            self._facets[key] = table
            while len(self._facets) > 32:
                self._facets.pop(next(iter(self._facets)))

        return await self._read_once(key, read, keep)  # type: ignore[no-any-return]

    async def _read_once(self, key: tuple[Any, ...], read: Any, keep: Any) -> Any:
        """``await read()``, shared by every request asking ``key`` while it runs; ``keep(result)`` unless the
        registry was written meanwhile (this process's writes; another's is a new key)."""
        fut = self._counting.get(key)
        if fut is None:
            gen = self._registry_gen

            async def run() -> Any:
                got = await read()
                if gen == self._registry_gen:
                    keep(got)
                return got

            fut = self._counting[key] = asyncio.ensure_future(run())
            fut.add_done_callback(lambda _f: self._counting.pop(key, None))
        return await asyncio.shield(fut)

    async def _count_once(self, key: tuple[Any, ...], read: Any, sql: str, args: list[Any]) -> int:
        """A count kept under ``key`` (see :meth:`_keep_count`); requests asking the same uncounted one at the same
        time share one query. Fifty list requests arriving together used to count the same thing each, side by side
        on the read pool (at 210,000 units, 10 requests for wired units by last seen waited 1.3-2.3 s; issue 15)."""
        hit = self._counts.get(key)
        if hit is not None and time.monotonic() - hit[0] < _COUNT_CACHE_S:
            return hit[1]

        async def count() -> int:
            return int((await read(sql, args))[0][0])

        return await self._read_once(key, count, lambda n: self._keep_count(key, n))  # type: ignore[no-any-return]

    def _keep_count(self, key: tuple[Any, ...], n: int) -> None:
        """Remember a count, dropping the oldest beyond 1,024 (a search's one-off counts must not push out the
        counts every page of a county asks for)."""
        self._counts.pop(key, None)
        self._counts[key] = (time.monotonic(), n)
        while len(self._counts) > 1024:
            self._counts.pop(next(iter(self._counts)))

    async def registry_unit(self, sn: str) -> tuple[RegistryUnit, list[StatusChange]] | None:
        """One registered unit's joined row (as :meth:`registry_query` lists it) and its status history, oldest
        first (as :meth:`status_histories` gives it), in one statement: a unit's detail was two round trips after
        its token's, and on a busy PostgreSQL host each waits for a core twice (issue 15). None: not registered."""
        history = self.history_json_sql("r.sn")
        rows = await self._quick(f"{_UNIT_COLS}, {history} AS status_history_json FROM registry r {_UNIT_JOINS} "
                                 "WHERE r.sn = ?", (sn,))
        if not rows:
            return None
        row = dict(rows[0])
        history = history_from_json(row.pop("status_history_json"))
        return self._registry_rows([row])[0], history

    def history_json_sql(self, sn: str) -> str:
        """A sub-select of one unit's status history as one JSON text (``sn``: the SQL that names the unit), for a
        statement that reads it beside other things (:meth:`registry_unit`, ``RollupStore.unit_day``); decoded by
        :func:`history_from_json`."""
        array, group = self.json_fns  # type: ignore[attr-defined]
        return (f"(SELECT {group}({array}(h.from_ts, h.status, h.by, h.note, h.id)) FROM status_history h "
                f"WHERE h.sn = {sn})")

    async def status_histories(self, sns: list[str] | None = None) -> dict[str, list[StatusChange]]:
        """Each unit's status history (of ``sns``, or of every unit), oldest first."""
        if sns is None:
            rows = await self._all("SELECT sn, from_ts, status, by, note FROM status_history ORDER BY sn, from_ts, id")
        else:
            sns = list(sns) or [""]
            rows = await (self._quick if len(sns) <= 50 else self._all)(
                f"SELECT sn, from_ts, status, by, note FROM status_history WHERE sn IN ({','.join('?' * len(sns))}) "
                "ORDER BY sn, from_ts, id", sns)
        out: dict[str, list[StatusChange]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(_status_change(r[1], r[2], r[3], r[4]))
        return out

    async def status_changes_between(self, start: int, end: int) -> list[UnitStatusChange]:
        """Every status change dated in ``[start, end)``, oldest first."""
        rows = await self._all(
            "SELECT sn, from_ts, status, by, note FROM status_history WHERE from_ts >= ? AND from_ts < ? "
            "ORDER BY from_ts, id", (start, end))
        return [dict(r) for r in rows]  # type: ignore[misc]

    # the indexes every process keeps in memory (server/registry/service.py, alerts, reports) -----------------
    async def registry_index(self) -> list[IndexedUnit]:
        """Every registered unit with the institution fields the counting and grouping need."""
        rows = await self._all(
            "SELECT r.sn, r.institution, r.status, r.link_type, r.stock_type, r.terminal_type, r.model, r.vendor, "
            "i.name AS institution_name, i.county, i.region, i.type AS institution_type, i.hours "
            "FROM registry r LEFT JOIN institutions i ON i.code = r.institution")
        return [dict(r) for r in rows]  # type: ignore[misc]

    async def live_index(self, identity: bool = True, since: float | None = None) -> list[LiveUnit]:
        """Live state of every unit known to ingest: session, last message, identity, inventory, newest sample.
        ``identity=False``: ``identity`` and ``inventory`` are None, not read (the alert pass every minute does not
        need them; decoding them was a third of its cost at 210,000 units). ``since``: only the units whose
        ``last_seen`` is at or after it (from ``units_last_seen``): every write of a unit's session or newest
        sample moves its ``last_seen`` to the writer's clock (``store_telemetry``, :meth:`set_state`)."""
        more = "identity, inventory" if identity else "NULL AS identity, NULL AS inventory"
        sql = f"SELECT sn, online, state_ts, last_seen, first_seen, agent_version, {more}, latest FROM units"
        rows = await (self._all(sql) if since is None else self._all(sql + " WHERE last_seen >= ?", (since,)))
        out = []
        loads = json.loads
        for r in rows:
            d = dict(r)
            for key in ("identity", "inventory", "latest"):
                v = d[key]
                d[key] = loads(v) if v else None
            out.append(d)
        return out  # type: ignore[return-value]

