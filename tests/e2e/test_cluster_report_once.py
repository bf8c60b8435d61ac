"""A scheduled report reaches the bureau's mailbox once per period with two server processes (issue 17's test, now
that issue 15's several processes have landed; decision 030).

Two real ``posfleet server run`` processes on one PostgreSQL, both with ``[reports.schedule]`` monthly and
quarterly every second, e-mailing over STARTTLS to a local SMTP server started here (aiosmtpd). The first leads
and makes last month's and last quarter's reports (a database counting since 200 days ago, nothing waiting for a
recount); then it is killed (SIGKILL) and the other takes the lead, ticks on, and must send nothing again.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from server.storage import open_storage
from tests.fleet import Server, wait_for
from tests.mail import starttls_smtp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Inbox:
    def __init__(self) -> None:
        self.subjects: Counter[str] = Counter()
        self.tls: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.subjects[str(msg["Subject"])] += 1
        self.tls.append(session.ssl is not None)
        return "250 OK"


def _server(pki, broker, workdir: Path, url: str, group: str, smtp_port: int) -> Server:  # type: ignore[no-untyped-def]
    extra = f"""
[reports]
dir = "{workdir / 'reports'}"
number_prefix = "HNYB-YW-"
[reports.schedule]
monthly = true
quarterly = true
delay_h = 0
interval_s = 1
formats = ["csv"]
[reports.email]
to = ["ybj@example.cn"]
sender = "posfleet@example.cn"
host = "127.0.0.1"
port = {smtp_port}
ca_file = "{workdir.parent / 'smtp-ca' / 'ca.pem'}"
"""
    s = Server(pki, broker, workdir, storage=url, extra=extra)
    s.config.write_text(s.config.read_text().replace("[storage]", f'share_group = "{group}"\nsession_expiry_s = 5\n'
                                                                  "[storage]"))
    return s


async def _counting_since(url: str, ts: float) -> None:
    """The database of a server that has counted since ``ts`` (its first counted hour, kept by the first start):
    last month and last quarter were watched, so the schedule makes them (a new install would not; decision 035)."""
    st = open_storage(url, readers=0)
    await st.open()
    try:
        await st.meta_set("counted_from", str(int(ts)))
    finally:
        await st.close()


def test_two_processes_send_each_period_once_across_a_leader_kill(pki, broker, pg_url: str,  # type: ignore[no-untyped-def]
                                                                  tmp_path: Path) -> None:
    inbox = Inbox()
    smtp = starttls_smtp(tmp_path / "smtp-ca", inbox)  # the mail server's own CA
    group = secrets.token_hex(16)
    asyncio.run(_counting_since(pg_url, time.time() - 200 * 86400))
    first = _server(pki, broker, tmp_path / "a", pg_url, group, smtp.port).start()
    second = None
    try:
        wait_for(lambda: first.log.read_text().count(" leads: ") == 1, 20, "the first process leads")
        second = _server(pki, broker, tmp_path / "b", pg_url, group, smtp.port).start()
        wait_for(lambda: len(inbox.subjects) == 2, 90, "last month's and last quarter's reports e-mailed")
        time.sleep(4)  # both processes tick every second meanwhile
        first.proc.kill()  # type: ignore[union-attr]
        first.proc.wait(10)  # type: ignore[union-attr]
        wait_for(lambda: second.log.read_text().count(" leads: ") == 1, 60, "the second process takes the lead")
        time.sleep(5)  # the new leader ticks
        assert sum(inbox.subjects.values()) == 2 and set(inbox.subjects.values()) == {1}, inbox.subjects
        assert all(inbox.tls), "sent over STARTTLS"
        listed = second.get("/api/v1/reports/stored").json()["items"]
        assert sorted(r["kind"] for r in listed) == ["month", "quarter"], listed
        assert all(r["delivered"].get("email") for r in listed), listed
    finally:
        for s in (first, second):
            if s is not None and s.proc is not None and s.proc.poll() is None:
                s.stop()
        smtp.stop()
    for s in (first, second):
        if s is not None:
            assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]
