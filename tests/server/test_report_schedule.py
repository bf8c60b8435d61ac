"""Scheduled reports (issue 17): made after the period's data is complete, kept on the server, listed and downloaded,
delivered to a local SMTP server over STARTTLS (aiosmtpd, started here) and to a webhook, exactly once per period,
also with two server apps on one database ticking at the same time."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import http.server
import io
import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pypdf
import pytest
from aiosmtpd.controller import Controller

from server.reports import schedule
from tests.mail import free_port, starttls_smtp
from tests.server.conftest import at, make_api, sample
from tests.server.test_availability import _setup
from tests.server.test_report_document import _month_of_data


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[bool, str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        self.messages.append((session.ssl is not None, envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def subjects(self) -> Counter[str]:
        return Counter(str(_message(m[3])["Subject"]) for m in self.messages)


def _message(raw: bytes) -> Any:
    return email.message_from_bytes(raw, policy=email.policy.default)


class Hook(http.server.BaseHTTPRequestHandler):
    got: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook
        self.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_monthly_report_arrives_once_per_period(tmp_path: Path) -> None:
    inbox = Inbox()
    smtp = starttls_smtp(tmp_path / "ca", inbox)
    Hook.got = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    extra = {"reports": {"dir": str(tmp_path / "reports"), "client": "海南省医疗保障局", "number_prefix": "HNYB-YW-",
                         "schedule": {"monthly": True, "delay_h": 1, "interval_s": 3600, "formats": ["pdf", "xlsx"],
                                      "webhook_url": f"http://127.0.0.1:{hook.server_address[1]}/reports"},
                         "email": {"to": ["ybj@example.cn"], "sender": "posfleet@example.cn", "host": "127.0.0.1",
                                   "port": smtp.port, "ca_file": str(tmp_path / "ca" / "ca.pem")}}}
    march = "运维服务报告 2025年3月（HNYB-YW-2025-03）"
    try:
        async with make_api(tmp_path, extra, now="2025-03-03 07:00") as api:
            await _month_of_data(api)  # the clock now at 2025-04-01 00:00, March's data counted
            api.clock.t = at("2025-04-01 00:30")  # before delay_h: not yet
            assert await schedule.tick(api.app) == []
            assert march not in inbox.subjects()

            api.clock.t = at("2025-04-01 02:00")
            async with make_api(tmp_path, extra, now="2025-04-01 02:00") as other:  # a second app on the database
                await asyncio.gather(schedule.tick(api.app), schedule.tick(other.app), schedule.tick(api.app))
                await schedule.tick(other.app)
            await schedule.tick(api.app)
            assert inbox.subjects()[march] == 1, inbox.subjects()
            sent = next(m for m in inbox.messages if march in str(_message(m[3])["Subject"]))
            assert sent[0] and sent[1] == "posfleet@example.cn" and sent[2] == ["ybj@example.cn"]  # over TLS
            msg = _message(sent[3])
            attached = {p.get_filename(): p.get_payload(decode=True) for p in msg.walk() if p.get_filename()}
            assert set(attached) == {"ops-2025-03.pdf", "ops-2025-03.xlsx"}
            cover = pypdf.PdfReader(io.BytesIO(attached["ops-2025-03.pdf"])).pages[0].extract_text().replace("\n", "")
            assert "2025年3月1日至2025年3月31日" in cover and "海南省医疗保障局" in cover
            notices = [n for n in Hook.got if n["period"] == "2025-03"]
            assert len(notices) == 1 and notices[0]["report_no"] == "HNYB-YW-2025-03"

            # kept on the server: listed and downloaded, the same bytes as mailed
            listed = (await api.get("/api/v1/reports/stored", role="viewer")).json()
            mine = {r["name"]: r for r in listed["items"] if r["period"] == "2025-03"}
            assert set(mine) == {"ops-2025-03.pdf", "ops-2025-03.xlsx"} and mine["ops-2025-03.pdf"]["delivered"]["email"]
            got = await api.get(mine["ops-2025-03.pdf"]["url"], role="viewer")
            assert got.status_code == 200 and got.content == attached["ops-2025-03.pdf"]
            assert hashlib.sha256(got.content).hexdigest() == mine["ops-2025-03.pdf"]["sha256"]
            assert (await api.get("/api/v1/reports/stored/fleet.sqlite")).status_code == 404
            assert (await api.get("/api/v1/reports/stored/..%2Ffleet.sqlite")).status_code == 404

            # the next month: April's report, once; March's not again
            api.clock.t = at("2025-05-01 03:00")
            assert await schedule.tick(api.app) == []  # April not counted to its end yet: waits (max_wait_h 72)
            await api.settle()  # the roll-ups reach May 1
            await asyncio.gather(schedule.tick(api.app), schedule.tick(api.app))
            await schedule.tick(api.app)
            subjects = inbox.subjects()
            assert subjects["运维服务报告 2025年4月（HNYB-YW-2025-04）"] == 1 and subjects[march] == 1, subjects
            assert all(n == 1 for n in subjects.values()), subjects  # every period once, whatever ran when
            assert Counter(n["period"] for n in Hook.got) == Counter({p: 1 for p in {n["period"] for n in Hook.got}})
    finally:
        smtp.stop()
        hook.shutdown()


async def test_delivery_refused_without_tls_is_retried_not_sent_in_clear(tmp_path: Path) -> None:
    """An SMTP server that offers no STARTTLS gets nothing: the failure is recorded and retried on later ticks."""
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())  # no TLS at all
    smtp.start()
    extra = {"reports": {"dir": str(tmp_path / "reports"),
                         "schedule": {"monthly": True, "delay_h": 0, "interval_s": 3600, "formats": ["csv"]},
                         "email": {"to": ["ybj@example.cn"], "sender": "posfleet@example.cn", "host": "127.0.0.1",
                                   "port": smtp.port}}}
    try:
        async with make_api(tmp_path, extra, now="2025-03-31 20:00") as api:  # counting before March ends
            api.clock.t = at("2025-04-01 02:00")
            await api.settle()
            rec: dict[str, Any] = {}
            for _ in range(600):  # the loop's first tick (at start) makes March and tries to send it
                await schedule.tick(api.app)
                rec = json.loads(await api.app.state.storage.meta_get("report:month:2025-03") or "{}")
                if rec.get("attempts", {}).get("email", 0) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert inbox.messages == []
            assert rec["state"] == "made" and "email" not in rec["delivered"]
            assert rec["attempts"]["email"] >= 2 and "STARTTLS" in rec["errors"]["email"]
            listed = (await api.get("/api/v1/reports/stored")).json()["items"]
            assert [r["name"] for r in listed if r["period"] == "2025-03"] == ["ops-2025-03.csv"]
    finally:
        smtp.stop()


async def test_a_report_made_on_one_host_is_downloaded_from_another(tmp_path: Path, pg_url: str) -> None:
    """Two server apps on one PostgreSQL database, each with its own reports folder (two hosts, issue 15): the one
    that leads makes March's report, the other serves its download with the same bytes."""
    await _made_on_a_served_from_b(tmp_path, pg_url, max_mb=256)


