"""Monthly and quarterly reports made on their own, kept on the server and delivered by e-mail and/or webhook.

``[reports.schedule] monthly / quarterly``: after a month (quarter) ends, once ``delay_h`` has passed and no hour of
it awaits a recount (the figures say ``complete``), the report is made in ``formats`` (the whole province, the
configured ``[reports] lang``), its files written to ``[reports] dir`` and their bytes kept in the database (so any
server process, on any host, serves a download; a file over ``[reports] stored_max_mb`` stays in ``dir`` only),
then sent:

* by e-mail through ``[reports.email]`` (SMTP over TLS: STARTTLS or implicit TLS; the server's certificate checked
  against ``ca_file`` or the system's trust store; a password read from ``password_file``), the files attached;
* to ``[reports.schedule] webhook_url``: a JSON notice (period, report number, tier, each file's name, size,
  sha256 and download path under ``/api/v1/reports/stored/``).

**Once per period.** The run belongs to the process that runs the fleet's background work (on SQLite the one
primary; on PostgreSQL the leader, server/leadership.py) and each period is *claimed* in the
database before it is made (``meta`` key ``report:<kind>:<period>``, inserted only if absent): a second process,
a restart, or the next tick finds the claim and does nothing. A process stopped while making releases its claim
(the next tick anywhere takes it over, by compare-and-set, once); one killed outright leaves it to grow stale
(``STALE_MAKING_S``) and be taken over then. Delivery is recorded per channel as it succeeds;
a channel that failed is retried on later ticks (at most ``ATTEMPTS`` times), one that succeeded never again. A
process killed between the SMTP server's acceptance and the record (milliseconds) would send that channel once
more after its restart: the only window in which a report can arrive twice.

A period still incomplete after ``max_wait_h`` is made as counted and says so (the report's incomplete note); never
before the roll-ups have closed its last hour (a server just started again after a stop).

**Missed periods, and periods never watched** (decision 035). Every period of a kind that ended after
``report_from:<kind>`` (``meta``, fixed once: the later of the server's first counted hour ``counted_from`` and the
start of the period that ended last when the schedule first ran) is made, oldest first, so a server stopped across
period ends makes each one it missed; a new install makes none that ended before it counted anything. A missed
period whose roll-ups are purged (``availability.rollup_keep_days``) is recorded as ``unmade``, logged once, and
listed by the self-inspection (:func:`unmade`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import smtplib
import ssl
import time
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from ..tasks import cancel
from .ops import MEDIA, build, documents, render
from .periods import Period, ended_periods, resolve

log = logging.getLogger(__name__)

PREFIX = "report:"
ATTEMPTS = 5
STALE_MAKING_S = 3600.0  # a claim still "making" this long after it was taken: its process died; made again


def reports_dir(settings: Any) -> Path:
    return settings.path(settings.reports.dir)


async def tick(app: Any) -> list[str]:
    """One look at what is due: makes and delivers it. The meta keys acted on (for tests and the log).

    One tick at a time in a process: a second (the operator's, a test's) waits for the one running, then finds what
    it made, instead of finding the period claimed as "making" and passing over it as if another process had it."""
    st = app.state.settings
    sch = st.reports.schedule
    if not (sch.monthly or sch.quarterly):
        return []
    lock = getattr(app.state, "report_tick_lock", None)
    if lock is None:
        lock = app.state.report_tick_lock = asyncio.Lock()
    async with lock:
        return await _tick(app)


async def _tick(app: Any) -> list[str]:
    sch = app.state.settings.reports.schedule
    if not await _leads(app):
        return []
    svc = app.state.availability
    now = int(app.state.clock.now())
    done: list[str] = []
    kept_from = svc.rollups_kept_from(now)  # a period starting earlier cannot be made from its roll-ups
    for kind in ("month", "quarter"):
        if not getattr(sch, "monthly" if kind == "month" else "quarterly"):
            continue
        for key in ended_periods(kind, await _horizon(app, kind, now), now, svc.tz):
            if not await _period(app, kind, key, now, kept_from, done):
                break
    return done


async def _horizon(app: Any, kind: str, now: int) -> int:
    """Periods of ``kind`` that ended after this time are the schedule's to make (decision 035). Fixed once, the
    first time a leading process runs the schedule for ``kind`` (``meta`` ``report_from:<kind>``, claimed: one
    value, one log line across processes): the later of the server's first counted hour (``counted_from``, kept
    since a database was new: a new install makes no report of a period that ended before it was watching) and the
    start of the period of ``kind`` that ended last (so a schedule turned on, or a database from before
    ``counted_from`` was kept, makes the last period and not every older one)."""
    storage = app.state.storage
    key = f"report_from:{kind}"
    text = await storage.meta_get(key)
    if text is not None:
        return int(text)
    svc = app.state.availability
    last = ended_periods(kind, now - 100 * 86400, now, svc.tz)[-1]  # (any 100 days hold a quarter's end)
    last_start = resolve(svc, **{kind: last}).start
    counted = await storage.meta_get("counted_from")
    horizon = max(last_start, int(counted)) if counted is not None else last_start
    if await storage.meta_claim(key, str(horizon)):
        if horizon > last_start:
            log.warning("scheduled %s reports: none is made for a period that ended before %s, the server's first "
                        "counted hour (it was not watching then): %s %s and earlier are not made", kind,
                        datetime.fromtimestamp(horizon, svc.tz).isoformat(timespec="minutes"), kind, last)
        return horizon
    return int(await storage.meta_get(key) or horizon)  # another process fixed it first


async def _period(app: Any, kind: str, key: str, now: int, kept_from: date, done: list[str]) -> bool:
    """Make (once, under the period's claim) and deliver one period that has ended, if it is due. Whether it is
    settled (made, or noted as one that cannot be made); a period not yet due (or being made elsewhere) holds the
    later ones of its kind back, so that missed periods are made oldest first."""
    st = app.state.settings
    sch = st.reports.schedule
    storage = app.state.storage
    svc = app.state.availability
    meta_key = f"{PREFIX}{kind}:{key}"
    text = await storage.meta_get(meta_key)
    rec = json.loads(text) if text else None
    if rec is not None and rec.get("state") == "unmade":
        return True
    if rec is None and resolve(svc, **{kind: key}).first < kept_from:
        reason = (f"its roll-ups are no longer kept (availability.rollup_keep_days = "
                  f"{st.availability.rollup_keep_days}, kept from {kept_from.isoformat()})")
        if await storage.meta_claim(meta_key, json.dumps({"state": "unmade", "kind": kind, "period": key, "reason": reason,
                                                          "keep_days": st.availability.rollup_keep_days,
                                                          "noted": time.time()})):
            log.error("the %s report %s was missed and cannot be made now: %s", kind, key, reason)
        return True
    if rec is None or rec.get("state") in ("making", "released"):
        if rec is not None and rec["state"] == "making" and time.time() - float(rec.get("claimed", 0)) < STALE_MAKING_S:
            return False  # being made by another process
        period = resolve(svc, **{kind: key})
        waited = now - period.end
        if waited < sch.delay_h * 3600:
            return False
        if (svc.rolled_to or 0) < period.end:
            return False  # its last hours not closed yet (a server just back after a stop): never "as counted" now
        fig = await svc.figures(period.start, period.end, "fleet")
        if not fig["complete"] and waited < sch.max_wait_h * 3600:
            return False
        claim = json.dumps({"state": "making", "claimed": time.time(), "pid": os.getpid(), "kind": kind,
                            "period": key})
        taken = await storage.meta_claim(meta_key, claim) if text is None else \
            await storage.meta_replace(meta_key, text, claim)  # a released or abandoned claim, taken over once
        if not taken:
            return False  # another process claimed it first
        if rec is not None and rec["state"] == "making":
            log.warning("report %s was claimed by process %s that never finished it: making it again",
                        meta_key, rec.get("pid"))
        rec = await _make(app, meta_key, period, claim)
        done.append(meta_key)
    if rec.get("state") == "made" and await _deliver(app, meta_key, rec):
        done.append(meta_key)
    return True


async def _leads(app: Any) -> bool:
    """Whether this process runs the fleet's once-only work. On PostgreSQL that is the leadership's own answer
    (server/leadership.py): asking ``storage.lead()`` here too would use the lock's connection from a second task at
    the same time, which asyncpg refuses and the leadership would take for a lost lock. On SQLite the primary."""
    leadership = getattr(app.state, "leadership", None)
    if leadership is not None:
        return bool(leadership.leader)
    return bool(await app.state.storage.lead())


async def _make(app: Any, meta_key: str, period: Period, claim: str) -> dict[str, Any]:
    """Make the period's files under the claim; a failure or a stop (cancellation) releases the claim at once, so
    the next tick of any process makes it (instead of waiting for the claim to grow stale)."""
    try:
        return await _make_files(app, meta_key, period)
    except BaseException:
        released = json.dumps({**json.loads(claim), "state": "released"})
        with contextlib.suppress(Exception):
            await asyncio.shield(app.state.storage.meta_replace(meta_key, claim, released))
        raise


async def _make_files(app: Any, meta_key: str, period: Period) -> dict[str, Any]:
    from .router import pdf_slot, server_inspection

    st = app.state.settings
    svc = app.state.availability
    data = await build(svc, app.state.storage, period.start, period.end, None, st.reports.lang, period=period,
                       server_inspection=await server_inspection(app), appendix=True)
    folder = reports_dir(st)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    files = []
    for fmt in st.reports.schedule.formats:
        for name, doc in documents(data, fmt):  # a large fleet's PDF: the appendix per county
            if fmt == "pdf":
                async with await pdf_slot(app):
                    body = await render(doc, fmt, st)
            else:
                body = await render(doc, fmt, st)
            await asyncio.to_thread(_write, folder / name, body)
            digest = hashlib.sha256(body).hexdigest()
            shared = len(body) <= st.reports.stored_max_mb * 1024 * 1024
            if shared:  # every process serves it, whichever host made it
                await app.state.storage.put_report_file(name, fmt, body, digest, time.time())
            else:
                log.warning("report file %s (%d bytes) is over [reports] stored_max_mb: kept in %s on this host only",
                            name, len(body), folder)
            files.append({"name": name, "format": fmt, "bytes": len(body), "sha256": digest, "shared": shared})
    fleet = data["fleet"]
    rec = {"state": "made", "kind": period.kind, "period": period.key, "made": time.time(), "files": files,
           "complete": bool(data["complete"]), "report_no": data["cover"]["report_no"],
           "title": f"{data['cover']['title']} {data['cover']['period_name']}",
           "tier": fleet.get("tier"), "device_rate": fleet.get("device_rate"), "network_rate": fleet.get("network_rate"),
           "delivered": {}, "attempts": {}, "errors": {}}
    await app.state.storage.meta_set(meta_key, json.dumps(rec))
    log.warning("made the %s report %s: %s", period.kind, period.key, ", ".join(f["name"] for f in files))
    return rec


def _write(path: Path, body: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(body)
    os.replace(tmp, path)


def _channels(st: Any) -> list[str]:
    out = []
    if st.reports.email.to:
        out.append("email")
    if st.reports.schedule.webhook_url:
        out.append("webhook")
    return out


async def _deliver(app: Any, meta_key: str, rec: dict[str, Any]) -> bool:
    """Send on every channel not yet delivered; record each outcome. Whether anything was attempted."""
    st = app.state.settings
    todo = [c for c in _channels(st) if c not in rec["delivered"] and rec["attempts"].get(c, 0) < ATTEMPTS]
    if not todo:
        return False
    for channel in todo:
        try:
            if channel == "email":
                bodies = {f["name"]: (await _file_bytes(app, f["name"]) or (b"", ""))[0] for f in rec["files"]}
                await asyncio.to_thread(send_email, st, rec, bodies)
            else:
                await send_webhook(st, rec)
        except Exception as err:  # noqa: BLE001 - recorded, retried on a later tick
            rec["attempts"][channel] = rec["attempts"].get(channel, 0) + 1
            rec["errors"][channel] = f"{type(err).__name__}: {err}"
            log.warning("report %s: %s delivery failed (attempt %d of %d): %s", meta_key, channel,
                        rec["attempts"][channel], ATTEMPTS, rec["errors"][channel])
        else:
            rec["delivered"][channel] = time.time()
            rec["errors"].pop(channel, None)
        await app.state.storage.meta_set(meta_key, json.dumps(rec))  # each channel recorded as it is done
    return True


def send_email(st: Any, rec: dict[str, Any], bodies: dict[str, bytes]) -> None:
    """The report's files (``bodies`` by name) as attachments of one message, through SMTP over TLS (blocking: run
    in a thread)."""
    e = st.reports.email
    msg = EmailMessage()
    msg["Subject"] = f"{rec['title']}（{rec['report_no']}）"
    msg["From"] = e.sender
    msg["To"] = ", ".join(e.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=e.sender.rsplit("@", 1)[-1])
    lines = [f"{rec['title']}，报告编号 {rec['report_no']}。"]
    if rec.get("tier") is not None:
        lines.append(f"设备完好率 {rec['device_rate'] * 100:.2f}%，{st.reports.network_term} "
                     f"{rec['network_rate'] * 100:.2f}%，合同档次 {rec['tier']}。")
    if not rec.get("complete"):
        lines.append("注意：本期数据未完整计入（迟到数据待重算），数字可能变化。")
    lines.append("附件：" + "、".join(f["name"] for f in rec["files"]))
    msg.set_content("\n".join(lines))
    for f in rec["files"]:
        maintype, subtype = MEDIA[f["format"]].split(";")[0].split("/")
        if not bodies.get(f["name"]):
            raise FileNotFoundError(f"report file {f['name']} is neither in the database nor in [reports] dir here")
        msg.add_attachment(bodies[f["name"]], maintype=maintype, subtype=subtype, filename=f["name"])
    ctx = ssl.create_default_context(cafile=str(st.path(e.ca_file)) if e.ca_file else None)
    password = st.path(e.password_file).read_text(encoding="utf-8").strip() if e.password_file else ""
    smtp: smtplib.SMTP
    if e.tls == "ssl":
        smtp = smtplib.SMTP_SSL(e.host, e.port, timeout=e.timeout_s, context=ctx)
    else:
        smtp = smtplib.SMTP(e.host, e.port, timeout=e.timeout_s)
    with smtp:
        if e.tls == "starttls":
            smtp.starttls(context=ctx)  # refused (SMTPNotSupportedError) by a server without STARTTLS: never plain
        if e.user:
            smtp.login(e.user, password)
        smtp.send_message(msg)


async def send_webhook(st: Any, rec: dict[str, Any]) -> None:
    import httpx

    notice = {"event": "report", "kind": rec["kind"], "period": rec["period"], "report_no": rec["report_no"],
              "title": rec["title"], "complete": rec["complete"], "tier": rec.get("tier"),
              "files": [{**f, "url": f"/api/v1/reports/stored/{f['name']}"} for f in rec["files"]]}
    async with httpx.AsyncClient(timeout=st.alerts.webhook_timeout_s) as client:
        r = await client.post(st.reports.schedule.webhook_url, json=notice)
        r.raise_for_status()


async def run(app: Any) -> None:
    """The schedule's loop (every ``[reports.schedule] interval_s`` of real time)."""
    st = app.state.settings
    while True:
        try:
            await tick(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled reports: the tick failed")
        await asyncio.sleep(st.reports.schedule.interval_s)


def start(app: Any) -> asyncio.Task[None] | None:
    st = app.state.settings
    if not (st.reports.schedule.monthly or st.reports.schedule.quarterly):
        return None
    return asyncio.create_task(run(app), name="report-schedule")


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        await cancel([task])


async def listing(app: Any) -> list[dict[str, Any]]:
    """Every stored report file, newest period first."""
    from wire.times import iso

    tz = app.state.settings.timezone
    out = []
    for key, text in (await app.state.storage.meta_prefix(PREFIX)).items():
        try:
            rec = json.loads(text)
        except ValueError:
            continue
        if rec.get("state") != "made":
            continue
        for f in rec["files"]:
            out.append({"name": f["name"], "kind": rec["kind"], "period": rec["period"], "format": f["format"],
                        "bytes": f["bytes"], "sha256": f["sha256"], "made": iso(rec["made"], tz),
                        "complete": rec["complete"],
                        "delivered": {c: iso(t, tz) for c, t in rec["delivered"].items()},
                        "url": f"/api/v1/reports/stored/{f['name']}", "_key": key})
    out.sort(key=lambda r: (r["made"] or "", r["name"]), reverse=True)
    for r in out:
        r.pop("_key")
    return out


async def unmade(storage: Any) -> list[dict[str, Any]]:
    """The periods the schedule missed and could not make (their roll-ups no longer kept), oldest first."""
    out = []
    for text in (await storage.meta_prefix(PREFIX)).values():
        try:
            rec = json.loads(text)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("state") == "unmade":
            out.append(rec)
    out.sort(key=lambda r: (r["kind"], r["period"]))
    return out


async def read_stored(app: Any, name: str) -> tuple[bytes, str] | None:
    """A listed file's bytes and format; None for a name that is not listed (no path is read from the request)."""
    for r in await listing(app):
        if r["name"] == name:
            got = await _file_bytes(app, r["name"])
            return None if got is None else (got[0], r["format"])
    return None


async def _file_bytes(app: Any, name: str) -> tuple[bytes, str] | None:
    """A made file's bytes and where they came from: the database (any process), else ``[reports] dir`` on this
    host (a file over ``stored_max_mb``, or one made before the bytes were kept in the database). ``name`` is a
    listed one, never a request's text."""
    got = await app.state.storage.report_file(name)
    if got is not None:
        return got[0], "database"
    try:
        return await asyncio.to_thread((reports_dir(app.state.settings) / name).read_bytes), "dir"
    except FileNotFoundError:
        return None
