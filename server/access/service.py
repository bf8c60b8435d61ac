"""Network access, business access and service statistics (issue 18): the rules; the queries are storage's
(``server/storage/access.py``), who-may-do-what is ``roles.py``'s.

Applications go through the configured steps (``[access] steps``, county review then province approval by
default); the last approval takes effect in the same transaction as the step's record and its audit row: a
network registration or change allocates the lowest free address of the institution's county pool (then its
city's) for the link type, a deregistration releases the terminal's addresses; a business application grants or
withdraws the interface. Two approvals at once cannot take the same address (storage's key on the address) nor
decide the same step twice (the state moves only from the state that was read).

What terminals report (``identity`` events with ``ip``/``link``, ``iface`` and ``svc`` events) arrives through
ingest's post-commit hook, is queued, and stored by a task: the reported address is checked against the
terminal's allocation (alert ``address``) and its previous link type (alert ``link_change``); interface reach
and hourly service counts are stored; every step is idempotent, so a resent event changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from ..alerts.lifecycle import raise_alert
from ..registry.models import FieldError
from ..storage.access import COUNTS, AccessStore, PoolExhausted, ip_text
from . import roles

log = logging.getLogger(__name__)

LINK_OF_REPORT = {"wired": "wired", "cellular": "4g_vpdn"}  # what the agent says -> the registry's link types
LINK_TYPES = ("wired", "4g_vpdn")
REPORT_KINDS = ("identity", "inventory", "sim_changed", "iface", "svc")
# reports stored in ``events`` this recently are queued again at start: a process killed between ingest's commit
# and this service's write loses none of them (an older backlog arriving just before a crash still can)
REPLAY_S = 2 * 3600


class Access:
    def __init__(self, settings: Any, storage: Any, registry: Any, clock: Any, audit: Any = None) -> None:
        self.settings = settings
        self.storage = storage
        self.store = AccessStore(storage)
        self.registry = registry
        self.clock = clock
        self.audit = audit
        self.tz_offset = _offset(settings.timezone)
        self._queue: list[tuple[str, str, int, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._replay: asyncio.Task[int] | None = None
        self.reports = {"addresses": 0, "interfaces": 0, "service_hours": 0}
        self._coverage: tuple[tuple[str, str], list[dict[str, Any]]] | None = None
        # the map's registry part (registry_version, institutions by place, each deployed unit's place, units by place)
        self._map: tuple[str, dict[tuple[str, str], int], dict[str, tuple[str, str]], Counter[tuple[str, str]]] | None = None
        self._never_heard: tuple[tuple[str, int], set[str]] | None = None
        self._answers: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # coverage answers (see answer())

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._drain_loop(), name="access-reports")
        self._replay = asyncio.create_task(self.replay(), name="access-replay")

    async def replay(self) -> int:
        """Queue again the reports of the last :data:`REPLAY_S` seconds stored in ``events``: those a previous
        process committed but had not stored here when it died (each step is idempotent, so the others change
        nothing). Runs once at start, in the background."""
        try:
            now = int(self.clock.now())
            rows = await self.storage.events_between(now - REPLAY_S, now + 3600, list(REPORT_KINDS))
            for r in rows:
                self._note(r["kind"], r["sn"], int(r["ts"]), r["data"])
            self._wake.set()
            if rows:
                log.info("access: %d reports of the last %d h queued again after start", len(rows), REPLAY_S // 3600)
            return len(rows)
        except Exception:
            log.exception("access: could not replay the recent reports")
            return 0

    async def stop(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        await self.flush()

    def on_committed(self, samples: Iterable[Any], events: Iterable[Any]) -> None:
        for e in events:
            self._note(e.kind, e.sn, int(e.ts), e.data)
        if self._queue:
            self._wake.set()

    def _note(self, kind: str, sn: str, ts: int, data: dict[str, Any]) -> None:
        if kind in ("identity", "inventory", "sim_changed") and data.get("ip"):
            self._queue.append(("address", sn, ts, data))
        elif kind in ("iface", "svc"):
            self._queue.append((kind, sn, ts, data))

    async def _drain_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("could not store the terminals' access and service reports")
                await asyncio.sleep(5)

    async def flush(self) -> None:
        """Store what terminals reported since the last call (the background task does this; tests call it)."""
        items, self._queue = self._queue, []
        if not items:
            return
        index = await self.registry.index()
        addresses = [(sn, ts, d) for kind, sn, ts, d in items if kind == "address"]
        if addresses:
            await self._addresses(addresses, index)
        reach = [(sn, str(d["interface"]), bool(d.get("ok")), d.get("last_ok"), ts, str(d.get("reason", ""))[:64])
                 for kind, sn, ts, d in items if kind == "iface" and d.get("interface")]
        if reach:
            await self.store.note_reach(reach)
            self.reports["interfaces"] += len(reach)
        hours = []
        for kind, sn, _ts, d in items:
            if kind != "svc":
                continue
            info = index.get(sn)
            hours.append({"sn": sn, "hour": int(d["hour"]) // 3600 * 3600, "tz_offset": self.tz_offset,
                          "county": info.county if info else "", "institution": (info.institution or "") if info else "",
                          "services": int(d.get("services", 0)), "face": int(d.get("face", 0)),
                          "idcard": int(d.get("idcard", 0)), "evoucher": int(d.get("evoucher", 0)),
                          "other": int(d.get("other", 0)), "business": d.get("business") or {}})
        if hours:
            self.reports["service_hours"] += await self.store.put_service_hours(hours)

    async def coverage_rows(self, model: str | None) -> list[dict[str, Any]]:
        """Every institution with its deployed terminals' registration times, kept until the registry or the
        institutions change (``registry_version``, which every registry write bumps, in any process): 20,000
        institutions and 50,000 units are read once, not per request. Callers copy the rows they change."""
        return (await self.coverage_rows_keyed(model))[1]

    async def coverage_rows_keyed(self, model: str | None) -> tuple[tuple[str, str], list[dict[str, Any]]]:
        """:meth:`coverage_rows` with the key they were read under (the registry version and the model): whatever is
        derived from them alone may be kept under that key."""
        version = (await self.storage.versions()).get("registry_version", "")
        key = (version, model or "")
        if self._coverage is None or self._coverage[0] != key:
            self._coverage = (key, await self.store.coverage_rows(model))
        return self._coverage

    async def map_rows(self) -> list[dict[str, Any]]:
        """Per county (and its city): institutions, deployed terminals, those online now; what
        ``AccessStore.map_rows`` answers (one join of 50,000 units with the institutions and the live rows: 60 ms of
        CPU a request). The registry's part is kept until ``registry_version`` moves (the never-heard units until a
        unit is first heard too); a request reads only the units not online now."""
        version = (await self.storage.versions()).get("registry_version", "")
        if self._map is None or self._map[0] != version:
            places = {(c, r): n for c, r, n in await self.store.institutions_by_place()}
            where = {sn: (c, r) for sn, c, r in await self.store.deployed_places()}
            self._map = (version, places, where, Counter(where.values()))
        _v, places, where, units = self._map
        heard = (version, await self.store.units_heard())
        if self._never_heard is None or self._never_heard[0] != heard:
            self._never_heard = (heard, set(await self.store.never_heard()))
        off = Counter(where[sn] for sn in self._never_heard[1].union(await self.store.not_online()) if sn in where)
        return [{"name": c, "region": r, "units": units.get((c, r), 0), "online": units.get((c, r), 0) - off[(c, r)],
                 "institutions": n} for (c, r), n in places.items()]

    def answer(self, key: tuple[Any, ...]) -> Any:
        """A statistics answer kept under ``key`` (which holds every input it depends on), or None."""
        got = self._answers.get(key)
        if got is not None:
            self._answers.move_to_end(key)
        return got

    def keep_answer(self, key: tuple[Any, ...], value: Any) -> None:
        self._answers[key] = value
        while len(self._answers) > 64:
            self._answers.popitem(last=False)

    # reported addresses ----------------------------------------------------------------------------------
    async def _addresses(self, reports: list[tuple[str, int, dict[str, Any]]], index: dict[str, Any]) -> None:
        for sn, ts, data in sorted(reports, key=lambda r: r[1]):
            link = str(data.get("link") or "")
            prev = await self.store.note_address(sn, str(data["ip"]), link, ts)
            self.reports["addresses"] += 1
            if prev is not None and prev.get("link") and link and prev["link"] != link and int(prev["ts"]) <= ts:
                info = index.get(sn)
                await raise_alert(
                    self.storage, f"link_change:{sn}:{ts}", "link_change", sn, info.county if info else None, ts,
                    f"{sn} changed link type: {prev['link']} -> {link} (address {data['ip']})",
                    {"from": prev["link"], "to": link, "ip": str(data["ip"]), "previous_ip": prev.get("ip")}, True)
        await self.evaluate_addresses(index)

    async def evaluate_addresses(self, index: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Alert ``address`` for each terminal whose reported address is outside its allocation (or, with no
        allocation, outside every pool of its county and city for its link); close the others. The findings."""
        index = index if index is not None else await self.registry.index()
        reported = await self.store.reported_addresses()
        allocations = await self.store.allocations([r["sn"] for r in reported])
        pools = await self.store.pools()
        now = int(self.clock.now())
        findings, keep = [], set()
        for r in reported:
            problem = self._address_problem(r, allocations.get(r["sn"], []), pools, index.get(r["sn"]))
            if problem is None:
                continue
            info = index.get(r["sn"])
            key = f"address:{r['sn']}"
            keep.add(key)
            findings.append({"sn": r["sn"], "ip": r["ip"], "link": r["link"], "problem": problem})
            await raise_alert(self.storage, key, "address", r["sn"], info.county if info else None, now,
                              f"{r['sn']}: {problem}", {"ip": r["ip"], "link": r["link"]}, True)
        await self.storage.close_alerts("address", keep, now)
        return findings

    @staticmethod
    def _address_problem(report: dict[str, Any], allocated: list[dict[str, Any]], pools: list[dict[str, Any]],
                         info: Any) -> str | None:
        try:
            ip = int(ipaddress.ip_address(report["ip"]))
        except ValueError:
            return f"reports {report['ip']!r}, not an address"
        link = LINK_OF_REPORT.get(report["link"], report["link"])
        if allocated:
            if any(a["ip"] == ip for a in allocated):
                return None
            mine = ", ".join(f"{ip_text(a['ip'])} ({a['link_type']})" for a in allocated)
            return f"reports {report['ip']} on {report['link'] or '?'}, outside its allocation {mine}"
        if info is None:
            return None  # not registered: no allocation to compare with
        regions = {info.county, info.region} - {""}
        mine_pools = [p for p in pools if p["region"] in regions and p["link_type"] == link]
        if not mine_pools:
            return None  # no pool for its region and link: nothing to compare with
        for p in mine_pools:
            if int(ipaddress.ip_address(p["first_ip"])) <= ip <= int(ipaddress.ip_address(p["last_ip"])):
                return None
        return (f"reports {report['ip']} on {report['link'] or '?'}, outside the {link} pools of "
                f"{' / '.join(sorted(regions))}")

    # applications ----------------------------------------------------------------------------------------
    async def apply(self, who: Any, body: dict[str, Any], client: str) -> dict[str, Any]:
        inst = await self.storage.get_institution(body["institution"])
        if inst is None or not roles.sees(who, inst.get("county"), inst.get("region")):
            raise FieldError("institution", f"institution {body['institution']} not found", 404)
        sn = body.get("sn") or ""
        if sn:
            info = (await self.registry.index()).get(sn)
            if info is None or info.institution != body["institution"]:
                raise FieldError("sn", f"terminal {sn} is not registered at institution {body['institution']}", 422)
        if body["domain"] == "business":
            if not sn:
                raise FieldError("sn", "a business access application names the terminal", 422)
            iface = await self.store.interface(body.get("interface") or "")
            if iface is None:
                raise FieldError("interface", f"interface {body.get('interface')!r} is not in the register", 422)
            if body["action"] != "deregister" and iface["state"] != "active":
                raise FieldError("interface", f"interface {iface['code']} is {iface['state']}", 422)
        else:
            if not sn:
                raise FieldError("sn", "a network access application names the terminal", 422)
            if body["action"] != "deregister" and body.get("link_type") not in LINK_TYPES:
                raise FieldError("link_type", f"one of {', '.join(LINK_TYPES)}", 422)
        fields = {**body, "county": inst.get("county") or "", "region": inst.get("region") or ""}
        now = self.clock.now()
        steps = list(self.settings.access.steps)
        async with self.storage.write():
            app_id = await self.store.add_application(fields, steps, who.name, now)
            await self._audit(who, "access.apply", app_id, client,
                              {"domain": body["domain"], "action": body["action"], "institution": body["institution"],
                               "sn": sn, "link_type": body.get("link_type", ""), "interface": body.get("interface", "")})
        return await self.detail(app_id)

    async def detail(self, app_id: int) -> dict[str, Any]:
        a = await self.store.application(app_id)
        if a is None:
            raise FieldError("app_id", f"application {app_id} not found", 404)
        a["history"] = await self.store.steps_of(app_id)
        return a

    async def decide(self, who: Any, app_id: int, approve: bool, note: str, client: str) -> dict[str, Any]:
        if not approve and not note.strip():
            raise FieldError("note", "a rejection needs a reason", 422)
        now = self.clock.now()
        async with self.storage.write() as db:
            a = await self.store.application(app_id, db)
            if a is None or not roles.sees(who, a["county"], a["region"]):
                raise FieldError("app_id", f"application {app_id} not found", 404)
            if not a["state"].startswith("pending_"):
                raise FieldError("app_id", f"application {app_id} is {a['state']}, not waiting for a decision", 409)
            step = a["steps"][a["step"]]
            why = roles.may_review(who, step, a["county"], a["region"])
            if why is not None:
                raise FieldError("app_id", why, 403)
            role = getattr(who, "role", "")
            if not approve:
                await self.store.move(db, app_id, a["state"], "rejected", a["step"], now, reject_reason=note)
                await self.store.record_step(db, app_id, now, who.name, role, step, "rejected", note)
                await self._audit(who, "access.reject", app_id, client, {"step": step, "reason": note})
                return await self._detail_in(db, app_id)
            last = a["step"] + 1 >= len(a["steps"])
            ip = None
            if last:
                ip = await self._take_effect(db, a, now)
                state, nxt = "approved", a["step"]
            else:
                nxt = a["step"] + 1
                state = f"pending_{a['steps'][nxt]}"
            if not await self.store.move(db, app_id, a["state"], state, nxt, now, ip=ip):
                raise FieldError("app_id", f"application {app_id} was decided meanwhile", 409)
            await self.store.record_step(db, app_id, now, who.name, role, step, "approved", note)
            await self._audit(who, "access.approve", app_id, client,
                              {"step": step, "note": note, "state": state, "ip": ip_text(ip)})
            return await self._detail_in(db, app_id)

    async def _detail_in(self, db: Any, app_id: int) -> dict[str, Any]:
        a = await self.store.application(app_id, db)
        assert a is not None
        return a

    async def _take_effect(self, db: Any, a: dict[str, Any], now: float) -> int | None:
        """The approved application's effect, in the deciding transaction: an address, or the interface."""
        if a["domain"] == "business":
            await self.store.grant(db, a["sn"], a["interface"], a["action"] != "deregister", a["id"])
            return None
        released = await self.store.release_unit(db, a["sn"])
        if a["action"] == "deregister":
            if released:
                log.info("access: %s deregistered, released %s", a["sn"], ", ".join(map(str, map(ip_text, released))))
            return None
        try:
            return await self.store.allocate(db, [a["county"], a["region"]], a["link_type"], a["sn"],
                                             a["institution"], a["id"], now)
        except PoolExhausted as err:
            raise FieldError("app_id", f"cannot approve application {a['id']}: {err}", 409) from err

    async def _audit(self, who: Any, action: str, app_id: int, client: str, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(who.name, action, f"application:{app_id}", role=getattr(who, "role", ""),
                                    client=client, status=200, detail=detail)


def _offset(tz: str) -> int:
    """The fleet zone's offset from UTC in seconds (China has no daylight saving; the zone's offset now)."""
    from datetime import datetime

    off = datetime.now(ZoneInfo(tz)).utcoffset()
    return int(off.total_seconds()) if off else 0


def counts_dict(values: list[int]) -> dict[str, int]:
    return dict(zip(COUNTS, values, strict=True))