async def test_a_file_over_stored_max_mb_is_served_by_its_host_only(tmp_path: Path, pg_url: str) -> None:
    """``stored_max_mb = 0``: nothing in the database, each file only in the maker's ``dir``: the maker serves it,
    another host answers 404 (what every download from another host answered before the bytes were kept)."""
    await _made_on_a_served_from_b(tmp_path, pg_url, max_mb=0)


async def _made_on_a_served_from_b(tmp_path: Path, pg_url: str, max_mb: int) -> None:
    """Host a makes March's report (csv, html); host b lists it and downloads each file."""
    def extra(host: str) -> dict[str, Any]:
        return {"storage": {"url": pg_url},
                "reports": {"dir": str(tmp_path / host / "reports"), "stored_max_mb": max_mb,
                            "schedule": {"monthly": True, "delay_h": 1, "interval_s": 3600, "formats": ["csv", "html"]}}}

    shared = max_mb > 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with make_api(tmp_path / "a", extra("a"), now="2025-03-03 07:00") as maker:
        await _month_of_data(maker)
        maker.clock.t = at("2025-04-01 02:00")
        async with make_api(tmp_path / "b", extra("b"), now="2025-04-01 02:00") as server_b:
            assert await schedule.tick(maker.app) == ["report:month:2025-03"]
            listed = {r["name"]: r for r in (await server_b.get("/api/v1/reports/stored", role="viewer")).json()["items"]
                      if r["period"] == "2025-03"}
            assert set(listed) == {"ops-2025-03.csv", "ops-2025-03.html"}
            assert not (tmp_path / "b" / "reports").exists()  # nothing was written on host b
            for name, r in listed.items():
                got = await server_b.get(r["url"], role="viewer")
                if not shared:
                    assert got.status_code == 404, got.text
                    got = await maker.get(r["url"], role="viewer")
                assert got.status_code == 200, got.text
                assert got.content == (tmp_path / "a" / "reports" / name).read_bytes()
                assert hashlib.sha256(got.content).hexdigest() == r["sha256"]
            if shared:
                assert "秀英区" in (await server_b.get(listed["ops-2025-03.html"]["url"], role="viewer")).text



