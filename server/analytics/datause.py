"""SIM data use per unit per calendar month (the fleet's zone), against the plan (``analytics.sim_plan_mb``).

The agent reports ``data_bytes``: bytes sent + received as the modem (or the interface) counts them, cumulative
since that counter's last reset. Use is the sum of the positive increases between consecutive samples of a unit
(by sample time); a decrease is a counter reset (modem reboot), and the new value is counted from zero. An
increase between two samples belongs to the day (and month) of the later one. The first sample a unit ever
reports counts nothing (its base is unknown).

Kept as one row per unit per local day (``data_day``): the increases between that day's samples (``within``),
the increase from the unit's previous sample on an earlier day to that day's first (``carry``), resets, and
the first and last (ts, bytes) so neighbouring days can be joined. Rows are updated from the ingest's
post-commit hook: samples that extend a day in time order are added on; anything else (a late sample, a
duplicate) recounts that day from the raw samples, and the next day's ``carry`` is redone. Raw samples older
than the retention are gone, so a late sample for such a day cannot be recounted (the stored row stands).

MB here are 10^6 bytes, as carriers bill.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..availability.rollups import local_day, midnight

log = logging.getLogger(__name__)

MB = 1_000_000
ALERT_SHARES = (80, 100)  # per cent of the plan


def _most_used_first(item: dict[str, Any]) -> tuple[bool, int, str]:
    """The fleet's lists' order: most used first, units that reported no counter last, then by SN."""
    return (not item["reported"], -item["used_bytes"], item["sn"])


def increase(prev: int | None, cur: int) -> tuple[int, bool]:
    """Bytes used between a counter reading ``prev`` and the next one ``cur``, and whether the counter reset."""
    if prev is None:
        return 0, False
    if cur >= prev:
        return cur - prev, False
    return cur, True


def summarise_day(day: int, points: list[tuple[int, int]], prev: tuple[int, int] | None) -> dict[str, Any]:
    """A day row from its points (ts, bytes), oldest first, and the unit's previous point before that day."""
    within = resets = 0
    for (_t0, b0), (_t1, b1) in zip(points, points[1:], strict=False):
        inc, reset = increase(b0, b1)
        within += inc
        resets += reset
    carry, reset = increase(None if prev is None else prev[1], points[0][1])
    return {"day": day, "within": within, "carry": carry, "resets": resets + reset, "samples": len(points),
            "first_ts": points[0][0], "first_bytes": points[0][1], "last_ts": points[-1][0],
            "last_bytes": points[-1][1]}


def month_bounds(month: str | None, now: int, tz: ZoneInfo) -> tuple[date, date, int, int]:
    """First and last local day, start and end epoch of ``YYYY-MM`` (default: the month holding ``now``)."""
    if month:
        y, m = (int(x) for x in month.split("-", 1))
        first = date(y, m, 1)
    else:
        d = local_day(now, tz)
        first = date(d.year, d.month, 1)
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, date.fromordinal(nxt.toordinal() - 1), midnight(first, tz), midnight(nxt, tz)


def projection(used: int, start: int, end: int, now: int) -> int | None:
    """Month-end use at the month's average rate so far (None before an hour of the month has passed)."""
    if now >= end:
        return used
    elapsed = now - start
    if elapsed < 3600:
        return None
    return round(used * (end - start) / elapsed)


