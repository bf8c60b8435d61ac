"""The end-to-end flow and store-and-forward with kills, with the server storing in PostgreSQL: real Mosquitto,
real server processes (``[storage] url = "postgresql://..."``), a real agent, the tests' own PostgreSQL."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from tests.backend import db_count
from tests.fleet import (
    AgentProc,
    Server,
    agent_config,
    outbox_backlog,
    stop_process,
    upload_the_rest,
    wait_for,
)

BACKLOG = 3_000


def test_backlog_through_agent_and_server_kills_is_stored_exactly_once(pki, broker, pg_url: str,
                                                                       tmp_path: Path) -> None:
    data = tmp_path / "k"
    base = int(time.time()) // 60 * 60 - 3 * 86400  # three days back: three day partitions
    epoch = outbox_backlog(data, BACKLOG, base)
    server = Server(pki, broker, tmp_path / "server", storage=pg_url).start()
    started = int(time.time())
    # the backlog's samples only: the agent also samples live at each minute it runs across, and stores those too
    stored = lambda: db_count(pg_url, f"select count(*) from samples where sn='HN00080001' "  # noqa: E731
                                      f"and ts < {base + 60 * BACKLOG}")
    cfg = agent_config(pki, broker, "HN00080001", data, link="max_batch = 20\nbacklog_rate = 8.0\nack_timeout_s = 5")
    rng = random.Random(2026_12_06)
    after_each_kill = []
    try:
        for k in range(6):
            before = stored()
            agent = AgentProc(cfg, tmp_path / "k.log").start()
            # killed while uploading, however long the agent takes to start on a busy machine
            wait_for(lambda: stored() > before, 60, "the agent uploading")  # noqa: B023
            time.sleep(rng.uniform(0.2, 0.8))
            if k == 3:  # the server dies mid-ingest (no clean shutdown), then comes back on the same database
                stop_process(server.proc, signal.SIGKILL)
                server.proc = None
                server.start()
            agent.kill()
            after_each_kill.append(stored())
        upload_the_rest(pki, broker, "HN00080001", data, tmp_path / "k.log", stored, BACKLOG, base)
        assert after_each_kill[-1] < BACKLOG, "the last kill came before the upload was over"
        assert stored() == BACKLOG
        distinct = db_count(pg_url, f"select count(distinct ts) from samples where sn='HN00080001' and epoch={epoch} "
                                    f"and ts < {base + 60 * BACKLOG}")
        assert distinct == BACKLOG, "every sample exactly once"
        # anything else stored for this terminal is a live sample taken during the test, each once
        extra = db_count(pg_url, f"select count(*) from samples where sn='HN00080001' and ts >= {base + 60 * BACKLOG}")
        assert extra == db_count(pg_url, f"select count(distinct ts) from samples where sn='HN00080001' "
                                         f"and ts >= {started // 60 * 60}"), "only live samples beyond the backlog"
        assert db_count(pg_url, "select count(*) from pg_inherits i join pg_class p on p.oid = i.inhparent "
                                "where p.relname = 'samples'") >= 3, "the samples went into day partitions"
        unit = server.get("/api/v1/units/HN00080001").json()
        assert unit["sn"] == "HN00080001" and unit["latest"] is not None  # the API reads PostgreSQL too
    finally:
        server.stop()
    text = server.log.read_text()
    assert "Traceback" not in text, text[-4000:]