async def test_quarterly_report_is_made_once_after_the_quarter(tmp_path: Path) -> None:
    """``quarterly`` alone: after 2025Q1 ends (and ``delay_h``), the quarter's report is made, kept and announced
    once, with the quarter's Chinese period; no monthly report is made; later ticks make nothing again."""
    Hook.got = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    extra = {"reports": {"dir": str(tmp_path / "reports"), "number_prefix": "HNYB-YW-",
                         "schedule": {"quarterly": True, "delay_h": 1, "interval_s": 3600, "formats": ["html"],
                                      "webhook_url": f"http://127.0.0.1:{hook.server_address[1]}/reports"}}}
    try:
        async with make_api(tmp_path, extra, now="2025-03-03 07:00") as api:
            await _month_of_data(api)  # the clock now at 2025-04-01 00:00
            assert await schedule.tick(api.app) == []  # before delay_h
            api.clock.t = at("2025-04-01 02:00")
            await asyncio.gather(schedule.tick(api.app), schedule.tick(api.app))
            await schedule.tick(api.app)
            api.clock.t = at("2025-04-20 02:00")
            assert await schedule.tick(api.app) == []
            listed = (await api.get("/api/v1/reports/stored", role="viewer")).json()["items"]
            assert {r["kind"] for r in listed} == {"quarter"}, listed  # (2024Q4 too: the tick at start made it)
            q1 = [r for r in listed if r["period"] == "2025Q1"]
            assert [(r["name"], r["format"]) for r in q1] == [("ops-2025Q1.html", "html")], listed
            page = (await api.get(q1[0]["url"], role="viewer")).text
            assert "2025年第一季度" in page and "2025年1月1日至2025年3月31日" in page and "HNYB-YW-2025Q1" in page
            assert "秀英区" in page
            notices = [(n["period"], n["report_no"]) for n in Hook.got if n["period"] == "2025Q1"]
            assert notices == [("2025Q1", "HNYB-YW-2025Q1")], Hook.got
    finally:
        hook.shutdown()


def _hook() -> http.server.ThreadingHTTPServer:
    Hook.got = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    return hook


async def _made(api: Any) -> list[tuple[str, str]]:
    """(kind, period) of every report the schedule made and keeps, oldest first."""
    listed = (await api.get("/api/v1/reports/stored", role="viewer")).json()["items"]
    return sorted({(r["kind"], r["period"]) for r in listed}, key=lambda k: k[1])


async def test_a_server_down_over_two_month_ends_makes_both_missed_reports_once(tmp_path: Path) -> None:
    """Stopped on 2025-03-20 and started again on 2025-05-03 (decision 035): March's and April's reports are both
    made on the restart, once each and March first, with two server apps on the database ticking at once; before,
    only April's was (the month that ended last) and March's was never made, silently."""
    hook = _hook()
    extra = {"availability": {"catchup_days": 70},  # the roll-ups close every hour missed: the reports are whole
             "reports": {"dir": str(tmp_path / "reports"), "number_prefix": "HNYB-YW-",
                         "schedule": {"monthly": True, "delay_h": 1, "interval_s": 3600, "formats": ["csv"],
                                      "webhook_url": f"http://127.0.0.1:{hook.server_address[1]}/reports"}}}
    try:
        async with make_api(tmp_path, extra, now="2025-03-03 07:00") as api:
            await _setup(api)
            await api.feed("HNA0000001", [sample(k, at("2025-03-03 08:00") + 60 * k) for k in range(120)])
            api.clock.t = at("2025-03-20 10:00")
            await api.settle()
            await schedule.tick(api.app)
            assert await _made(api) == []  # (February ended before the first counted hour: not made)
        # down over March's end and April's
        async with make_api(tmp_path, extra, now="2025-05-03 02:00") as api, \
                make_api(tmp_path, extra, now="2025-05-03 02:00") as other:
            await asyncio.gather(schedule.tick(api.app), schedule.tick(other.app))  # (roll-ups not closed yet)
            await api.settle()  # the hours missed closed, as the roll-up loop does after a start
            await asyncio.gather(schedule.tick(api.app), schedule.tick(other.app), schedule.tick(api.app))
            await schedule.tick(other.app)
            assert await _made(api) == [("month", "2025-03"), ("month", "2025-04")]
            assert [n["period"] for n in Hook.got] == ["2025-03", "2025-04"], Hook.got  # once each, oldest first
            march = (await api.get("/api/v1/reports/stored/ops-2025-03.csv", role="viewer")).content.decode()
            assert "HNA0000001" in march
            api.clock.t = at("2025-05-20 02:00")
            await schedule.tick(api.app)
            assert [n["period"] for n in Hook.got] == ["2025-03", "2025-04"]
    finally:
        hook.shutdown()


