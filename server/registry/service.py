"""The registry: institutions, units and their status history, with an in-memory index for counting.

Every unit the counting sees is in the registry with at least one status-history row: administrators register
units (CSV or API), and a unit that ingest hears from before anyone registered it joins automatically
(in service, no institution, from its earliest sample) so that it is counted and listed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from counting.hours import ServiceHours

from ..settings import Settings
from . import csvio
from .models import FieldError, Institution, UnitPatch, UnitRecord, parse_hours

log = logging.getLogger(__name__)


RegistryError = FieldError


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class UnitInfo:
    sn: str
    institution: str | None
    institution_name: str
    county: str
    region: str
    institution_type: str
    hours: ServiceHours
    status: str
    link_type: str
    stock_type: str
    terminal_type: str
    vendor: str
    model: str


class Registry:
    def __init__(self, settings: Settings, storage: Any, now: Callable[[], float]) -> None:
        self.settings = settings
        self.storage = storage
        self.now = now
        self._index: dict[str, UnitInfo] | None = None
        self._index_lock = asyncio.Lock()  # one build at a time: 50 clients at once must not build it 50 times
        self._generation = 0
        self._index_version = ""  # registry_version the index was built at
        self._ensured: dict[str, int] = {}  # SN -> the first-sample time ensure_seen registered it from
        self._hours: dict[str, ServiceHours] = {}
        # called with (sns, from_ts) when statuses or service hours change, so counts can be redone
        self.on_change: list[Callable[[list[str], int], None]] = []

    # index ---------------------------------------------------------------------------------
    def hours(self, text: str | None) -> ServiceHours:
        key = text or ""
        sh = self._hours.get(key)
        if sh is None:
            tz = self.settings.timezone
            try:
                sh = parse_hours(key, tz) if key else None
            except ValueError:
                log.warning("institution hours %r do not parse; using the default", key)
                sh = None
            if sh is None:
                sh = ServiceHours.parse(self.settings.availability.service_hours, tz)
            self._hours[key] = sh
        return sh

    async def index(self) -> dict[str, UnitInfo]:
        """Every registered unit, kept until this process writes the registry or ``registry_version`` in ``meta``
        moves (another process wrote it; read at most every second)."""
        version = (await self.storage.versions())["registry_version"]
        if version != self._index_version:
            self._index = None
        index = self._index
        if index is not None:
            return index
        async with self._index_lock:
            if self._index is not None:
                return self._index
            generation = self._generation
            self._index_version = version
            rows = await self.storage.registry_index()
            index = {
                r["sn"]: UnitInfo(
                    sn=r["sn"], institution=r["institution"], institution_name=r["institution_name"] or "",
                    county=r["county"] or "", region=r["region"] or "", institution_type=r["institution_type"] or "",
                    hours=self.hours(r["hours"]), status=r["status"], link_type=r["link_type"],
                    stock_type=r["stock_type"], terminal_type=r["terminal_type"], vendor=r["vendor"], model=r["model"],
                )
                for r in rows
            }
            if generation == self._generation:  # not changed meanwhile
                self._index = index
            return index

    def invalidate(self) -> None:
        self._index = None
        self._generation += 1

    def _changed(self, sns: list[str], from_ts: int) -> None:
        self.invalidate()
        for cb in self.on_change:
            try:
                cb(sns, from_ts)
            except Exception:
                log.exception("registry change hook failed")

    # institutions ----------------------------------------------------------------------------
    async def upsert_institutions(self, rows: list[dict[str, Any]]) -> None:
        await self.storage.upsert_institutions(rows)
        self.invalidate()

    async def import_institutions(self, data: bytes) -> dict[str, Any]:
        """Store the file's good rows: an existing institution changes only in the file's columns; a new one
        needs a name and takes the defaults for the columns the file lacks."""
        res = csvio.parse_institutions(data)
        known = {i["code"] for i in await self.storage.list_institutions()}
        for k, row in enumerate(res.rows):
            if row and row["code"] not in known:
                try:
                    res.rows[k] = Institution.model_validate(row).model_dump()
                except ValidationError as err:
                    e = err.errors()[0]
                    res.reject(k, res.lines[k], ".".join(str(x) for x in e["loc"]),
                               f"a new institution: {e['msg']}")
        res.errors.sort(key=lambda e: e["line"])
        good = [r for r in res.rows if r]
        if good:
            await self.upsert_institutions(good)
        return {"imported": len(good), "errors": res.errors}

    # units ---------------------------------------------------------------------------------------
    async def _check_institution(self, code: str | None) -> None:
        if code and await self.storage.get_institution(code) is None:
            raise RegistryError("institution", f"unknown institution {code!r}", 422)

    async def upsert_unit(self, rec: UnitRecord, by: str) -> None:
        await self._check_institution(rec.institution)
        now = int(self.now())
        await self.storage.upsert_registry_units([rec.model_dump()], now, by)
        self._changed([rec.sn], now)

    async def patch_unit(self, sn: str, patch: UnitPatch) -> None:
        fields = patch.model_dump(exclude_unset=True)
        if "institution" in fields:
            await self._check_institution(fields["institution"])
        if not await self.storage.status_histories([sn]):
            raise RegistryError("sn", f"unit {sn!r} is not registered", 404)
        await self.storage.change_status([], {sn: fields})
        # a unit moved to another institution is counted on that one's hours from now on
        self._changed([sn], int(self.now()))

    async def import_units(self, data: bytes, by: str, dry_run: bool = False) -> dict[str, Any]:
        """Store the file's good rows (each bad row reported with its line and field). ``dry_run``: store nothing,
        and say what storing would do: each unit added or changed with its fields' old and new values (the
        dashboard shows that preview and imports only when asked again)."""
        res = csvio.parse_units(data)
        known = {i["code"] for i in await self.storage.list_institutions()}
        for k, row in enumerate(res.rows):
            if row and row.get("institution") and row["institution"] not in known:
                res.reject(k, res.lines[k], "institution", f"unknown institution {row['institution']!r}")
        seen: dict[str, int] = {}
        for k, row in enumerate(res.rows):
            if row:
                if row["sn"] in seen:
                    res.reject(k, res.lines[k], "sn", f"SN {row['sn']!r} already on line {seen[row['sn']]}")
                else:
                    seen[row["sn"]] = res.lines[k]
        good = [r for r in res.rows if r]
        res.errors.sort(key=lambda e: e["line"])
        changes = await self._unit_changes(good, [res.lines[k] for k, r in enumerate(res.rows) if r])
        counts = {a: sum(1 for c in changes if c["action"] == a) for a in ("add", "change")}
        report = {"dry_run": dry_run, "added": counts["add"], "changed": counts["change"],
                  "unchanged": len(good) - len(changes), "changes": changes, "errors": res.errors}
        if dry_run:
            return {"imported": 0, **report}
        now = int(self.now())
        if good:
            await self.storage.upsert_registry_units(good, now, by)
            self._changed([r["sn"] for r in good], now)
        return {"imported": len(good), **report}

    async def _unit_changes(self, rows: list[dict[str, Any]], lines: list[int]) -> list[dict[str, Any]]:
        """What storing ``rows`` would change: per unit added or changed, ``fields: {name: [old, new]}``."""
        if not rows:
            return []
        _total, current = await self.storage.registry_query({"sns": [r["sn"] for r in rows]}, limit=len(rows))
        now = {u["sn"]: u for u in current}
        out = []
        for line, r in zip(lines, rows, strict=True):
            old = now.get(r["sn"])
            # only the fields the row gives (its file's columns); an emptied field shows as [old, "" or None]
            fields = {k: [None if old is None else old.get(k), v] for k, v in r.items() if k != "sn" and (
                _text(v) != "" if old is None else _text(old.get(k)) != _text(v))}
            if old is None or fields:
                out.append({"line": line, "sn": r["sn"], "action": "add" if old is None else "change", "fields": fields})
        return out

    async def export_units(self, lang: str = "zh", fmt: str = "csv", within: Any = None) -> bytes:
        """``within``: a scoped caller's (cities, counties): only their units."""
        total, rows = await self.storage.registry_query({"within": within}, limit=10**9)
        out = []
        for r in rows:
            ident = r.get("identity") or {}
            d = dict(r)
            d.update({k: ident.get(k) for k in ("carrier", "imsi", "iccid")})
            d["sim_status"] = "ok" if ident.get("iccid") else ""
            out.append(d)
        return csvio.write_units(out, lang, fmt, self.settings.timezone)

    async def export_institutions(self, lang: str = "zh", fmt: str = "csv", within: Any = None) -> bytes:
        return csvio.write_institutions(await self.storage.list_institutions(within=within), lang, fmt,
                                        self.settings.timezone)

    async def set_status(self, sn: str, status: str, note: str, by: str, at: int | None = None) -> int:
        ts = int(self.now()) if at is None else at
        try:
            await self.storage.change_status([(sn, ts, status, by, note)])
        except KeyError as err:
            raise RegistryError("sn", f"unit {sn!r} is not registered", 404) from err
        self._changed([sn], ts)
        return ts

    async def swap(self, sn: str, spare_sn: str, note: str, by: str) -> dict[str, Any]:
        """The spare takes over the unit's institution and service; the unit goes to repair. One transaction."""
        idx = await self.index()
        unit, spare = idx.get(sn), idx.get(spare_sn)
        if unit is None:
            raise RegistryError("sn", f"unit {sn!r} is not registered", 404)
        if spare is None:
            raise RegistryError("spare_sn", f"unit {spare_sn!r} is not registered", 404)
        if sn == spare_sn:
            raise RegistryError("spare_sn", "a unit cannot replace itself", 422)
        if unit.status != "in_service":
            raise RegistryError("sn", f"unit {sn!r} is {unit.status}, not in service", 409)
        if spare.status != "spare":
            raise RegistryError("spare_sn", f"unit {spare_sn!r} is {spare.status}, not a spare", 409)
        ts = int(self.now())
        text = note or "swap"
        await self.storage.change_status(
            [(sn, ts, "in_repair", by, f"{text} (replaced by {spare_sn})"),
             (spare_sn, ts, "in_service", by, f"{text} (replaces {sn})")],
            {spare_sn: {"institution": unit.institution, "stock_type": "deployed", "link_type": unit.link_type}},
        )
        self._changed([sn, spare_sn], ts)
        return {"sn": sn, "status": "in_repair", "spare_sn": spare_sn, "spare_status": "in_service",
                "institution": unit.institution, "at": ts}

    async def ensure_seen(self, first_ts: dict[str, int]) -> list[str]:
        """Register the units heard from (``sn -> first sample's time``) that are not yet, and move an automatic
        registration's start earlier. A unit already ensured here from that time or earlier is not written again:
        ingest hands every unit it hears from to each roll-up pass, 200,000 of them every ten minutes at the
        largest fleets."""
        done = self._ensured
        todo = {sn: ts for sn, ts in first_ts.items() if done.get(sn, ts + 1) > ts}
        if not todo:
            return []
        added = await self.storage.ensure_registered(todo)
        if len(done) > 1_000_000:  # (a bound: a fleet that large simply writes again)
            done.clear()
        for sn, ts in todo.items():
            done[sn] = min(ts, done.get(sn, ts))
        if added:
            self.invalidate()
        return added