class DataUse:
    """Keeps ``data_day`` in step with the samples; answers per unit and fleet questions."""

    def __init__(self, settings: Any, storage: Any, tz: ZoneInfo) -> None:
        self.settings = settings
        self.storage = storage
        self.tz = tz
        self._pending: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.stats = {"unit_days_appended": 0, "unit_days_recounted": 0}

    @property
    def plan_bytes(self) -> int:
        return int(self.settings.analytics.sim_plan_mb) * MB

    # keeping the rows ---------------------------------------------------------------------------
    def on_committed(self, samples: Iterable[Any], events: Iterable[Any]) -> None:
        """Ingest post-commit hook: note the counter readings (cheap; :meth:`flush` stores them)."""
        for s in samples:
            b = (getattr(s, "body", None) or {}).get("data_bytes")
            if isinstance(b, int) and not isinstance(b, bool) and b >= 0:
                self._pending[s.sn].append((int(s.ts), b))

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def flush(self) -> int:
        """Fold the noted readings into the day rows. Returns the unit-days written."""
        pending, self._pending = self._pending, defaultdict(list)
        out: list[tuple[str, dict[str, Any]]] = []
        try:
            for sn, pts in pending.items():
                by_day: dict[int, list[tuple[int, int]]] = defaultdict(list)
                for ts, b in sorted(pts):
                    by_day[local_day(ts, self.tz).toordinal()].append((ts, b))
                for k, (day, new) in enumerate(sorted(by_day.items())):
                    if k:  # a later day of the same unit reads the row just made for the earlier one
                        await self.storage.put_data_days(out)
                        out = []
                    out += await self._update(sn, day, new)
                    if len(out) >= 5000:
                        await self.storage.put_data_days(out)
                        out = []
            if out:
                await self.storage.put_data_days(out)
        except BaseException:
            for sn, pts in pending.items():  # not lost: tried again on the next pass
                self._pending[sn][:0] = pts
            raise
        return sum(len(v) for v in pending.values())

    async def _update(self, sn: str, day: int, new: list[tuple[int, int]]) -> list[tuple[str, dict[str, Any]]]:
        prev, this, nxt = await self.storage.data_day_around(sn, day)
        if this is not None and new[0][0] > this["last_ts"]:
            row = dict(this)
            b = this["last_bytes"]
            for _ts, cur in new:
                inc, reset = increase(b, cur)
                row["within"] += inc
                row["resets"] += reset
                b = cur
            row["samples"] += len(new)
            row["last_ts"], row["last_bytes"] = new[-1]
            self.stats["unit_days_appended"] += 1
        else:
            d = date.fromordinal(day)
            points = await self.storage.data_points(sn, midnight(d, self.tz), midnight(date.fromordinal(day + 1), self.tz))
            if not points:  # raw samples purged: keep what is stored
                return []
            row = summarise_day(day, points, None if prev is None else (prev["last_ts"], prev["last_bytes"]))
            self.stats["unit_days_recounted"] += 1
        rows = [(sn, row)]
        if nxt is not None:  # the next day's first increase is counted from this day's last reading now
            anchor = this if this is not None else prev
            old = increase(None if anchor is None else anchor["last_bytes"], nxt["first_bytes"])
            new = increase(row["last_bytes"], nxt["first_bytes"])
            if new != old or nxt["carry"] != new[0]:
                fixed = dict(nxt)
                fixed["carry"] = new[0]
                fixed["resets"] = nxt["resets"] - int(old[1]) + int(new[1])
                rows.append((sn, fixed))
        return rows

    # answers ---------------------------------------------------------------------------------------
    def _item(self, sn: str, used: dict[str, int] | None, start: int, end: int, now: int) -> dict[str, Any]:
        b = 0 if used is None else used["bytes"]
        proj = projection(b, start, end, now) if used is not None else None
        plan = self.plan_bytes
        return {
            "sn": sn, "used_bytes": b, "used_mb": round(b / MB, 2), "plan_mb": plan // MB,
            "share": round(b / plan, 4), "projected_mb": None if proj is None else round(proj / MB, 1),
            "projected_share": None if proj is None else round(proj / plan, 4),
            "resets": 0 if used is None else used["resets"], "samples": 0 if used is None else used["samples"],
            "last_report": None if used is None else datetime.fromtimestamp(used["last_ts"], self.tz).isoformat(),
            "reported": used is not None,
        }

    def _unit_item(self, sn: str, info: Any, used: dict[str, int] | None, start: int, end: int, now: int
                   ) -> dict[str, Any]:
        """:meth:`_item` with the registered unit's institution, county and link (the fleet's lists)."""
        item = self._item(sn, used, start, end, now)
        item.update({"institution": info.institution, "county": info.county, "link_type": info.link_type})
        return item

    async def unit(self, sn: str, now: int, month: str | None = None) -> dict[str, Any]:
        first, last, start, end = month_bounds(month, now, self.tz)
        used = (await self.storage.data_use(first.toordinal(), last.toordinal(), [sn])).get(sn)
        days = await self.storage.data_days(sn, first.toordinal(), last.toordinal())
        return {"month": f"{first:%Y-%m}", **self._item(sn, used, start, end, now),
                "days": [{"date": date.fromordinal(d["day"]).isoformat(),
                          "used_mb": round((d["within"] + d["carry"]) / MB, 3), "resets": d["resets"],
                          "samples": d["samples"]} for d in days]}

    async def reaching(self, index: dict[str, Any], now: int, pct: int) -> dict[str, Any]:
        """This month's registered units whose use reached ``pct`` % of the plan, most used first, as :meth:`fleet`
        lists them: what the alert pass needs, without reading and sorting an item for every unit of the fleet
        (at 210,000 units that was a fifth of the pass, every minute; issue 15)."""
        first, last, start, end = month_bounds(None, now, self.tz)
        used = await self.storage.data_use(first.toordinal(), last.toordinal(),
                                           min_bytes=-(-pct * self.plan_bytes // 100))
        items = [self._unit_item(sn, info, u, start, end, now) for sn, u in used.items()
                 if (info := index.get(sn)) is not None]
        items.sort(key=_most_used_first)
        return {"month": f"{first:%Y-%m}", "plan_mb": self.plan_bytes // MB, "items": items}

    async def fleet(self, index: dict[str, Any], now: int, month: str | None = None, county: str | None = None
                    ) -> dict[str, Any]:
        """Every in-service unit of the scope, most used first (units that reported no counter last)."""
        first, last, start, end = month_bounds(month, now, self.tz)
        used = await self.storage.data_use(first.toordinal(), last.toordinal())
        items = []
        for sn, info in index.items():
            if county is not None and info.county != county:
                continue
            if info.status != "in_service" and sn not in used:
                continue
            items.append(self._unit_item(sn, info, used.get(sn), start, end, now))
        items.sort(key=_most_used_first)
        reported = [i for i in items if i["reported"]]
        return {
            "month": f"{first:%Y-%m}", "plan_mb": self.plan_bytes // MB, "units": len(items),
            "reporting": len(reported), "total_mb": round(sum(i["used_bytes"] for i in reported) / MB, 2),
            "over_80": sum(1 for i in reported if i["share"] >= 0.8),
            "over_100": sum(1 for i in reported if i["share"] >= 1.0),
            "projected_over_100": sum(1 for i in reported if (i["projected_share"] or 0) >= 1.0),
            "items": items,
        }