async def test_a_new_install_makes_no_report_of_periods_before_its_first_counted_hour(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Installed on 2025-04-15 with no data: no report for March or 2025Q1 (it was not watching; before, both were
    made and sent, saying 无法判定档次), and the log says so once a schedule; April's report, from its first counted
    hour, is made after April ends."""
    hook = _hook()
    extra = {"reports": {"dir": str(tmp_path / "reports"),
                         "schedule": {"monthly": True, "quarterly": True, "delay_h": 0, "interval_s": 3600,
                                      "formats": ["csv"],
                                      "webhook_url": f"http://127.0.0.1:{hook.server_address[1]}/reports"}}}
    caplog.set_level(logging.WARNING, logger="server.reports.schedule")
    try:
        async with make_api(tmp_path, extra, now="2025-04-15 10:20") as api:
            async with make_api(tmp_path, extra, now="2025-04-15 10:20") as other:
                await asyncio.gather(schedule.tick(api.app), schedule.tick(other.app), schedule.tick(api.app))
            assert await _made(api) == [] and Hook.got == []
            for key in ("report:month:2025-03", "report:quarter:2025Q1"):
                assert await api.app.state.storage.meta_get(key) is None
            said = [r.getMessage() for r in caplog.records if "first counted hour" in r.getMessage()]
            assert len(said) == 2 and "2025-04-15T10:00" in said[0], said  # once for monthly, once for quarterly
            api.clock.t = at("2025-05-01 02:00")
            await api.settle()
            await schedule.tick(api.app)
            assert await _made(api) == [("month", "2025-04")]
            assert [n["period"] for n in Hook.got] == ["2025-04"]
            assert len([r for r in caplog.records if "first counted hour" in r.getMessage()]) == 2
    finally:
        hook.shutdown()


async def test_a_missed_period_whose_roll_ups_are_gone_is_logged_and_inspected(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Down from 2025-01-10 to 2025-04-03 with ``rollup_keep_days = 31``: March is made; January and February are
    missed beyond the roll-ups kept, so each is logged once and listed by the self-inspection (a problem each)."""
    extra = {"availability": {"rollup_keep_days": 31, "catchup_days": 90},
             "reports": {"dir": str(tmp_path / "reports"),
                         "schedule": {"monthly": True, "delay_h": 0, "interval_s": 3600, "formats": ["csv"]}}}
    caplog.set_level(logging.WARNING, logger="server.reports.schedule")
    async with make_api(tmp_path, extra, now="2025-01-10 09:00") as api:
        await schedule.tick(api.app)
    async with make_api(tmp_path, extra, now="2025-04-03 02:00") as api:
        await api.settle()
        for _ in range(3):
            await schedule.tick(api.app)
        assert await _made(api) == [("month", "2025-03")]
        said = [r.getMessage() for r in caplog.records if "cannot be made" in r.getMessage()]
        assert len(said) == 2 and "2025-01" in said[0] and "2025-02" in said[1], said
        got = (await api.get("/api/v1/server/inspection")).json()
        mine = [p for p in got["problems"] if p["check"] == "report"]
        assert [p["vars"]["period"] for p in mine] == ["2025-01", "2025-02"], got["problems"]
        assert [m["period"] for m in got["reports"]["unmade"]] == ["2025-01", "2025-02"]


async def test_a_tick_asked_while_the_background_one_is_making_returns_with_the_report_made(tmp_path: Path) -> None:
    """The server's own tick runs at start; a second tick in the same process (the CI flake of 2026-12-07: a test's,
    as an operator's would be) while the first is making March's report waited for nothing and returned with March
    not made, as if another process had it. Now it waits for the tick running and finds March made."""
    extra = {"reports": {"dir": str(tmp_path / "reports"),
                         "schedule": {"monthly": True, "delay_h": 0, "interval_s": 3600, "formats": ["csv"]}}}
    async with make_api(tmp_path, extra, now="2025-03-03 07:00") as api:
        await _setup(api)
        await api.feed("HNA0000001", [sample(k, at("2025-03-03 08:00") + 60 * k) for k in range(120)])
        api.clock.t = at("2025-04-01 02:00")
        await api.settle()
        first = asyncio.create_task(schedule.tick(api.app))
        storage = api.app.state.storage
        for _ in range(10_000):
            text = await storage.meta_get("report:month:2025-03")
            if text is not None:
                break
            await asyncio.sleep(0)
        assert text is not None and json.loads(text)["state"] == "making"
        await schedule.tick(api.app)
        assert await _made(api) == [("month", "2025-03")]
        assert await first == ["report:month:2025-03"]
