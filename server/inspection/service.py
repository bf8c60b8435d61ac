"""The server inspects itself (issue 17): what the e-invoice O&M checklist and the contract's inspections ask of it.

:func:`inspect` answers, from this process, at the time it is asked:

* **disks**: the file systems holding the database (SQLite) and the server's files, their fill; alert at
  ``inspection.disk_alert_pct`` (90 %, the e-invoice O&M's limit);
* **database**: its size, and for SQLite the fill of the file system it lives on;
* **backup**: the last successful ``posfleet server db backup`` (recorded in the database by that command) and its
  age; alert when older than ``inspection.backup_alert_h`` or when none was ever made;
* **broker**: whether ingest holds its session with the broker, and the broker's address and last error;
* **ingest**: lag (oldest message waiting for a commit), queue, rejects by reason, dead letters;
* **certificates**: the fleet CA's, the broker's (as the broker presents it in a TLS handshake), the server's MQTT
  certificate, and every terminal's from the CA's index (``pki.ca_dir``); alert ``inspection.cert_alert_days``
  (60) days before expiry;
* **renewals**: terminals' certificate renewal requests by state; alert when one has waited for the CA's
  signature (``posfleet ca sign-renewals``) longer than ``inspection.renewal_wait_days``;
* **reports**: scheduled reports that were missed (the server down over a period's end) and can no longer be made,
  their roll-ups purged (``availability.rollup_keep_days``): each listed, and a problem for ``UNMADE_SHOWN_DAYS``
  after it was noted (decision 035);
* **time**: whether the kernel's clock is synchronised (``adjtimex``: NTP/chrony/timesyncd keep it so) and its
  estimated maximum error.

:class:`Inspector` runs it every ``inspection.interval_s`` in the process that runs the alerts and raises (and
closes) alerts of kinds ``server`` and ``certificate`` through the alerts' store, so webhooks and the dashboard
see them like any other alert. The report (server/reports) reads :func:`inspect` for its self-inspection section.
Every time here is the real time of the machine, not the fleet's clock (which the simulator accelerates).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from wire.times import iso

from ..alerts.lifecycle import raise_alert
from ..settings import Settings, sqlite_path
from ..storage.selfcheck import database_bytes, last_backup
from ..tasks import cancel

log = logging.getLogger(__name__)

KINDS = ("server", "certificate")
DAY = 86400
TERMINALS_LISTED = 50  # the soonest-expiring terminal certificates named in the answer (all are counted)
UNMADE_SHOWN_DAYS = 92  # a scheduled report that could not be made is a problem this long (then listed only)


# the pieces -----------------------------------------------------------------------------------------------------
def disk_fill(paths: dict[str, Path]) -> list[dict[str, Any]]:
    """Fill of the file systems holding ``paths`` (what -> path), one entry per file system."""
    out: list[dict[str, Any]] = []
    seen: dict[int, dict[str, Any]] = {}
    for what, path in paths.items():
        p = path
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            dev = p.stat().st_dev
            usage = shutil.disk_usage(p)
        except OSError as err:
            out.append({"what": [what], "path": str(path), "error": err.strerror or str(err)})
            continue
        if dev in seen:
            seen[dev]["what"].append(what)
            continue
        # as df counts it: blocks reserved for root are not free for the server
        used_pct = round(100.0 * usage.used / (usage.used + usage.free), 1) if usage.used + usage.free else 0.0
        entry = {"what": [what], "path": str(p), "size_bytes": usage.total, "used_bytes": usage.used,
                 "free_bytes": usage.free, "used_pct": used_pct}
        seen[dev] = entry
        out.append(entry)
    return out


def _pem_certs(path: Path) -> list[Any]:
    from cryptography import x509

    return x509.load_pem_x509_certificates(path.read_bytes())


def _cert_entry(what: str, cert: Any, now: float) -> dict[str, Any]:
    not_after = cert.not_valid_after_utc.timestamp()
    return {"what": what, "subject": cert.subject.rfc4514_string(), "serial": format(cert.serial_number, "x"),
            "not_after_epoch": not_after, "days_left": round((not_after - now) / DAY, 1)}


def file_certificate(what: str, path: Path, now: float) -> dict[str, Any]:
    try:
        certs = _pem_certs(path)
    except (OSError, ValueError) as err:
        return {"what": what, "path": str(path), "error": getattr(err, "strerror", None) or str(err)}
    if not certs:
        return {"what": what, "path": str(path), "error": "no certificate in the file"}
    # a file with several (a CA bundle during a CA change): the one that expires first is the one to watch
    return {**_cert_entry(what, min(certs, key=lambda c: c.not_valid_after_utc), now), "path": str(path)}


def broker_certificate(settings: Settings, now: float, timeout: float = 5.0) -> dict[str, Any]:
    """The certificate the broker presents (a TLS handshake with the server's client certificate; no MQTT)."""
    from cryptography import x509

    m = settings.mqtt
    address = f"{m.host}:{m.port}"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we read its dates, we do not trust it with anything (an expired one too)
    try:
        ctx.load_cert_chain(settings.path(m.cert_file), settings.path(m.key_file))
        with socket.create_connection((m.host, m.port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=m.host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError) as err:
        return {"what": "broker", "address": address, "error": f"{type(err).__name__}: {err}"}
    if not der:
        return {"what": "broker", "address": address, "error": "the broker presented no certificate"}
    return {**_cert_entry("broker", x509.load_der_x509_certificate(der), now), "address": address}


def terminal_certificates(ca_dir: Path) -> dict[str, float]:
    """Every terminal's newest certificate in force, from the CA's index: SN -> not-after (epoch seconds)."""
    rows = json.loads((ca_dir / "index.json").read_text(encoding="utf-8"))
    out: dict[str, float] = {}
    from datetime import datetime

    for r in rows:
        if r.get("kind") != "terminal" or r.get("revoked"):
            continue
        t = datetime.fromisoformat(str(r["not_after"])).timestamp()
        if t > out.get(r["cn"], float("-inf")):
            out[r["cn"]] = t
    return out


# time sync -----------------------------------------------------------------------------------------------------
class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):  # struct timex, <sys/timex.h> (Linux)
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
                ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
                ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
                ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


TIME_ERROR = 5  # adjtimex: the clock is not synchronised
STA_UNSYNC = 0x0040


def time_sync() -> dict[str, Any]:
    """The kernel's own view (read only: ``modes`` 0): synchronised by an NTP client or not, and its maximum
    error. Containers share the host's clock: they show the host's state."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as err:
        return {"synchronised": None, "error": str(err), "source": "adjtimex"}
    if state < 0:
        return {"synchronised": None, "error": os.strerror(ctypes.get_errno()), "source": "adjtimex"}
    synced = state != TIME_ERROR and not tx.status & STA_UNSYNC
    return {"synchronised": synced, "max_error_ms": round(tx.maxerror / 1000, 1), "source": "adjtimex"}


# the whole -----------------------------------------------------------------------------------------------------
_broker_cache: dict[str, tuple[float, dict[str, Any]]] = {}


async def inspect(app: Any, now: float | None = None) -> dict[str, Any]:
    """The server's self-inspection now (see the module's text). Plain data: times as epoch seconds under keys
    ending ``_epoch`` (:func:`answer` turns them into the API's ISO times)."""
    settings: Settings = app.state.settings
    s = settings.inspection
    t = time.time() if now is None else now
    storage = app.state.storage
    problems: list[dict[str, str]] = []

    # disks and the database
    places: dict[str, Path] = {}
    db_file = sqlite_path(settings)
    if db_file is not None:
        places["database"] = db_file
    places["server"] = Path(settings.base_dir or ".")
    disks = disk_fill(places)
    for d in disks:
        d["alert"] = "used_pct" in d and d["used_pct"] >= s.disk_alert_pct
        if d["alert"]:
            problems.append({"check": "disk", "key": f"disk:{d['path']}",
                             "message": f"disk {d['path']} ({', '.join(d['what'])}) {d['used_pct']:.0f} % full "
                                        f"(alert at {s.disk_alert_pct:.0f} %)",
                             "vars": {"path": d["path"], "pct": d["used_pct"], "line": s.disk_alert_pct}})
        elif "error" in d:
            problems.append({"check": "disk", "key": f"disk:{d['path']}", "message": f"disk {d['path']}: {d['error']}",
                             "vars": {"path": d["path"], "error": d["error"]}})
    size = await database_bytes(storage)
    database: dict[str, Any] = {"backend": getattr(storage, "dialect", ""), "bytes": size}
    on = next((d for d in disks if "database" in d["what"]), None)
    database["fill_pct"] = on.get("used_pct") if on else None  # PostgreSQL: its disks are the database host's
    database["alert"] = bool(on and on.get("alert"))

    # backup
    rec = await last_backup(storage)
    backup: dict[str, Any] = {"last_epoch": None, "age_h": None, "file": None, "bytes": None,
                              "alert_after_h": s.backup_alert_h}
    if rec is not None:
        backup.update(last_epoch=rec["ts"], age_h=round((t - rec["ts"]) / 3600, 1), file=rec.get("file"),
                      bytes=rec.get("bytes"))
    backup["alert"] = bool(s.backup_alert_h) and (rec is None or t - rec["ts"] > s.backup_alert_h * 3600)
    if backup["alert"]:
        problems.append({"check": "backup", "key": "backup",
                         "message": "no database backup recorded (posfleet server db backup)" if rec is None else
                         f"the last database backup is {backup['age_h']:.0f} h old (alert after "
                         f"{s.backup_alert_h:.0f} h)", "vars": {"age_h": backup["age_h"], "line": s.backup_alert_h}})

    # broker and ingest
    from ..app import ingest_stats

    figures = await ingest_stats(app)
    ingest = app.state.ingest
    broker = {"connected": bool(figures.get("connected")), "address": ingest.broker_address(),
              "error": getattr(ingest, "broker_error", "") or ""}
    if settings.ingest_enabled and not broker["connected"]:
        problems.append({"check": "broker", "key": "broker",
                         "message": f"ingest is not connected to the broker at {broker['address']}"
                                    + (f": {broker['error']}" if broker["error"] else ""),
                         "vars": {"address": broker["address"], "error": broker["error"]}})
    ingest_part = {"lag_s": figures.get("oldest_queued_s", 0.0), "queued": figures.get("queued", 0),
                   "messages": figures.get("messages", 0), "samples_stored": figures.get("samples_stored", 0),
                   "rejected_messages": figures.get("rejected_messages", {}),
                   "rejected_items": figures.get("rejected_items", {}), "dead_letters": figures.get("dead_letters", 0),
                   "storage_errors": figures.get("storage_errors", 0)}

    # certificates
    certs = [file_certificate("ca", settings.path(settings.mqtt.ca_file), t),
             file_certificate("server", settings.path(settings.mqtt.cert_file), t)]
    if settings.ingest_enabled:
        key = f"{settings.mqtt.host}:{settings.mqtt.port}"
        cached = _broker_cache.get(key)
        if cached is None or time.monotonic() - cached[0] > min(s.interval_s, 600.0):
            cached = (time.monotonic(), await asyncio.to_thread(broker_certificate, settings, t))
            _broker_cache[key] = cached
        b = dict(cached[1])
        if "not_after_epoch" in b:
            b["days_left"] = round((b["not_after_epoch"] - t) / DAY, 1)
        certs.insert(1, b)
    for c in certs:
        c["alert"] = "days_left" in c and c["days_left"] < s.cert_alert_days
        if c["alert"]:
            problems.append({"check": "certificate", "key": f"cert:{c['what']}",
                             "message": f"the {c['what']} certificate ({c['subject']}) "
                                        + (f"expires in {c['days_left']:.0f} days" if c["days_left"] >= 0 else
                                           "has expired"), "vars": {"what": c["what"], "days": c["days_left"]}})
        elif "error" in c and c["what"] != "broker" and settings.ingest_enabled:  # (files an API-only
            # process without ingest need not have)
            problems.append({"check": "certificate", "key": f"cert:{c['what']}",
                             "message": f"the {c['what']} certificate cannot be read: {c['error']}",
                             "vars": {"what": c["what"], "error": c["error"]}})
    terminals: dict[str, Any] = {"source": None, "total": 0, "expired": 0, "expiring": 0, "soonest": []}
    expiring: list[tuple[float, str]] = []
    if settings.pki.ca_dir:
        ca_dir = settings.path(settings.pki.ca_dir)
        terminals["source"] = str(ca_dir / "index.json")
        try:
            by_sn = await asyncio.to_thread(terminal_certificates, ca_dir)
        except (OSError, ValueError, KeyError, TypeError) as err:
            terminals["error"] = str(err)
            problems.append({"check": "certificate", "key": "cert:terminals",
                             "message": f"the CA's index cannot be read: {err}",
                             "vars": {"what": "terminals", "error": str(err)}})
            by_sn = {}
        limit = t + s.cert_alert_days * DAY
        terminals["total"] = len(by_sn)
        for sn, na in by_sn.items():
            if na < limit:
                expiring.append((na, sn))
        expiring.sort()
        terminals["expired"] = sum(1 for na, _ in expiring if na <= t)
        terminals["expiring"] = len(expiring) - terminals["expired"]
        terminals["soonest"] = [{"sn": sn, "not_after_epoch": na, "days_left": round((na - t) / DAY, 1)}
                                for na, sn in expiring[:TERMINALS_LISTED]]

    # certificate renewals waiting for the CA (server/renewal.py)
    from ..storage import renewals as renewal_store

    states: dict[str, int] = {}
    oldest: float | None = None
    for rec in await renewal_store.every(storage):
        states[rec.get("state", "?")] = states.get(rec.get("state", "?"), 0) + 1
        if rec.get("state") == "requested":
            got = float(rec.get("received") or t)
            oldest = got if oldest is None else min(oldest, got)
    renewals = {"by_state": states, "waiting": states.get("requested", 0), "oldest_waiting_epoch": oldest,
                "alert_after_days": s.renewal_wait_days}
    renewals["alert"] = oldest is not None and t - oldest > s.renewal_wait_days * DAY
    if renewals["alert"]:
        days = (t - oldest) / DAY  # type: ignore[operator]
        problems.append({"check": "renewal", "key": "renewal",
                         "message": f"{renewals['waiting']} terminal certificate renewal request(s) wait for the CA, "
                                    f"the oldest {days:.0f} days: run posfleet ca sign-renewals on the CA's host",
                         "vars": {"n": renewals["waiting"], "days": round(days, 1)}})

    # scheduled reports missed and no longer possible (server/reports/schedule.py, decision 035)
    from ..reports.schedule import unmade

    missed = await unmade(storage)
    for m in missed:
        if t - float(m.get("noted") or 0) > UNMADE_SHOWN_DAYS * DAY:
            continue  # known for a quarter: still listed under reports, no longer a problem (nor an open alert)
        problems.append({"check": "report", "key": f"report:{m['kind']}:{m['period']}",
                         "message": f"the scheduled {m['kind']} report {m['period']} was missed and cannot be made "
                                    f"now: {m['reason']}", "vars": {"period": m["period"], "days": m.get("keep_days")}})

    # time
    clock = time_sync()
    if clock["synchronised"] is False:
        problems.append({"check": "time", "key": "time",
                         "message": "the server's clock is not synchronised (no NTP: chrony or systemd-timesyncd)",
                         "vars": {"max_error_ms": clock.get("max_error_ms")}})

    return {"now_epoch": t, "status": "alert" if problems else "ok", "problems": problems, "disks": disks,
            "database": database, "backup": backup, "broker": broker, "ingest": ingest_part,
            "certificates": {"alert_days": s.cert_alert_days, "items": certs, "terminals": terminals,
                             "renewals": renewals},
            "reports": {"unmade": [{"kind": m["kind"], "period": m["period"], "reason": m["reason"]} for m in missed]},
            "time_sync": clock, "disk_alert_pct": s.disk_alert_pct,
            "_expiring_terminals": expiring}


def answer(result: dict[str, Any], tz: str) -> dict[str, Any]:
    """:func:`inspect`'s result as the API gives it: ``*_epoch`` keys become ISO times with the fleet's offset
    (``now_epoch`` -> ``now``), internal keys dropped."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k.startswith("_"):
                    continue
                if k.endswith("_epoch"):
                    out[k[: -len("_epoch")]] = iso(x, tz) if x is not None else None
                else:
                    out[k] = conv(x)
            return out
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return conv(result)  # type: ignore[no-any-return]


class Inspector:
    """Runs :func:`inspect` every ``inspection.interval_s`` (first after one interval) in the process that runs
    the alerts, and keeps the ``server`` and ``certificate`` alerts in step with what it found."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="self-inspection")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel([self._task])
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.app.state.settings.inspection.interval_s)
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("self-inspection failed")

    async def run(self, now: float | None = None) -> dict[str, Any]:
        """One inspection, its alerts raised and the ones that cleared closed; returns the inspection."""
        result = await inspect(self.app, now)
        settings: Settings = self.app.state.settings
        storage = self.app.state.storage
        webhook = bool(settings.alerts.webhook_url)
        ts = int(result["now_epoch"])
        keep: dict[str, set[str]] = {"server": set(), "certificate": set()}
        raised = False
        for p in result["problems"]:
            kind = "certificate" if p["check"] == "certificate" else "server"
            key = f"{kind}:{p['key']}"
            keep[kind].add(key)
            raised |= await raise_alert(storage, key, kind, None, None, ts, p["message"],
                                        {"check": p["check"], **p.get("vars", {})}, webhook)
        index = await self.app.state.registry.index() if getattr(self.app.state, "registry", None) else {}
        for na, sn in result["_expiring_terminals"]:
            key = f"certificate:terminal:{sn}"
            keep["certificate"].add(key)
            info = index.get(sn)
            days = (na - result["now_epoch"]) / DAY
            raised |= await raise_alert(
                storage, key, "certificate", sn, getattr(info, "county", None), ts,
                f"{sn}: terminal certificate " + (f"expires in {days:.0f} days" if days >= 0 else "has expired"),
                {"check": "certificate", "what": "terminal", "not_after": iso(na, settings.timezone),
                 "days_left": round(days, 1)}, webhook)
        for kind, keys in keep.items():
            await storage.close_alerts(kind, keys, ts)
        alerts = getattr(self.app.state, "alerts", None)
        if raised and alerts is not None:
            alerts._webhook_wake.set()
        return result
