"""Roll-ups kept in step with the evidence, and every availability figure answered from them.

How the stored roll-ups stay exact:

* **Closed hours only.** The hour in progress is never stored; figures cover closed hours, and the response
  says up to when (``counted_to``). ``rolled_to`` (in ``meta``) is the end of the last closed hour that has
  been materialised for every registered unit.
* **Every registered unit, every closed hour.** When an hour closes, it is counted for every unit in the
  registry, samples or not, so a unit that was silent gets its no-data slots (and a unit outside its service
  hours or not in service gets zero service slots). After a restart, the hours missed are materialised back to
  ``catchup_days``.
* **Late data.** The ingest's post-commit hook marks the (unit, hour) pairs a committed sample touches; a
  background task waits ``recount_debounce_s`` of quiet (a backlog arrives in bursts), then recounts those hours
  from the raw samples. A status change (or swap) dated in the past marks the unit's hours since then.
* **The count is the pure counter's**: :func:`counting.counter.count_unit` over the raw samples of the
  hour (or of the run of dirty hours in one day), with the institution's service hours and the unit's status
  history; nothing else decides a slot.
* Hours older than the raw-sample retention are never recounted (their evidence is gone; the stored counts
  stand).
* **What a day's hours feed**: a recounted day's network service levels (``sla_day``, counted whole per unit) and
  the recounted hours' correlated outages are due, not done, in the loop's pass: they are counted once the marks
  for that day or hour stop (a pass that did not recount it), or at once when nothing arrived while the pass ran.
  Until then they count as pending, as a marked hour does (figures not ``complete``). A backlog recounted over
  many passes thus reads each day's raw samples once for its service levels, not once a pass (issue 15).

Correlated outages: after an hour is counted, the minutes in which at least ``alerts.outage_min_units`` units of
one county had the link down are stored (``outages``), and so are the minutes in which at least
``alerts.cell_outage_min_units`` units last served by one cell site (TAC + cell id, from the samples) had the link
down (``cell_outages``); drill-down, alerts and the report mark them as a likely carrier outage rather than
terminal faults, naming the cell when one is known.

SIM data use (``server.analytics.datause``) is another roll-up kept by the same pass: the ingest hook notes the
counter readings and :meth:`Availability.flush` folds them into per unit-day rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from fractions import Fraction
from itertools import compress
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import msgspec

from counting.counter import (
    _COVERED,
    _DEV_BAD,
    _IN_HOURS,
    _IN_SERVICE,
    _NET_BAD,
    SLOT_S,
    Figures,
    Sample,
    as_fraction,
    contract_tier,
    count_unit,
    counts_of_codes,
    unit_count_from_codes,
)

from ..registry.models import FieldError
from ..settings import Settings
from ..storage.base import PENDING_KEY
from ..tasks import cancel
from . import outages, sla
from .rollups import (
    HOUR_S,
    counter_samples,
    hour_key,
    hour_start,
    hours_in_day,
    hours_touched,
    is_whole_hour,
    judge,
    local_day,
    midnight,
    plan_period,
    split_reasons,
    sum_hours,
)
from .vectors import PieceCache, RunCounts, group_totals

log = logging.getLogger(__name__)

GROUPS = ("unit", "institution", "county", "region", "fleet")
_CHUNK = 500  # SNs per SQL query


_ENCODER = msgspec.json.Encoder()
_HHMM = tuple(f"T{h:02d}:{m:02d}:00".encode() for h in range(24) for m in range(60))


def _slot_tail(v: int) -> bytes:
    """The rest of a drill-down slot's JSON after its start, for a slot code without reasons whose exclusion
    (if any) is outside service hours; same keys and order as :meth:`Availability._slot_item`."""
    covered = v & _COVERED
    item: dict[str, Any] = {
        "counted": v & (_IN_HOURS | _IN_SERVICE) == _IN_HOURS | _IN_SERVICE,
        "device": ("not_intact" if v & _DEV_BAD else "intact") if covered else "no_data",
        "network": ("not_ok" if v & _NET_BAD else "ok") if covered else "no_data",
    }
    if not v & _IN_HOURS:
        item["excluded"] = "outside_service_hours"
    return _ENCODER.encode(item)[1:]


_SLOT_TAIL = tuple(_slot_tail(v) for v in range(256))
_T_STATUS_EXCLUDED = bytes(1 if v & _IN_HOURS and not v & _IN_SERVICE else 0 for v in range(256))


def unit_flagged(service: int, intact: int, network_ok: int, p: int, q: int) -> bool:
    """``figures_from_counts(...).flagged`` for the threshold ``p/q`` (q > 0), in integers: a rate ``ok/service``
    is below ``p/q`` exactly when ``ok * q < p * service``. (The Fractions cost 0.7 s for a quarter of 47,500
    units.)"""
    return service > 0 and (intact * q < p * service or network_ok * q < p * service)


_T_NODATA = bytes(1 if v & (_IN_HOURS | _IN_SERVICE) == _IN_HOURS | _IN_SERVICE and not v & _COVERED else 0
                  for v in range(256))
_T_LOST = bytes(1 if v & (_IN_HOURS | _IN_SERVICE) == _IN_HOURS | _IN_SERVICE and v & _COVERED
                and v & (_DEV_BAD | _NET_BAD) else 0 for v in range(256))


def minutes_lost(uc: Any, outage: dict[int, Any]) -> Counter[str]:
    """The counted minutes a unit lost, by reason (no data; each failed check; link down, during a carrier outage
    or not; latency), keys in the order they first occur in the period, as a walk over ``uc.slots(counted_only=True)``
    would give them; only the slots that lost something are looked at (a quarter is 130,000 slots a unit)."""
    codes, why = uc.codes, uc.reasons
    nodata = codes.translate(_T_NODATA)
    counts: Counter[str] = Counter()
    first: dict[str, tuple[int, int]] = {}
    if nodata.count(1):
        counts["no_data"] = nodata.count(1)
        first["no_data"] = (nodata.find(1), 0)
    parsed: dict[str | None, tuple[list[str], list[str]]] = {}  # (a few distinct reasons over many slots)
    for i in compress(range(len(codes)), codes.translate(_T_LOST)):
        v = codes[i]
        r = why.get(i)
        got = parsed.get(r)
        if got is None:
            got = parsed[r] = split_reasons(r)
        dev, net = got
        keys = list(dev or ["device_fault"]) if v & _DEV_BAD else []
        if v & _NET_BAD:
            for r in net or ["network"]:
                key = r if not r.startswith("rtt=") else "latency"
                if key == "link_down" and (uc.first_slot + i) * uc.slot_s in outage:
                    key = "link_down_carrier_outage"
                keys.append(key)
        for n, key in enumerate(keys):
            counts[key] += 1
            first.setdefault(key, (i, n))
    return Counter({key: counts[key] for key in sorted(first, key=first.__getitem__)})


class _StoredCodes(NamedTuple):
    """Stored per-slot codes and reasons of a run of whole hours: what :func:`minutes_lost` reads of a count."""
    codes: bytes
    reasons: dict[int, str]
    first_slot: int
    slot_s: int = SLOT_S


def rate(r: Fraction | None, ndigits: int = 6) -> float | None:
    return None if r is None else round(float(r), ndigits)


class Availability:
    def __init__(self, settings: Settings, storage: Any, registry: Any, clock: Any) -> None:
        self.settings = settings
        self.storage = storage
        self.registry = registry
        self.clock = clock
        a = settings.availability
        self.tz = ZoneInfo(settings.timezone)
        self.critical = list(a.critical_checks)
        self.rtt_ok = a.rtt_ok_ms
        self.threshold = as_fraction(a.threshold)
        self.tiers = [(as_fraction(f), t, as_fraction(p)) for f, t, p in a.tiers]
        self.last_tier = (a.last_tier[0], as_fraction(a.last_tier[1]))
        self._dirty: dict[int, set[str]] = defaultdict(set)  # hour start -> SNs
        # the (hour, SNs) a pass has taken out of _dirty and is recounting: still pending until it has committed
        # (an answer read meanwhile came from the old roll-ups and said complete: issue 16)
        self._recounting: dict[int, set[str]] = {}
        # what a recount leaves to do once the backlog behind it has settled (see _settle): the network service
        # levels of (local day ordinal -> SNs), the correlated outages of hour starts. Pending like the marks above.
        self._sla_due: dict[int, set[str]] = defaultdict(set)
        self._outage_due: set[int] = set()
        self._touched: tuple[set[int], set[int]] = (set(), set())  # (days, hours) the running pass recounted
        # recount_queue: the last id taken and the last deleted; per due day / hour, the last id taken before it was
        # first due. Rows are deleted only up to where all they led to is done (a restart takes them again).
        self._queue_taken = 0
        self._queue_done = 0
        self._queue_taken_before = 0  # _queue_taken when the running pass began
        self._arrivals = 0  # commits this process heard of (a pass during which none came was quiet)
        self._sla_since: dict[int, int] = {}
        self._outage_since: dict[int, int] = {}
        self._seen: dict[str, int] = {}  # SN -> earliest sample ts, to register
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._poll_s = 300.0  # see start()
        self._task: asyncio.Task[None] | None = None
        self.rolled_to: int | None = None
        self._marked_meanwhile = False  # API-only: marks made while this process's recount ran (see mark)
        # API-only: registry changes (SNs, from) to mark up to the primary's rolled_to as meta says when the
        # recount runs, not as this process last read it (up to a second old; see on_registry_change)
        self._changes: list[tuple[list[str], int]] = []
        self.background = True  # False in an API-only process (see start)
        self.follower = False  # ingests beside a leader (PostgreSQL), which recounts what it stores (see start)
        self._recount_task: asyncio.Future[None] | None = None
        self._generation = 0  # bumped whenever stored roll-ups change
        self._cache: dict[tuple[Any, ...], asyncio.Future[dict[str, Any]]] = {}
        self._pieces = PieceCache(storage)  # per-unit sums of months, days and hours, by roll-up stamps
        self._slots_cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()  # closed days' drill-downs, JSON
        self._slots_cache_size = 256  # ~150 kB each
        self._starts_cache: dict[tuple[int, int, int], list[bytes]] = {}
        self.drill_from_stored = 0  # drill-downs answered from the stored per-slot codes (the rest recount)
        self._primary_pending: list[tuple[int, int]] = []  # API-only: the primary's hours awaiting recount
        self._primary_pending_text = ""
        self.stats: dict[str, Any] = {"recounts": 0, "hours_recounted": 0, "last_recount_s": 0.0,
                                      "last_recount_at": None}
        from ..analytics.datause import DataUse

        # SIM data use per unit-day: another roll-up kept in step with the samples by the same pass
        self.datause = DataUse(settings, storage, self.tz)

    # lifecycle ------------------------------------------------------------------------------
    async def start(self, background: bool = True, follower: bool = False) -> None:
        """``background=False`` (an API-only process): no roll-up loop; ``rolled_to`` follows ``meta`` (the primary
        moves it), and hours marked here (a status change dated in the past) are recounted here at once.
        ``follower`` (a process ingesting beside a leader on PostgreSQL, server/leadership.py): as API-only; the
        hours its own commits touch are recounted by the leader alone, from ``recount_queue`` (written in the same
        transaction as the samples, taken every few seconds), so each is recounted once across the processes;
        :meth:`promote` when it becomes the leader."""
        await self.load()
        self.background = background
        self.follower = follower
        # several processes (PostgreSQL): the leader also looks for the followers' commits every few seconds
        self._poll_s = 5.0 if getattr(self.storage, "dialect", "") == "postgresql" else 300.0
        self.registry.on_change.append(self.on_registry_change)
        if background or follower:
            self._task = asyncio.create_task(self._loop(), name="availability-rollups")

    async def promote(self) -> None:
        """This follower now leads: close hours for every unit and move ``rolled_to`` from here on."""
        async with self._lock:
            await self.load()
            self.background = True
        self._wake.set()

    async def sync(self) -> tuple[str, str]:
        """The roll-up and registry versions in ``meta`` (read at most every second); an API-only process takes
        ``rolled_to`` from there too."""
        v = await self.storage.versions()
        if not self.background and v["rolled_to"]:
            self.rolled_to = int(v["rolled_to"])
        if not self.background:
            text = v.get(PENDING_KEY) or ""
            if text != self._primary_pending_text:
                self._primary_pending_text = text
                self._primary_pending = [(int(a), int(b)) for a, b in json.loads(text)] if text else []
        return v["rollup_version"], v["registry_version"]

    async def load(self) -> None:
        """Read how far the roll-ups go (enough to answer figures, e.g. from the report CLI)."""
        v = await self.storage.meta_get("rolled_to")
        if v is None:
            self.rolled_to = hour_start(int(self.clock.now()), self.tz)
            await self.storage.meta_set("rolled_to", str(self.rolled_to))
            # the first counted hour, kept: no period that ended before it is reported (decision 035)
            await self.storage.meta_claim("counted_from", str(self.rolled_to))
        else:
            self.rolled_to = int(v)

    async def stop(self) -> None:
        await cancel([self._task])

    async def _loop(self) -> None:
        debounce = self.settings.availability.recount_debounce_s
        while True:
            now = self.clock.now()
            to_next_hour = hour_start(int(now), self.tz) + HOUR_S - now
            speed = getattr(self.clock, "speed", 1.0) or 1.0
            wait = min(to_next_hour / speed + 1, self._poll_s)
            if self._sla_due or self._outage_due:  # left due by the last pass: counted after a debounce of quiet
                wait = min(wait, debounce)
            try:
                async with asyncio.timeout(max(0.5, wait)):  # not wait_for, which on 3.11 can swallow a cancel
                    await self._wake.wait()
                # quiet period: a backlog arrives in bursts (but a fleet that never goes quiet is still served)
                waited = 0.0
                while waited < max(60.0, debounce):
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(debounce):  # not wait_for, which on 3.11 can swallow a cancel
                            await self._wake.wait()
                    except TimeoutError:
                        break
                    waited += debounce
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush(settle=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("roll-up pass failed; the hours stay marked and are retried")
                await asyncio.sleep(5)

    # marks -------------------------------------------------------------------------------------
    def on_committed(self, samples: Iterable[Any], events: Iterable[Any]) -> None:
        """Ingest post-commit hook: mark the hours the committed samples touch (cheap; never blocks). Not in a
        follower: the leader recounts those hours from ``recount_queue``, and a second recount here was the same
        work done twice (decision 030)."""
        tz = self.tz
        n = 0
        samples = list(samples)
        self.datause.on_committed(samples, events)
        if self.follower and not self.background:
            return  # the leader recounts them, once, from recount_queue (written with the samples: decision 030)
        for s in samples:
            n += 1
            for h in hours_touched(int(s.ts), int(s.interval), tz):
                self._dirty[h].add(s.sn)
            first = self._seen.get(s.sn)
            if first is None or s.ts < first:
                self._seen[s.sn] = int(s.ts)
        if n:
            self._arrivals += 1
            self._wake.set()

    def mark(self, sns: Iterable[str], start: int, end: int) -> None:
        """Mark the closed, materialised hours of ``[start, end)`` for recount. (Hours a pass is closing now are
        not materialised yet: that pass marks them again when the registry changed meanwhile, see :meth:`_pass`.)"""
        sns = list(sns)
        if not sns or self.rolled_to is None:
            return
        end = min(end, self.rolled_to)
        h = hour_start(start, self.tz)
        while h < end:
            self._dirty[h].update(sns)
            h = hour_start(h + HOUR_S, self.tz)
        self._wake.set()
        self._recount_soon()

    def _recount_soon(self) -> None:
        if not self.background:
            if self._recount_task is None or self._recount_task.done():
                self._recount_task = asyncio.ensure_future(self._recount_here())
            else:  # the running recount may have taken its hours already: it goes round again
                self._marked_meanwhile = True

    async def _recount_here(self) -> None:
        """API-only process: recount what was marked here (no loop runs here; the primary does not see these
        marks), again while more was marked during the recount."""
        await asyncio.sleep(0)
        while True:
            self._marked_meanwhile = False
            try:
                await self.flush()
            except Exception:
                log.exception("recount of hours marked in this API process failed")
                return
            if not self._marked_meanwhile:
                return

    def on_registry_change(self, sns: list[str], from_ts: int) -> None:
        if not self.background and sns:  # marked again by the recount, up to the rolled_to it reads then
            self._changes.append((list(sns), from_ts))
        self.mark(sns, from_ts, self.rolled_to or from_ts)

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._dirty.values()) + sum(len(v) for v in self._recounting.values())

    def _marked(self) -> Iterable[tuple[int, set[str]]]:
        """Every (hour, SNs) waiting for its recount or being recounted now."""
        yield from self._dirty.items()
        yield from self._recounting.items()

    @property
    def pending_after(self) -> dict[str, int]:
        """What recounts have left due until their backlog settles (:meth:`_settle`): unit-days of network service
        levels, hours of correlated outages."""
        return {"pending_sla_unit_days": sum(len(v) for v in self._sla_due.values()),
                "pending_outage_hours": len(self._outage_due)}

    def _due_hours(self) -> set[int]:
        """The hours whose day's service levels or whose outages are due: pending as a marked hour is (a report
        on them is not complete; the API-only processes see them in the published ranges)."""
        out = set(self._outage_due)
        for day in self._sla_due:
            d = date.fromordinal(day)
            a, b = midnight(d, self.tz), midnight(d + timedelta(days=1), self.tz)
            h = a
            while h < b:
                out.add(h)
                h = hour_start(h + HOUR_S, self.tz)
        return out

    # the pass ------------------------------------------------------------------------------------
    async def flush(self, settle: bool = True) -> dict[str, Any]:
        """Register new units, materialise newly closed hours, recount marked hours, then the network service
        levels and correlated outages of the days and hours recounted (:meth:`_settle`). Returns what it did.

        ``settle`` false (the background loop): those days and hours are done only once their backlog has settled:
        a day or hour this pass did not recount (its marks have stopped), or all of them when nothing arrived while
        the pass ran; the rest stay due (and pending) for a later pass. A backlog arriving over many passes thus
        has each day's service levels counted once, not once a pass (issue 15)."""
        async with self._lock:
            t0 = time.perf_counter()
            now = int(self.clock.now())
            if not self.background:  # API-only: recount what was marked here, up to the primary's rolled_to
                await self.sync()
                if self._changes:
                    # rolled_to read after the changes committed: the hours the primary closed before are marked
                    # here; those it closes later it counts from the registry as it is then (see below)
                    rolled = await self.storage.meta_get("rolled_to")
                    if rolled:
                        self.rolled_to = max(self.rolled_to or 0, int(rolled))
                    changes, self._changes = self._changes, []
                    for sns, from_ts in changes:
                        self._mark_span(sns, from_ts, self.rolled_to or from_ts)
                if self._seen:  # a follower's ingest heard them first: registered here, counted by the leader
                    seen, self._seen = self._seen, {}
                    added = await self.registry.ensure_seen(seen)
                    for sn in added:
                        self.mark([sn], seen[sn], self.rolled_to or seen[sn])
                closed = min(hour_start(now, self.tz), self.rolled_to or 0)
                keep_from = now - self.settings.retention_days * 86400 + HOUR_S
                todo = {h: sns_h for h in sorted(self._dirty) if h + HOUR_S <= closed
                        for sns_h in [self._dirty.pop(h)] if h >= keep_from}
                hours = await self._recount_marked(todo)
                await self._settle(True)
                await self._flush_datause()  # a follower's own ingest: its readings are in no other process
                return {"unit_hours": hours, "seconds": self._counted(hours, t0, now), "rolled_to": self.rolled_to}
            closed = hour_start(now, self.tz)
            assert self.rolled_to is not None
            self._queue_taken_before = self._queue_taken
            queued = await self._take_queue()
            # units heard from before anyone registered them: every hour from their first sample (a registered
            # unit's late samples mark the hours they touch; marking each unit heard from up to rolled_to recounted
            # a backlog's every later hour again in every pass: issue 15)
            if self._seen:
                seen, self._seen = self._seen, {}
                for sn in await self.registry.ensure_seen(seen):
                    self.mark([sn], seen[sn], self.rolled_to)
            # hours closed since the last pass: every registered unit, from the registry as it is now (the cached
            # index follows another process's writes only within a second). A status change while this pass counts
            # them is marked by whoever made it only up to rolled_to, which moves past them only when the pass
            # ends, and this pass counted them from the registry it read before: if the registry changed meanwhile
            # (in this process or another), they are marked again below for the next pass.
            registry_version = None
            if closed > self.rolled_to:
                start = max(self.rolled_to, closed - self.settings.availability.catchup_days * 86400)
                registry_version = await self.storage.meta_get("registry_version")
                self.registry.invalidate()
                self._mark_span(list((await self.registry.index()).keys()), start, closed)
            keep_from = now - self.settings.retention_days * 86400 + HOUR_S  # raw samples still complete
            todo: dict[int, set[str]] = {}
            for h in sorted(self._dirty):
                if h + HOUR_S <= closed:
                    sns_h = self._dirty.pop(h)
                    if h >= keep_from:
                        todo[h] = sns_h
            arrivals = self._arrivals
            hours = await self._recount_marked(todo)
            if registry_version is not None and start > self.rolled_to:
                # hours never materialised (down longer than catchup_days): their days' network service levels are
                # still counted from the raw samples kept, as the hours counted before the gap did not close them
                await self._sla_gap(self.rolled_to, start)
            quiet = self._arrivals == arrivals and not await self.storage.recount_queue(limit=1, after=self._queue_taken)
            await self._settle(settle or quiet)
            # the queue's rows are recounted (or, for hours still open, to be counted for every unit when they
            # close) up to those whose days' service levels or hours' outages are still due
            done_to = min([self._queue_taken, *self._sla_since.values(), *self._outage_since.values()])
            if done_to > self._queue_done:
                await self.storage.recount_queue_done(done_to)
                self._queue_done = done_to
            if queued:
                self._wake.set()  # the queue held more than one pass takes
            await self._flush_datause()
            if closed > self.rolled_to:
                self.rolled_to = closed
                await self.storage.meta_set("rolled_to", str(closed))
                await self._purge(now)
            # (after rolled_to moved: a change committed later is marked past these hours by whoever made it)
            if registry_version is not None and await self.storage.meta_get("registry_version") != registry_version:
                self.registry.invalidate()
                self._mark_span(list((await self.registry.index()).keys()), start, closed)
                self._wake.set()
            return {"unit_hours": hours, "seconds": self._counted(hours, t0, now), "rolled_to": self.rolled_to}

    async def _flush_datause(self) -> None:
        """Fold the SIM counter readings this process's ingest committed into ``data_day``. Every ingesting process
        does so for its own readings (a follower's were kept in its memory and never written: a unit whose batches
        the shared subscription gave to a follower showed no data use, and the follower's memory grew); one process
        at a time across the fleet (``storage.recount_lock``), as a day row is read, added to and written back."""
        if not self.datause.pending:
            return
        async with self.storage.recount_lock():
            await self.datause.flush()

    def _counted(self, hours: int, t0: float, now: int) -> float:
        """Note a pass that recounted ``hours`` unit-hours in this process (``/availability/status``); its seconds."""
        took = round(time.perf_counter() - t0, 3)
        if hours:
            self.stats["recounts"] += 1
            self.stats["hours_recounted"] += hours
            self.stats["last_recount_s"] = took
            self.stats["last_recount_at"] = now
        return took

    def _mark_span(self, sns: list[str], start: int, end: int) -> None:
        h = hour_start(start, self.tz)
        while h < end:
            self._dirty[h].update(sns)
            h = hour_start(h + HOUR_S, self.tz)

    async def _take_queue(self, limit: int = 500_000) -> bool:
        """The spans committed samples touched (``recount_queue``, written with the samples), marked for this pass:
        what a process that died before its own recount left, and what followers committed; up to ``limit`` rows
        by pages (a 72 h backlog of 3,000 units is 219,000; taking 10,000 a pass recounted most hours again and
        again). Whether it stopped at the limit (more may wait)."""
        taken = 0
        while taken < limit:
            rows = await self.storage.recount_queue(limit=min(50_000, limit - taken), after=self._queue_taken)
            for _qid, sn, a, b in rows:
                for h in hours_touched(a, b - a, self.tz):
                    self._dirty[h].add(sn)
                first = self._seen.get(sn)
                if first is None or a < first:
                    self._seen[sn] = a
            if not rows:
                return False
            taken += len(rows)
            self._queue_taken = rows[-1][0]
        return True

    def rollups_kept_from(self, now: int) -> date:
        """The first day whose roll-ups are kept: whole months back to ``availability.rollup_keep_days`` (so a month
        row never covers purged days). What :meth:`_purge` keeps, and what a scheduled report can still be made
        from."""
        keep = local_day(now, self.tz) - timedelta(days=self.settings.availability.rollup_keep_days)
        return date(keep.year, keep.month, 1)

    async def _purge(self, now: int) -> None:
        first = self.rollups_kept_from(now).toordinal()
        await self.storage.purge_rollups(first)
        await self.storage.purge_data_days(first)
        # per-slot codes only while the raw samples they were counted from are kept (the drill-down checks them)
        await self.storage.purge_slot_hours(local_day(now - self.settings.retention_days * 86400, self.tz).toordinal())

    async def _recount_marked(self, todo: dict[int, set[str]]) -> int:
        """:meth:`_recount` of hours taken out of ``_dirty``: pending until committed, marked again if it fails."""
        self._recounting = todo
        try:
            return await self._recount(todo)
        except BaseException:
            for h, sns in todo.items():
                self._dirty[h].update(sns)
            raise
        finally:
            self._recounting = {}

    async def _recount(self, todo: dict[int, set[str]]) -> int:
        """Recount (unit, hour) pairs, one process of the fleet at a time (``storage.recount_lock``)."""
        if not todo:
            return 0
        async with self.storage.recount_lock():
            return await self._recount_now(todo)

    async def _recount_now(self, todo: dict[int, set[str]]) -> int:
        """Recount (unit, hour) pairs; runs of hours of one local day are counted in one go per unit."""
        by_day: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for h, sns in todo.items():
            day = local_day(h, self.tz).toordinal()
            for sn in sns:
                by_day[day][sn].append(h)
        index = await self.registry.index()
        done = 0
        for day, units in sorted(by_day.items()):
            d = date.fromordinal(day)
            nh = hours_in_day(d, self.tz)
            all_sns = [sn for sn in units if sn in index]
            first_h = min(min(hs) for hs in units.values())
            end_h = max(max(hs) for hs in units.values()) + HOUR_S
            for i in range(0, len(all_sns), _CHUNK):  # a chunk of units at a time: a backlog's day of 3,000 units
                done += await self._recount_units(day, nh, all_sns[i: i + _CHUNK], units, index)  # is 4 M samples
            # the day's service levels and the span's outages: once the backlog has settled (_settle)
            self._due(day, all_sns, first_h, end_h)
            # a sample's TCP counters are the next one's loss look-back (sla.LOSS_GAP_S): the next day's levels too
            # for a unit whose recounted hours reach that close to midnight
            nxt = [sn for sn in all_sns
                   if local_day(max(units[sn]) + HOUR_S + sla.LOSS_GAP_S - 1, self.tz).toordinal() > day]
            if nxt:
                self._sla_day_due(day + 1, nxt)
        return done

    def _sla_day_due(self, day: int, sns: Iterable[str]) -> None:
        """The day's service levels are due for ``sns`` when the day is over (counted once its last hour is)."""
        if midnight(date.fromordinal(day + 1), self.tz) > hour_start(int(self.clock.now()), self.tz):
            return
        self._sla_due[day].update(sns)
        self._sla_since.setdefault(day, self._queue_taken_before)
        self._touched[0].add(day)

    async def _recount_units(self, day: int, nh: int, sns: list[str], units: dict[str, list[int]],
                             index: dict[str, Any]) -> int:
        """Recount the hours ``units[sn]`` of one local day for ``sns``, and write them; how many unit-hours."""
        done = 0
        histories = await self.storage.status_histories(sns)
        first_h = min(min(units[sn]) for sn in sns)
        end_h = max(max(units[sn]) for sn in sns) + HOUR_S
        samples: dict[str, list[Sample]] = defaultdict(list)
        for sn, smp in self._judge(await self.storage.sample_facts(sns, first_h, end_h)):
            samples[sn].append(smp)
        items = []
        strips: list[Any] = []  # parallel to items
        for sn in sns:
            hs = sorted(units[sn])
            a, b = hs[0], hs[-1] + HOUR_S
            smp = samples.get(sn, ())
            uc = self.count(sn, index[sn].hours, histories.get(sn, []), smp, a, b)
            wanted = set(hs)
            dated = Counter((s.ts - a) // HOUR_S for s in smp if a <= s.ts < b)
            per_hour = HOUR_S // uc.slot_s if HOUR_S % uc.slot_s == 0 else 0
            for row in uc.rollup("hour"):
                hs_ = int(row.start.timestamp())
                if hs_ in wanted:
                    _day, idx = hour_key(hs_, self.tz)
                    items.append((sn, day, idx, nh, (row.service_slots, row.intact_slots,
                                                     row.network_ok_slots, row.no_data_slots)))
                    done += 1
                    strip = None
                    if per_hour and hs_ % uc.slot_s == 0:
                        off = hs_ // uc.slot_s - uc.first_slot
                        why = {k - off: r for k, r in uc.reasons.items() if off <= k < off + per_hour}
                        strip = (sn, day, idx, uc.codes[off: off + per_hour], json.dumps(why) if why else None,
                                 dated.get((hs_ - a) // HOUR_S, 0))
                    strips.append(strip)
        for i in range(0, len(items), 20000):  # each item's strip (when the slot fits the hour) goes with it
            await self.storage.write_hour_counts(items[i: i + 20000],
                                                 [t for t in strips[i: i + 20000] if t is not None])
            self._generation += 1
        return done

    def _due(self, day: int, sns: Iterable[str], first_h: int, end_h: int) -> None:
        self._sla_day_due(day, sns)
        h = first_h
        while h < end_h:
            self._outage_due.add(h)
            self._outage_since.setdefault(h, self._queue_taken_before)
            self._touched[1].add(h)
            h = hour_start(h + HOUR_S, self.tz)

    async def _settle(self, everything: bool) -> None:
        """The network service levels (``sla_day``) of the due days and the correlated outages of the due hours:
        every one (``everything``), else those the pass just run did not recount (their marks have stopped; the
        others are done by a later pass). A day's levels are counted whole from the raw samples for the units
        marked in it (as :meth:`_sla_day` did in every pass before: a backlog delivered over 20 passes read each
        day's samples 20 times); outages by runs of due hours, a day at most a query. Each stays due (and
        pending) until written."""
        days, hours = self._touched
        self._touched = (set(), set())
        todo_days = sorted(d for d in self._sla_due if everything or d not in days)
        todo_hours = sorted(h for h in self._outage_due if everything or h not in hours)
        if not todo_days and not todo_hours:
            return
        index = await self.registry.index()
        async with self.storage.recount_lock():
            run: list[int] = []
            for h in [*todo_hours, None]:
                if run and (h is None or h != run[-1] + HOUR_S or h - run[0] >= 86400):
                    await self._outages(run[0], run[-1] + HOUR_S, index)
                    for x in run:
                        self._outage_due.discard(x)
                        self._outage_since.pop(x, None)
                    run = []
                if h is not None:
                    run.append(h)
            for day in todo_days:
                sns = sorted(sn for sn in self._sla_due[day] if sn in index)
                histories: dict[str, list[dict[str, Any]]] = {}
                for i in range(0, len(sns), _CHUNK):
                    histories.update(await self.storage.status_histories(sns[i: i + _CHUNK]))
                await self._sla_day(date.fromordinal(day), sns, index, histories)
                del self._sla_due[day]
                self._sla_since.pop(day, None)
        self._generation += 1

    async def _sla_gap(self, a: int, b: int) -> None:
        index = await self.registry.index()
        sns = sorted(index)
        histories: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(sns), _CHUNK):
            histories.update(await self.storage.status_histories(sns[i: i + _CHUNK]))
        day, last = local_day(a, self.tz), local_day(b, self.tz)
        async with self.storage.recount_lock():
            while day <= last:
                await self._sla_day(day, sns, index, histories)
                day += timedelta(days=1)

    async def _sla_day(self, day: date, sns: list[str], index: dict[str, Any],
                       histories: dict[str, list[dict[str, Any]]]) -> None:
        """The network service levels of a closed local day for ``sns`` (a row each, zeros included), recounted
        whole from the raw samples when any of its hours is counted again (late data, a status change); a day
        whose raw samples (or the loss's look-back before it) may be purged already keeps what it has."""
        a, b = midnight(day, self.tz), midnight(day + timedelta(days=1), self.tz)
        now = int(self.clock.now())
        if b > hour_start(now, self.tz) or a - sla.LOSS_GAP_S < now - self.settings.retention_days * 86400 + HOUR_S:
            return
        an = self.settings.analytics
        limits = (an.latency_ok_ms, an.jitter_ok_ms, an.loss_ok)
        rows: list[tuple[str, int, list[int]]] = []
        for i in range(0, len(sns), 100):  # a unit reporting every minute: 100 units' day are 144,000 rows
            chunk = sns[i: i + 100]
            by_sn: dict[str, list[Any]] = defaultdict(list)
            for r in await self.storage.network_samples(a - sla.LOSS_GAP_S, b, chunk):
                by_sn[r[0]].append(r[1:])
            for sn in chunk:
                got = sla.count_unit(by_sn.get(sn, ()), index[sn].hours.window_seconds(a, b),
                                     sla.history_pairs(histories.get(sn, [])), a, b, limits, self.tz)
                rows.append((sn, day.toordinal(), got.get(day.toordinal(), [0] * len(sla.SLA_KEYS))))
        for i in range(0, len(rows), 20000):
            await self.storage.write_sla_days(rows[i: i + 20000])

    def _judge(self, facts: Iterable[tuple[str, int, int, int, int | None, str]]) -> Iterable[tuple[str, Sample]]:
        """Stored sample facts as counter samples; the check JSON is parsed once per distinct text."""
        judged: dict[tuple[str, int], tuple[bool, bool, str | None]] = {}
        rtt_ok = self.rtt_ok
        for sn, ts, iv, connected, rtt, checks in facts:
            try:
                if rtt is not None and rtt > rtt_ok:
                    j = judge(json.loads(checks), bool(connected), rtt, self.critical, rtt_ok)
                else:
                    key = (checks, connected)
                    j = judged.get(key)  # type: ignore[assignment]
                    if j is None:
                        j = judged[key] = judge(json.loads(checks), bool(connected), rtt, self.critical, rtt_ok)
                smp = Sample(int(ts), int(iv), j[0], j[1], j[2])
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as err:
                # a row the counter cannot use is skipped and reported, never allowed to stop the pass (one
                # unit's bad row once froze every unit's roll-ups): its minutes count as no data
                self.stats["rows_skipped"] = self.stats.get("rows_skipped", 0) + 1
                if self.stats["rows_skipped"] <= 10 or self.stats["rows_skipped"] % 1000 == 0:
                    log.error("roll-up: skipped a stored sample of %s at %s it cannot count (%s: %s); %d so far",
                              sn, ts, type(err).__name__, str(err)[:200], self.stats["rows_skipped"])
                continue
            yield sn, smp

    def count(self, sn: str, hours: Any, history: list[dict[str, Any]], rows: Iterable[Any], start: int, end: int) -> Any:
        """The pure counter over ``[start, end)`` for one unit, from stored rows (or counter samples)."""
        hist = [(h["from_ts"], h["status"]) for h in history]
        rows = list(rows)
        return count_unit(
            datetime.fromtimestamp(start, self.tz), datetime.fromtimestamp(end, self.tz),
            rows if not rows or type(rows[0]) is Sample else counter_samples(rows, self.critical, self.rtt_ok),
            hours=hours, status_history=hist, initial_status="spare" if hist else "in_service",
            tz=self.tz, threshold=self.threshold, unit=sn,
        )

    async def _outages(self, start: int, end: int, index: dict[str, Any]) -> None:
        """Minutes in which several units of one county, or of one cell site, had the link down: likely the
        carrier's fault (the rules: :mod:`server.availability.outages`)."""
        placed = await outages.link_down_cells(self.storage, start, end)
        rows, cell_rows = outages.outage_minutes(placed, index, start, end, self.settings.alerts.outage_min_units,
                                                 self.settings.alerts.cell_outage_min_units)
        await self.storage.replace_outages(start, end, rows)
        await self.storage.replace_cell_outages(start, end, cell_rows)

    async def outage_marks(self, sn: str, county: str, start: int, end: int) -> dict[int, dict[str, Any]]:
        """Link-down minutes of ``[start, end)`` that a correlated outage explains for this unit:
        minute -> {"county": ...} and/or {"cell": "TAC/CELL", "cell_units": n}."""
        marks: dict[int, dict[str, Any]] = {}
        if county:
            for o in await self.storage.outages_between(start, end, county):
                marks.setdefault(o["minute"], {})["county"] = county
        for o in await self.storage.cell_outages_between(start, end, sn=sn):
            if sn in o["sns"]:
                marks.setdefault(o["minute"], {}).update(cell=f"{o['tac']}/{o['cell']}", cell_units=o["units"])
        return marks

    # figures -------------------------------------------------------------------------------------
    def period(self, start_text: str, end_text: str) -> tuple[int, int]:
        """``[from, to)`` from what a person or client typed (:mod:`wire.times`: a day, a local time in the fleet's
        zone, or a time with its offset; a day as ``to`` is included). Every refusal's hints are accepted."""
        from wire.times import TimeInputError, parse_time, written_like

        bounds = []
        for name, text in (("from", start_text), ("to", end_text)):
            try:
                bounds.append(parse_time(text, name, self.tz, end=name == "to"))
            except TimeInputError as err:
                raise FieldError(name, err.message) from err
        start, end = bounds
        for name, v, text in (("from", start, start_text), ("to", end, end_text)):
            if not is_whole_hour(v, self.tz):
                before = hour_start(v, self.tz)
                hints = " or ".join(written_like(t, text, self.tz) for t in (before, before + 3600))
                raise FieldError(name, f"must be on a whole hour of the fleet's time zone ({self.settings.timezone}); "
                                       f"figures are kept per hour (use the slot drill-down for minutes); write e.g. "
                                       f"{hints}")
        if end <= start:
            raise FieldError("to", "must be after from")
        if end - start > 800 * 86400:
            raise FieldError("to", "period longer than 800 days")
        return start, end

    async def figures(self, start: int, end: int, group_by: str = "fleet", *, county: str | None = None,
                      region: str | None = None, institution: str | None = None, sn: str | None = None,
                      within: frozenset[str] | None = None, only_flagged: bool = False) -> dict[str, Any]:
        """Figures for ``[start, end)`` grouped by unit, institution, county, region or the whole fleet.

        ``within``: a scoped caller's units (:func:`server.auth.scope.scope_sns`), None for the province. The
        figures then count those units only, and carry no contract tier (the tier is the province's: a county's
        share of the fleet is paid nothing on its own; decision 031). ``only_flagged`` (with ``group_by="unit"``):
        the items are the flagged units only (the fleet's figures still count every unit).

        Answers are cached until the roll-ups or the registry change, and identical requests running at
        the same time share one computation (fifty dashboards asking for the same quarter cost one count); the
        per-unit sums of the period's months, days and hours are kept apart from that (:mod:`.vectors`), so a new
        period over kept pieces costs their sums, not a read of every unit's rows.
        """
        versions = await self.sync()  # another process's roll-up or registry write: a new key
        key = (start, end, group_by, county, region, institution, sn, within, only_flagged, self._generation,
               self.rolled_to, getattr(self.registry, "_generation", 0), versions)
        fut = self._cache.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._figures(start, end, group_by, county=county, region=region,
                                                      institution=institution, sn=sn, within=within,
                                                      only_flagged=only_flagged))
            self._cache[key] = fut
            while len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
        try:
            out = dict(await asyncio.shield(fut))
        except Exception:
            self._cache.pop(key, None)
            raise
        out["complete"] = out["complete"] and not self._pending_in(start, end)
        return out

    def warm_periods(self) -> list[tuple[int, int]]:
        """The periods dashboards open with: the last whole quarter (the contract pays by quarters) and this month
        (the fleet view's), each ``[start, end)`` from local midnights, as the dashboard and the API parse them."""
        today = local_day(int(self.clock.now()), self.tz)
        q0 = date(today.year, (today.month - 1) // 3 * 3 + 1, 1)
        prev = date(q0.year - 1, 10, 1) if q0.month == 1 else date(q0.year, q0.month - 3, 1)
        m0 = today.replace(day=1)
        m1 = date(m0.year + m0.month // 12, m0.month % 12 + 1, 1)
        return [(midnight(prev, self.tz), midnight(q0, self.tz)), (midnight(m0, self.tz), midnight(m1, self.tz))]

    async def warm(self) -> None:
        """Compute the province's figures by county for :meth:`warm_periods` ahead of the first request: the
        registry index, the figures' universe and the pieces they read stay kept, and so does the answer until the
        roll-ups move. At 210,000 units the first quarter's figures cost 4-7 s of one process (issue 15), and every
        dashboard asking meanwhile waited for it; after a registry change they are read again here, not by a
        request."""
        for start, end in self.warm_periods():
            await self.figures(start, end, "county")

    async def warm_loop(self, every_s: float) -> None:
        """:meth:`warm` now and then every ``every_s`` seconds (cheap while nothing changed); errors are logged."""
        while True:
            try:
                await self.warm()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not compute the dashboards' figures ahead; requests will")
            await asyncio.sleep(every_s)

    async def _figures(self, start: int, end: int, group_by: str, *, county: str | None, region: str | None,
                       institution: str | None, sn: str | None, within: frozenset[str] | None = None,
                       only_flagged: bool = False) -> dict[str, Any]:
        index = await self.registry.index()
        universe = await self._pieces.universe(index, (await self.storage.versions())["rollup_version"])
        assert self.rolled_to is not None
        counted_to = min(end, self.rolled_to)
        sources = []
        if counted_to > start:
            sources = await self._pieces.sources(universe, plan_period(start, counted_to, self.tz))
        else:
            counted_to = start
        thr = self.threshold
        runs = [RunCounts(a, b, sources, thr.numerator, thr.denominator)
                for a, b in universe.select(within, county, region, institution, sn)]
        out: dict[str, Any] = {
            "from": datetime.fromtimestamp(start, self.tz).isoformat(),
            "to": datetime.fromtimestamp(end, self.tz).isoformat(),
            "counted_to": datetime.fromtimestamp(counted_to, self.tz).isoformat(),
            "complete": counted_to >= end,
            "group_by": group_by,
            "threshold": float(self.threshold),
        }
        fleet = [0] * 6
        for rc in runs:
            for x, v in enumerate(rc.totals()):
                fleet[x] += v
        out["fleet"] = self.group_dict(Figures(*fleet, threshold=thr), tier=True)
        if within is not None:  # a county's figures are not the contract's: no tier, no payment
            out["fleet"]["tier"] = out["fleet"]["final_payment"] = None
        if group_by == "unit":
            out["items"] = self._unit_items(universe, runs, only_flagged)
        elif group_by != "fleet":
            groups = group_totals(universe, runs, group_by)
            items = []
            for k in sorted(groups):
                (sv, ok_dev, ok_net, nodata, n, flagged), at = groups[k]
                item: dict[str, Any] = {group_by: k or None}
                if group_by == "institution":
                    u = universe.units[at]
                    item.update(name=u.institution_name, county=u.county, region=u.region, type=u.institution_type)
                item.update(service_slots=sv, intact_slots=ok_dev, network_ok_slots=ok_net, no_data_slots=nodata,
                            device_rate=round(ok_dev / sv, 6) if sv else None,
                            network_rate=round(ok_net / sv, 6) if sv else None, units=n, flagged_units=flagged)
                items.append(item)
            out["items"] = items
        return out

    @staticmethod
    def _unit_items(universe: Any, runs: list[RunCounts], only_flagged: bool) -> list[dict[str, Any]]:
        """Per unit, as :meth:`unit_dict` of its :class:`Figures` with the unit's registry fields, by SN (a rate
        ``round(float(Fraction(ok, service)), 6)`` is ``round(ok / service, 6)``: both divide exactly rounded)."""
        units = universe.units
        items = []
        for rc in runs:
            s, i, o, d = rc.counts
            flags = rc.flags
            for x in compress(range(rc.b - rc.a), flags) if only_flagged else range(rc.b - rc.a):
                u = units[rc.a + x]
                sv, ok_dev, ok_net = s[x], i[x], o[x]
                items.append({"sn": u.sn, "institution": u.institution, "county": u.county, "region": u.region,
                              "service_slots": sv, "intact_slots": ok_dev, "network_ok_slots": ok_net,
                              "no_data_slots": d[x], "device_rate": round(ok_dev / sv, 6) if sv else None,
                              "network_rate": round(ok_net / sv, 6) if sv else None, "flagged": flags[x]})
        items.sort(key=lambda item: item["sn"])
        return items

    def _pending_in(self, start: int, end: int) -> bool:
        if any(start <= h < end and sns for h, sns in self._marked()):
            return True
        if (self._sla_due or self._outage_due) and any(start <= h < end for h in self._due_hours()):
            return True
        # an API-only process: the primary's marks too, as it published them (about a second old at most; sync()
        # reads them in API-only processes only)
        return any(a < end and start < b for a, b in self._primary_pending)

    def unsettled(self, sns: Iterable[str], start: int, end: int, live: dict[str, dict[str, Any]], settle_s: float,
                  wall_now: float | None = None) -> dict[str, str]:
        """The units whose counted figures over ``[start, end)`` may still change as data arrives, each with why.

        A closed hour is counted whether or not the unit's data for it has arrived (no data counts as not
        intact), so a figure on the recent past can be an artefact of delivery: a unit registered as in service
        from past days before its history is published, a terminal delivering its backlog after a link cut. A
        rule that acts on a figure (an alert, a webhook) waits while a unit is here:

        * ``recount pending``: some of its hours in the period have data waiting to be counted;
        * ``never reported``: nothing has arrived from it at all (its history may still come);
        * ``still delivering``: its newest sample does not reach ``end`` and something arrived from it within
          the last ``settle_s`` seconds (wall clock, as arrivals are timed): the rest is probably on its way.

        A unit silent for ``settle_s`` or more is settled: what it still holds may never come, and its figure
        stands as counted (the ``offline`` rule has already said it is silent)."""
        wall = time.time() if wall_now is None else wall_now
        primary_busy = any(a < end and start < b for a, b in self._primary_pending)
        pending = {sn for h, got in self._marked() if start <= h < end for sn in got}
        out: dict[str, str] = {}
        for sn in sns:
            u = live.get(sn)
            latest = (u or {}).get("latest") or {}
            if primary_busy or sn in pending:
                out[sn] = "recount pending"
            elif u is None or not latest:
                out[sn] = "never reported"
            elif int(latest.get("ts", 0)) + int(latest.get("interval", 0)) < end and \
                    wall - float(u.get("last_seen") or 0) < settle_s:
                out[sn] = "still delivering"
        return out

    def pending_ranges(self) -> list[list[int]]:
        """The hours marked for recount, or whose service levels or outages are due, merged into ``[start, end)``
        ranges (published for API-only processes)."""
        out: list[list[int]] = []
        for h in sorted({h for h, sns in self._marked() if sns} | self._due_hours()):
            if out and out[-1][1] == h:
                out[-1][1] = h + HOUR_S
            else:
                out.append([h, h + HOUR_S])
        return out

    @staticmethod
    def unit_dict(f: Figures) -> dict[str, Any]:
        return {"service_slots": f.service_slots, "intact_slots": f.intact_slots,
                "network_ok_slots": f.network_ok_slots, "no_data_slots": f.no_data_slots,
                "device_rate": rate(f.device_rate), "network_rate": rate(f.network_rate), "flagged": f.flagged}

    def group_dict(self, f: Figures, tier: bool = False) -> dict[str, Any]:
        d = {"service_slots": f.service_slots, "intact_slots": f.intact_slots,
             "network_ok_slots": f.network_ok_slots, "no_data_slots": f.no_data_slots,
             "device_rate": rate(f.device_rate), "network_rate": rate(f.network_rate),
             "units": f.units, "flagged_units": f.flagged_units}
        if tier:
            t = contract_tier(f.device_rate, f.network_rate, self.tiers, self.last_tier)
            d["tier"] = None if t is None else t.tier
            d["final_payment"] = None if t is None else float(t.final_payment)
        return d

    # evidence ----------------------------------------------------------------------------------------
    async def unit_count(self, sn: str, start: int, end: int) -> Any:
        """Direct count of one unit over ``[start, end)`` from the raw samples (drill-down, reasons)."""
        index = await self.registry.index()
        info = index.get(sn)
        if info is None:
            raise FieldError("sn", f"unit {sn!r} is not registered", 404)
        hist = (await self.storage.status_histories([sn])).get(sn, [])
        rows = [smp for _sn, smp in self._judge(await self.storage.sample_facts([sn], start, end))]
        return self.count(sn, info.hours, hist, rows, start, end), info, hist

    @staticmethod
    def _slot_item(s: Any, first_ts: int | None, outage: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """One slot of the drill-down as the API shows it."""
        ts = int(s.start.timestamp())
        dev, net = split_reasons(s.reason) if s.reason else ((), ())
        excluded = s.excluded
        if excluded and excluded != "outside_service_hours" and first_ts is not None and ts < first_ts:
            excluded = "not_registered"
        item: dict[str, Any] = {"start": s.start.isoformat(), "counted": s.counted, "device": s.device,
                                "network": s.network}
        if excluded:
            item["excluded"] = excluded
        if dev and s.device == "not_intact":
            item["device_reasons"] = dev
        if net and s.network == "not_ok":
            item["network_reasons"] = net
            if "link_down" in net and ts in outage:
                item["likely_carrier_outage"] = True
                if "cell" in outage[ts]:
                    item["carrier_outage_cell"] = outage[ts]["cell"]
                    item["carrier_outage_cell_units"] = outage[ts]["cell_units"]
        return item

    async def slots(self, sn: str, day: date) -> dict[str, Any]:
        """Minute-by-minute drill-down of one unit's local day, with the stored hour roll-ups beside it.

        The reference form (a dict, one :class:`Slot` per minute); the API serves :meth:`slots_json`, which
        gives the same JSON built straight from the counter's codes."""
        start, end = midnight(day, self.tz), midnight(day + timedelta(days=1), self.tz)
        uc, info, hist = await self.unit_count(sn, start, end)
        outage = await self.outage_marks(sn, info.county, start, end)
        first_ts = hist[0]["from_ts"] if hist else None
        slots = [self._slot_item(s, first_ts, outage) for s in uc.slots()]
        return {**await self._slots_head(sn, day, start, uc, info), "slots": slots}

    async def slots_json(self, sn: str, day: date) -> bytes:
        """:meth:`slots` as JSON bytes, built from the counter's per-slot codes (a template per code; only slots
        with reasons or excluded by the unit's status go through :meth:`_slot_item`), and kept for a day that is
        over until the roll-ups (a recount, an outage pass), the registry or the unit's raw samples of that day
        (a late sample, the retention purge) change."""
        start, end = midnight(day, self.tz), midnight(day + timedelta(days=1), self.tz)
        now = int(self.clock.now())
        key: tuple[Any, ...] | None = None
        if end <= now:
            v = await self.storage.versions()
            n = await self.storage.count_samples_touching(sn, start, end)
            raw_from = now - self.settings.retention_days * 86400
            key = (sn, day, v["registry_version"], v["rollup_version"], self._generation,
                   getattr(self.registry, "_generation", 0), n, start >= raw_from)
            hit = self._slots_cache.get(key)
            if hit is not None:
                self._slots_cache.move_to_end(key)
                return hit
        # a day that is over: its stored codes, status history and roll-up in one statement (issue 15)
        got = await self.storage.unit_day(sn, day.toordinal()) if key is not None else None
        info = (await self.registry.index()).get(sn) if got is not None else None
        stored = self._stored_count(sn, info, start, end, n[1], got[0], got[1]) if got is not None else None
        uc, info, hist = stored or await self.unit_count(sn, start, end)
        # correlated outages only explain link-down slots: no such slot, no need to look them up
        down = any("link_down" in r for r in uc.reasons.values())
        outage = await self.outage_marks(sn, info.county, start, end) if down else {}
        first_ts = hist[0]["from_ts"] if hist else None
        codes, reasons = uc.codes, uc.reasons
        starts = self._slot_starts(uc.first_slot * uc.slot_s, len(codes), uc.slot_s)
        enc = _ENCODER.encode
        parts = list(map(bytes.__add__, starts, map(_SLOT_TAIL.__getitem__, codes)))
        special = set(reasons)
        excluded = codes.translate(_T_STATUS_EXCLUDED)
        if excluded.count(1):
            special.update(i for i, x in enumerate(excluded) if x)
        for i in special:  # slots with reasons, or excluded by the unit's status: the full form
            parts[i] = enc(self._slot_item(uc.slot(i), first_ts, outage))
        head = await self._slots_head(sn, day, start, uc, info, got[2] if got is not None else False)
        body = enc({**head, "slots": msgspec.Raw(b"[" + b",".join(parts) + b"]")})
        if key is not None:
            self._slots_cache[key] = body
            while len(self._slots_cache) > self._slots_cache_size:
                self._slots_cache.popitem(last=False)
        return body

    def _stored_count(self, sn: str, info: Any, start: int, end: int, dated: int,
                      rows: list[tuple[int, bytes, str | None, int]], hist: list[Any]) -> tuple[Any, Any, Any] | None:
        """A day's count rebuilt from the per-slot codes the roll-up pass stored with its hours (``rows``, as
        ``storage.unit_day`` reads them with the unit's status history ``hist``), or None when they
        may not hold: an hour missing (not materialised, or older than the raw samples), a sample the stored hours
        did not see (late data not yet recounted: ``dated``, the unit's samples now dated in the day, differs from
        the sum of the hours' counts, which can only grow), or service hours or status changed since (their bits in
        the codes differ). Then the caller counts the raw samples, as before."""
        if info is None or start % SLOT_S or (end - start) % HOUR_S:
            return None
        nh = (end - start) // HOUR_S
        if [r[0] for r in rows] != list(range(nh)):
            return None
        if sum(r[3] for r in rows) != dated:
            return None
        per_hour = HOUR_S // SLOT_S
        codes = b"".join(r[1] for r in rows)
        if len(codes) != nh * per_hour:
            return None
        reasons: dict[int, str] = {}
        for i, r in enumerate(rows):
            if r[2]:
                reasons.update((i * per_hour + int(k), v) for k, v in json.loads(r[2]).items())
        uc = unit_count_from_codes(codes, start // SLOT_S, reasons=reasons, hours=info.hours,
                                   status_history=[(h["from_ts"], h["status"]) for h in hist],
                                   initial_status="spare" if hist else "in_service", tz=self.tz,
                                   threshold=self.threshold, unit=sn)
        if uc is None:
            return None
        self.drill_from_stored += 1
        return uc, info, hist

    def _slot_starts(self, first_s: int, n: int, slot_s: int) -> list[bytes]:
        """``b'{"start":"<ISO time>",'`` of each slot (the same for every unit: the last few days' are kept)."""
        key = (first_s, n, slot_s)
        got = self._starts_cache.get(key)
        if got is None:
            got = self._starts_cache[key] = self._make_slot_starts(first_s, n, slot_s)
            while len(self._starts_cache) > 16:
                self._starts_cache.pop(next(iter(self._starts_cache)))
        return got

    def _make_slot_starts(self, first_s: int, n: int, slot_s: int) -> list[bytes]:
        """By string for a whole-minute day with one UTC offset."""
        first = datetime.fromtimestamp(first_s, self.tz)
        last = datetime.fromtimestamp(first_s + (n - 1) * slot_s, self.tz) if n else first
        if slot_s == 60 and n == 1440 and first.utcoffset() == last.utcoffset() and first.time() == dt_time(0):
            text = first.isoformat()
            pre, off = ('{"start":"' + text[:10]).encode(), (text[19:] + '",').encode()
            return [pre + hm + off for hm in _HHMM]
        return [b'{"start":"' + datetime.fromtimestamp(first_s + i * slot_s, self.tz).isoformat().encode() + b'",'
                for i in range(n)]

    async def _slots_head(self, sn: str, day: date, start: int, uc: Any, info: Any,
                          rolled: tuple[int, int, int, int, bytes] | None | bool = False) -> dict[str, Any]:
        """``rolled``: the day's roll-up if read already (``storage.unit_day``; None: there is none)."""
        raw_from = int(self.clock.now()) - self.settings.retention_days * 86400
        if rolled is False:
            stored = await self.storage.rollup_days(sn, day.toordinal(), day.toordinal())
            rolled = stored[0][1:] if stored else None  # type: ignore[assignment]
        hours = []
        if rolled:
            blob = rolled[4]  # type: ignore[index]
            for i in range(len(blob) // 4):
                hours.append({"start": datetime.fromtimestamp(start + i * HOUR_S, self.tz).isoformat(),
                              **dict(zip(("service_slots", "intact_slots", "network_ok_slots", "no_data_slots"),
                                         sum_hours(blob, i, i + 1), strict=True))})
        return {
            "sn": sn, "date": day.isoformat(), "institution": info.institution, "county": info.county,
            "raw_samples_complete": start >= raw_from,
            "figures": self.unit_dict(uc.figures),
            "stored_hours": hours,
        }

    def _evidence_span(self, start: int, end: int) -> tuple[int, int]:
        """The part of ``[start, end)`` whose minutes can be explained: raw samples and per-slot codes still kept
        (they are purged together), and hours the roll-up pass has counted."""
        raw_from = max(start, hour_start(int(self.clock.now()) - self.settings.retention_days * 86400, self.tz) + HOUR_S)
        return raw_from, min(end, self.rolled_to or end)

    def _reasons_answer(self, raw_from: int, end: int, out: Counter[str]) -> dict[str, Any]:
        return {"evidence_from": datetime.fromtimestamp(raw_from, self.tz).isoformat() if raw_from < end else None,
                "minutes": dict(out.most_common())}

    async def reasons(self, sn: str, start: int, end: int) -> dict[str, Any]:
        """Why a unit lost slots over a period: minutes by reason, counted again from the raw samples still kept
        (for hours without stored per-slot codes; :meth:`reasons_many` reads the stored codes)."""
        await self.sync()
        raw_from, end = self._evidence_span(start, end)
        out: Counter[str] = Counter()
        if raw_from < end:
            uc, info, _ = await self.unit_count(sn, raw_from, end)
            out = minutes_lost(uc, await self.outage_marks(sn, info.county, raw_from, end))
        return self._reasons_answer(raw_from, end, out)

    async def reasons_many(self, sns: list[str], start: int, end: int,
                           counts: dict[str, tuple[int, int, int, int]] | None = None) -> dict[str, dict[str, Any]]:
        """:meth:`reasons` for several units, from the per-slot codes the roll-up pass stored with the hours the
        figures sum (one read for all of them), so the minutes by reason explain the figures beside them, late
        samples not yet recounted included. An hour the pass stored no codes for counted nothing (before the unit
        was registered, say). ``counts``: each unit's figures over ``[start, end)`` (service, intact, network ok,
        no data); when the codes cover that whole period they must add up to them. A unit whose codes do not hold
        (an hour counted before codes were kept) is counted again from its raw samples, as before."""
        await self.sync()
        raw_from, end = self._evidence_span(start, end)  # (from ``start`` when every counted hour is still kept)
        if raw_from >= end or not sns:
            return {sn: self._reasons_answer(raw_from, end, Counter()) for sn in sns}
        hours = [hour_key(t, self.tz) for t in range(raw_from, end, HOUR_S)]
        per_hour = HOUR_S // SLOT_S
        got: dict[str, dict[tuple[int, int], tuple[bytes, str | None]]] = defaultdict(dict)
        if is_whole_hour(raw_from, self.tz) and not (end - raw_from) % HOUR_S:  # (what the API and reports ask)
            for sn, day, hour, codes, why in await self.storage.slot_hours_of(list(sns), sorted({d for d, _ in hours})):
                got[sn][(day, hour)] = (codes, why)
        index = await self.registry.index()
        out: dict[str, dict[str, Any]] = {}
        nothing = (bytes(per_hour), None)  # an hour without codes: no slot counted (code 0: outside service)
        for sn in sns:
            mine = got.get(sn, {})
            strips = [mine.get(h, nothing) for h in hours]
            codes = b"".join(x[0] for x in strips)
            want = (counts or {}).get(sn) if raw_from == start else None
            if len(codes) != len(hours) * per_hour or (
                    counts_of_codes(codes) != want if want is not None else len(mine) < len(hours)):
                out[sn] = await self.reasons(sn, start, end)
                continue
            reasons: dict[int, str] = {}
            for i, (_codes, why) in enumerate(strips):
                if why:
                    reasons.update((i * per_hour + int(k), v) for k, v in json.loads(why).items())
            down = any("link_down" in r for r in reasons.values())
            info = index.get(sn)
            outage = await self.outage_marks(sn, info.county if info else "", raw_from, end) if down else {}
            out[sn] = self._reasons_answer(raw_from, end,
                                           minutes_lost(_StoredCodes(codes, reasons, raw_from // SLOT_S), outage))
        return out

    async def flagged(self, start: int, end: int, *, county: str | None = None, limit: int = 100, offset: int = 0,
                      with_reasons: bool = True, within: frozenset[str] | None = None) -> dict[str, Any]:
        """The flagged units of ``[start, end)``, worst first: ``total`` and the items ``[offset, offset + limit)``,
        each with the rates below the threshold and (``with_reasons``) its minutes lost by reason."""
        fig = await self.figures(start, end, "unit", county=county, within=within, only_flagged=True)
        flagged = list(fig["items"])
        flagged.sort(key=lambda u: (min(u["device_rate"] if u["device_rate"] is not None else 1,
                                        u["network_rate"] if u["network_rate"] is not None else 1), u["sn"]))
        items = []
        page = flagged[offset:offset + limit]
        why_of = await self.reasons_many(
            [u["sn"] for u in page], start, end,
            {u["sn"]: (u["service_slots"], u["intact_slots"], u["network_ok_slots"], u["no_data_slots"])
             for u in page}) if with_reasons else {}
        for u in page:
            why: list[str] = []
            thr = self.threshold
            if u["device_rate"] is not None and Fraction(u["intact_slots"], u["service_slots"]) < thr:
                why.append("device_rate")
            if u["network_rate"] is not None and Fraction(u["network_ok_slots"], u["service_slots"]) < thr:
                why.append("network_rate")
            item = {**u, "below": why}
            if with_reasons:
                item["reasons"] = why_of[u["sn"]]
            items.append(item)
        return {"from": fig["from"], "to": fig["to"], "counted_to": fig["counted_to"], "total": len(flagged),
                "items": items}
