"""Server log lines carry their zone (issue 14): the same fleet time zone and offset as the API and the CLI, not
a bare UTC time (read from a real server's log)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.fleet import Broker, Pki, Server

LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d) (INFO|WARNING|ERROR) \S+: ")


def test_log_lines_are_in_the_fleets_zone_with_offset(pki: Pki, broker: Broker, tmp_path: Path) -> None:
    server = Server(pki, broker, tmp_path / "server").start()
    try:
        assert server.get("/api/v1/units").status_code == 200
    finally:
        server.stop()
    lines = [ln for ln in server.log.read_text().splitlines() if LINE.match(ln)]
    assert lines, server.log.read_text()[-2000:]
    stamp = datetime.fromisoformat(LINE.match(lines[-1]).group(1))
    assert stamp.utcoffset() == datetime.now(ZoneInfo("Asia/Shanghai")).utcoffset()  # +08:00 on any machine
    assert abs((datetime.now(ZoneInfo("UTC")) - stamp).total_seconds()) < 300
    # every line the server's own loggers wrote is stamped that way
    ours = [ln for ln in server.log.read_text().splitlines() if re.search(r" (INFO|WARNING|ERROR) (server|uvicorn)", ln)]
    assert ours and all(LINE.match(ln) for ln in ours), ours[:5]
