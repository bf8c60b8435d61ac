"""Alerts: rules evaluated in a background task, stored, acknowledged, optionally POSTed to a webhook.

Rules (each alert has a key, so a standing condition is one alert, refreshed, and closes when it clears):

* ``flagged``      a unit below the threshold for the month so far (closed hours), from the roll-ups, once its
                   data for the period has settled (``Availability.unsettled``) and it has stood ``settle_s``;
* ``offline``      a unit in service offline for more than ``offline_minutes`` of its *service hours*;
* ``fault``        a peripheral check in state fault in the unit's newest sample (one alert per check);
* ``storage``      a file system above ``storage_pct`` % in the newest sample;
* ``sim_changed``  an event ``sim_changed``, or an inventory whose ICCID differs from the one known before
                   (stays open until closed by hand), from the reports any process stored (simwatch.py);
* ``carrier_outage`` several units of one county, or of one cell site (TAC + cell id), with the link down in the
                   same minutes (from the samples, see availability/service.py), or units of one county losing
                   their broker sessions within five minutes of each other;
* ``sim_data``     a unit's SIM data use this month at 80 % of the plan, and another alert at 100 % (from the
                   counters the units report, see analytics/datause.py); they stand until the month ends.
* ``pressure``     a unit's CPU, memory or storage at or above ``alerts.pressure`` shares in every sample of the
                   last ``window_minutes`` (one alert per resource; closes when a sample falls below);
* ``server`` and ``certificate``: the server's own inspection (server/inspection/service.py raises them).

The webhook sender is its own task with retries and back-off; ingest never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import date, datetime
from typing import Any

import httpx

from wire.times import iso

from ..analytics.datause import ALERT_SHARES
from ..availability.rollups import midnight
from ..settings import Settings
from ..storage import simwatch as simwatch_store
from ..tasks import cancel
from .lifecycle import raise_alert
from .simwatch import OVERLAP_S, sim_changes

log = logging.getLogger(__name__)

KINDS = ("flagged", "offline", "fault", "storage", "sim_changed", "carrier_outage", "sim_data", "security", "pressure",
         "server", "certificate",
         "address", "link_change")  # raised by server/access: a reported address outside its allocation, a link change
RESOURCES = ("cpu", "memory", "storage")
LIVE_OVERLAP_S = 60.0  # the units' live state read again from this long before the last read (:meth:`Alerts._live_index`)
LIVE_WHOLE_S = 600.0  # ... and every unit's this often


def pressure(body: dict[str, Any]) -> dict[str, float | None]:
    """A sample's CPU, memory and storage use in % (None where the sample does not say). Storage: the fullest
    file system."""
    cpu = body.get("cpu")
    used, avail = body.get("mem_used_mb"), body.get("mem_avail_mb")
    mem = used * 100.0 / (used + avail) if isinstance(used, int) and isinstance(avail, int) and used + avail else None
    fills = [fs["used_mb"] * 100.0 / fs["size_mb"] for fs in body.get("fs") or []
             if isinstance(fs, dict) and fs.get("size_mb") and isinstance(fs.get("used_mb"), int)]
    return {"cpu": float(cpu) if isinstance(cpu, int | float) else None, "memory": mem,
            "storage": max(fills) if fills else None}


class Alerts:
    def __init__(self, settings: Settings, storage: Any, registry: Any, availability: Any, clock: Any) -> None:
        self.settings = settings
        self.storage = storage
        self.registry = registry
        self.availability = availability
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._webhook_wake = asyncio.Event()
        self._settled_since: dict[str, float] = {}  # flagged alert key -> when (monotonic) first seen settled
        self._live: dict[str, dict[str, Any]] = {}  # every unit's live state as last read (:meth:`_live_index`)
        self._live_read: float | None = None  # wall clock when the last read began
        self._live_whole_at = float("-inf")  # monotonic: the last read of every unit
        self._pressure: dict[str, tuple[Any, list[str]]] = {}  # ... its newest sample's resources above the line

    async def start(self) -> None:
        if self.settings.alerts.enabled:
            self._tasks.append(asyncio.create_task(self._loop(), name="alerts"))
            if self.settings.alerts.webhook_url:
                self._tasks.append(asyncio.create_task(self._webhooks(), name="alerts-webhook"))

    async def stop(self) -> None:
        await cancel(self._tasks)

    async def _loop(self) -> None:
        while True:
            try:
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(self.settings.alerts.interval_s / (getattr(self.clock, "speed", 1.0) or 1.0))

    async def _raise(self, key: str, kind: str, sn: str | None, county: str | None, ts: int, message: str,
                     data: dict[str, Any]) -> bool:
        new = await raise_alert(self.storage, key, kind, sn, county, ts, message, data,
                                webhook=bool(self.settings.alerts.webhook_url))
        if new:
            self._webhook_wake.set()
        return new

    async def _sim_changes(self, index: dict[str, Any]) -> None:
        """Raise the SIM changes in the identity reports stored since the last pass, by whichever process
        (server/alerts/simwatch.py); the alerts and the rule's memory commit together, so each is raised once."""
        read_to = await simwatch_store.read_to(self.storage)
        reports = await simwatch_store.identity_reports(
            self.storage, (time.time() if read_to is None else read_to) - OVERLAP_S)
        if not reports:
            return
        changes, taken = sim_changes(reports, await simwatch_store.known(self.storage, (r.sn for r in reports)))
        opened = False
        async with self.storage.write():
            for c in changes:
                info = index.get(c.sn)
                opened |= await self._raise(f"sim:{c.sn}:{c.new}", "sim_changed", c.sn, info.county if info else None,
                                            c.ts, f"{c.sn}: SIM changed (ICCID {_tail(c.old)} -> {_tail(c.new)})",
                                            {"old_iccid": c.old, "new_iccid": c.new})
            await simwatch_store.remember(self.storage, taken, max([r.received_at for r in reports]
                                                                   + ([read_to] if read_to is not None else [])))
        if opened:
            self._webhook_wake.set()  # (again: now that they are committed)

    async def evaluate(self) -> dict[str, int]:
        """Run every rule once; returns the number of standing alerts per kind."""
        s = self.settings.alerts
        now = int(self.clock.now())
        tz = self.availability.tz
        index = await self.registry.index()
        live = await self._live_index()
        keep: dict[str, set[str]] = defaultdict(set)

        # flagged for the month so far
        today = datetime.fromtimestamp(now, tz).date()
        month_start = midnight(date(today.year, today.month, 1), tz)
        if self.availability.rolled_to and self.availability.rolled_to > month_start:
            counted_to = self.availability.rolled_to
            # the flagged units' items only: the fleet's 200,000 others cost a dict each and a sort (issue 15)
            fig = await self.availability.figures(month_start, counted_to, "unit", only_flagged=True)
            flagged = [u for u in fig["items"] if u["flagged"]]
            waiting = self.availability.unsettled([u["sn"] for u in flagged], month_start, counted_to, live, s.settle_s)
            standing = await self._open_keys("flagged")
            mono = time.monotonic()
            seen_now: dict[str, float] = {}
            for u in flagged:
                key = f"flagged:{u['sn']}:{today:%Y-%m}"
                if u["sn"] in waiting:  # its data for the period is not complete: no alert yet (an open one stays)
                    if key in standing:
                        keep["flagged"].add(key)
                    continue
                seen_now[key] = self._settled_since.get(key, mono)
                if key not in standing and mono - seen_now[key] < s.settle_s:
                    continue  # settled and below, but not for long enough yet
                keep["flagged"].add(key)
                await self._raise(key, "flagged", u["sn"], u["county"], now,
                                  f"{u['sn']} below {float(self.availability.threshold) * 100:.0f} % this month: device "
                                  f"{_pct(u['device_rate'])}, network {_pct(u['network_rate'])}", u)
            self._settled_since = seen_now

        keepalive = self.settings.ingest.terminal_keepalive_s
        down_recently: dict[str, list[str]] = defaultdict(list)
        for sn, info in index.items():
            if info.status != "in_service":
                continue
            u = live.get(sn)
            if u is None:
                continue
            online = bool(u["online"]) or now - u["last_seen"] <= 3 * keepalive
            if not online:
                off_s = sum(b - a for a, b in info.hours.window_seconds(int(u["last_seen"]), now))
                if off_s > s.offline_minutes * 60:
                    key = f"offline:{sn}:{int(u['last_seen'])}"
                    keep["offline"].add(key)
                    await self._raise(key, "offline", sn, info.county, now,
                                      f"{sn} offline for {off_s // 60} min of service hours",
                                      {"last_seen": u["last_seen"], "service_minutes_offline": off_s // 60})
            state_ts = u.get("state_ts")
            if not u["online"] and state_ts and now - state_ts <= 300 and info.county:
                down_recently[info.county].append(sn)
            latest = u.get("latest") or {}
            for check, val in (latest.get("checks") or {}).items():
                if isinstance(val, list) and val and val[0] == 1:
                    key = f"fault:{sn}:{check}"
                    keep["fault"].add(key)
                    await self._raise(key, "fault", sn, info.county, now, f"{sn}: {check} fault"
                                      + (f" ({val[1]})" if len(val) > 1 and val[1] else ""),
                                      {"check": check, "reason": val[1] if len(val) > 1 else ""})
            for fs in latest.get("fs") or []:
                size, used = fs.get("size_mb") or 0, fs.get("used_mb") or 0
                if size and used * 100 > s.storage_pct * size:
                    key = f"storage:{sn}:{fs.get('mount')}"
                    keep["storage"].add(key)
                    await self._raise(key, "storage", sn, info.county, now,
                                      f"{sn}: {fs.get('mount')} {used * 100 / size:.0f} % full", dict(fs))

        # CPU, memory and storage pressure sustained over the window
        for sn, resource, data in await self.pressure_runs(index, live, now):
            info = index[sn]
            key = f"pressure:{sn}:{resource}"
            keep["pressure"].add(key)
            await self._raise(key, "pressure", sn, info.county, now,
                              f"{sn}: {resource} at or above {data['threshold_pct']:.0f} % for "
                              f"{data['window_minutes']} min (mean {data['mean_pct']:.0f} %, peak {data['peak_pct']:.0f} %)",
                              data)

        # SIM changes (kept open until acknowledged), from what any process stored
        await self._sim_changes(index)

        # correlated outages: from the samples (after the fact) and from broker sessions (live)
        for run in await self.outage_runs(now - 6 * 3600, now):
            key = f"outage:{run['county']}:{run['start']}"
            keep["carrier_outage"].add(key)
            await self._raise(key, "carrier_outage", None, run["county"], run["end"],
                              f"likely carrier outage in {run['county']}: {run['max_units']} units lost the link "
                              f"together for {run['minutes']} min", run)
        for run in await cell_outage_runs(self.storage, now - 6 * 3600, now):
            key = f"outage-cell:{run['cell']}:{run['start']}"
            keep["carrier_outage"].add(key)
            await self._raise(key, "carrier_outage", None, run["county"], run["end"],
                              f"likely carrier outage at cell site {run['cell']} (TAC/cell, {run['county'] or '?'}): "
                              f"{run['max_units']} units lost the link together for {run['minutes']} min", run)

        # SIM data use this month against the plan
        datause = getattr(self.availability, "datause", None)
        if datause is not None:
            use = await datause.reaching(index, now, min(ALERT_SHARES))
            for u in use["items"]:
                for pct in ALERT_SHARES:
                    if u["used_bytes"] * 100 >= pct * datause.plan_bytes:
                        key = f"sim_data:{u['sn']}:{use['month']}:{pct}"
                        keep["sim_data"].add(key)
                        await self._raise(key, "sim_data", u["sn"], u["county"], now,
                                          f"{u['sn']}: SIM data {u['used_mb']:.1f} MB this month, {pct} % of the "
                                          f"{use['plan_mb']} MB plan reached (projected {u['projected_mb']} MB)",
                                          {**u, "month": use["month"], "threshold_pct": pct})
        for county, sns in down_recently.items():
            if len(sns) >= s.outage_min_units:
                key = f"outage-live:{county}:{now // 900}"
                keep["carrier_outage"].add(key)
                await self._raise(key, "carrier_outage", None, county, now,
                                  f"likely carrier outage in {county}: {len(sns)} units disconnected within 5 min",
                                  {"county": county, "sns": sorted(sns)})
        for kind in ("flagged", "offline", "fault", "storage", "carrier_outage", "sim_data", "pressure"):
            await self.storage.close_alerts(kind, keep[kind], now)
        return {k: len(v) for k, v in keep.items()}

    async def _live_index(self) -> dict[str, dict[str, Any]]:
        """Every unit's live state by SN, as :meth:`RegistryStore.live_index` reads it, but each pass reads only the
        units whose ``last_seen`` moved since the last read began (less ``LIVE_OVERLAP_S``: a commit that took
        long, another host's clock a little behind), and every unit each ``LIVE_WHOLE_S``, which also forgets units
        gone and bounds what a host's clock further behind could hide. In a minute a tenth of a fleet sends
        something (a batch every 10 minutes); reading and decoding all 210,000 units' rows every minute was half
        of the pass (issue 15)."""
        wall, mono = time.time(), time.monotonic()
        if self._live_read is None or mono - self._live_whole_at >= LIVE_WHOLE_S:
            self._live = {u["sn"]: u for u in await self.storage.live_index(identity=False)}
            self._live_whole_at = mono
        else:  # (changed in place: no pass walks it across an await, see pressure_runs)
            for u in await self.storage.live_index(identity=False, since=self._live_read - LIVE_OVERLAP_S):
                self._live[u["sn"]] = u
        self._live_read = wall
        return self._live

    async def pressure_runs(self, index: dict[str, Any], live: dict[str, dict[str, Any]], now: int
                            ) -> list[tuple[str, str, dict[str, Any]]]:
        """(sn, resource, figures) for every unit in service whose every sample of the last window is at or above
        a pressure threshold, the samples covering the window. Only units whose newest sample is above are read
        (a few, not the fleet)."""
        p = self.settings.alerts.pressure
        limits = {"cpu": p.cpu_pct, "memory": p.memory_pct, "storage": p.storage_pct}
        window = p.window_minutes * 60
        out: list[tuple[str, str, dict[str, Any]]] = []
        before, memo = self._pressure, {}
        candidates: list[tuple[str, list[str]]] = []
        for sn, u in live.items():  # (no await in this walk: live may change meanwhile)
            info = index.get(sn)
            latest = u.get("latest") or {}
            if info is None or info.status != "in_service" or not latest:
                continue
            kept = before.get(sn)  # the same newest sample as the last pass (the unit sent nothing since)
            if kept is not None and kept[0] is latest:
                hot = kept[1]
            else:
                use = pressure(latest)
                hot = [r for r in RESOURCES if limits[r] and use[r] is not None and use[r] >= limits[r]]
            memo[sn] = (latest, hot)
            if hot and int(latest.get("ts") or 0) >= now - window - 3600:
                candidates.append((sn, hot))
        self._pressure = memo
        for sn, hot in candidates:
            bodies = await self.storage.unit_samples_window(sn, now - window - 3600, now + 1)
            for r in hot:
                # the newest run of samples at or above the line, going back from the newest sample
                run: list[tuple[int, float]] = []
                for b in reversed(bodies):
                    v = pressure(b)[r]
                    if v is None or v < limits[r]:
                        break
                    run.append((int(b["ts"]), v))
                if not run:
                    continue
                newest, oldest = run[0][0], run[-1][0]
                if newest >= now - window and oldest <= now - window:
                    vals = [v for ts, v in run if ts >= now - window]
                    out.append((sn, r, {"resource": r, "threshold_pct": limits[r], "window_minutes": p.window_minutes,
                                        "mean_pct": round(sum(vals) / len(vals), 1), "peak_pct": round(max(vals), 1),
                                        "since": iso(oldest, self.settings.timezone), "samples": len(vals)}))
        return out

    async def _open_keys(self, kind: str) -> set[str]:
        _total, items = await self.storage.list_alerts(True, kind, None, 100_000, 0)
        return {a["key"] for a in items}

    async def outage_runs(self, start: int, end: int, county: str | None = None) -> list[dict[str, Any]]:
        return await outage_runs(self.storage, start, end, county)

    async def _webhooks(self) -> None:
        s = self.settings.alerts
        async with httpx.AsyncClient(timeout=s.webhook_timeout_s) as client:
            while True:
                self._webhook_wake.clear()  # before fetching: an alert raised meanwhile wakes us again
                for alert in await self.storage.pending_webhooks():
                    payload = {k: alert[k] for k in ("id", "kind", "sn", "county", "opened_ts", "message", "data")}
                    attempts = alert["webhook_attempts"]
                    while True:
                        attempts += 1
                        try:
                            r = await client.post(s.webhook_url, json=payload)
                            if r.status_code < 300:
                                await self.storage.mark_webhook(alert["id"], "sent", attempts)
                                break
                            err = f"HTTP {r.status_code}"
                        except httpx.HTTPError as e:
                            err = type(e).__name__
                        if attempts > s.webhook_retries:
                            log.warning("webhook gave up on alert %s after %d attempts (%s)", alert["id"], attempts, err)
                            await self.storage.mark_webhook(alert["id"], "failed", attempts)
                            break
                        await asyncio.sleep(min(60.0, 0.5 * 2 ** attempts))
                try:
                    async with asyncio.timeout(30):  # not wait_for, which on 3.11 can swallow a cancel
                        await self._webhook_wake.wait()
                except TimeoutError:
                    pass


async def outage_runs(storage: Any, start: int, end: int, county: str | None = None) -> list[dict[str, Any]]:
    """Stored outage minutes (several units of one county with the link down) merged into runs per county."""
    runs: list[dict[str, Any]] = []
    for o in await storage.outages_between(start, end, county):
        last = runs[-1] if runs else None
        if last and last["county"] == o["county"] and last["end"] == o["minute"]:
            last["end"] = o["minute"] + 60
            last["minutes"] += 1
            last["max_units"] = max(last["max_units"], o["units"])
            last["sns"] = sorted(set(last["sns"]) | set(o["sns"]))
        else:
            runs.append({"county": o["county"], "start": o["minute"], "end": o["minute"] + 60, "minutes": 1,
                         "max_units": o["units"], "sns": list(o["sns"])})
    return runs


async def cell_outage_runs(storage: Any, start: int, end: int, county: str | None = None) -> list[dict[str, Any]]:
    """Stored cell-site outage minutes merged into runs per cell (``cell`` is ``"TAC/CELL"``)."""
    runs: list[dict[str, Any]] = []
    for o in await storage.cell_outages_between(start, end, county):
        cell = f"{o['tac']}/{o['cell']}"
        last = runs[-1] if runs else None
        if last and last["cell"] == cell and last["end"] == o["minute"]:
            last["end"] = o["minute"] + 60
            last["minutes"] += 1
            last["max_units"] = max(last["max_units"], o["units"])
            last["sns"] = sorted(set(last["sns"]) | set(o["sns"]))
        else:
            runs.append({"cell": cell, "tac": o["tac"], "cell_id": o["cell"], "county": o["county"],
                         "start": o["minute"], "end": o["minute"] + 60, "minutes": 1, "max_units": o["units"],
                         "sns": list(o["sns"])})
    return runs


def _pct(r: float | None) -> str:
    return "n/a" if r is None else f"{r * 100:.2f} %"


def _tail(iccid: str) -> str:
    return f"…{iccid[-6:]}" if iccid else "?"
