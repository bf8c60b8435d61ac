"""Tables of the command service, on the server's SQLite connection (created here, not in storage/).

``cmd_commands``: one row per (command, unit): the signed payload that is (re)sent as is, the
state with its timestamps, the agent's bounded output. ``cmd_jobs``: a command to many units,
with its pacing, abort threshold and waves.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cmd_jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL,
    total INTEGER NOT NULL,
    rate_per_min REAL,
    abort_pct REAL,
    min_executed INTEGER NOT NULL DEFAULT 1,
    off_hours INTEGER NOT NULL DEFAULT 0,
    canary INTEGER NOT NULL DEFAULT 0,
    wave_size INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    released INTEGER NOT NULL DEFAULT 0,
    started_mono REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS cmd_commands (
    id TEXT PRIMARY KEY,
    job TEXT,
    wave INTEGER NOT NULL DEFAULT 0,
    sn TEXT NOT NULL,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL,
    issued INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    payload BLOB NOT NULL,
    released INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    sends INTEGER NOT NULL DEFAULT 0,
    sent REAL,
    last_sent_mono REAL,
    delivered REAL,
    started REAL,
    finished REAL,
    code INTEGER,
    output TEXT NOT NULL DEFAULT '',
    token TEXT,
    package TEXT
);
CREATE INDEX IF NOT EXISTS cmd_commands_state ON cmd_commands(state, released);
CREATE INDEX IF NOT EXISTS cmd_commands_sn ON cmd_commands(sn, state);
CREATE INDEX IF NOT EXISTS cmd_commands_job ON cmd_commands(job, wave);
CREATE UNIQUE INDEX IF NOT EXISTS cmd_commands_token ON cmd_commands(token) WHERE token IS NOT NULL;
CREATE TABLE IF NOT EXISTS cmd_packages (
    id TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    version TEXT NOT NULL,
    models TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    signature BLOB NOT NULL,
    endorsement BLOB NOT NULL,
    path TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL
);
"""

COMMAND_COLUMNS = ("id", "job", "wave", "sn", "type", "params", "created_by", "created", "issued", "expires",
                   "state", "reason", "sends", "sent", "delivered", "started", "finished", "code", "output",
                   "package")
JOB_COLUMNS = ("id", "type", "params", "created_by", "created", "total", "rate_per_min", "abort_pct",
               "min_executed", "off_hours", "canary", "wave_size", "state", "reason", "released", "finished")


def command_dict(row: Any) -> dict[str, Any]:
    d = {k: row[k] for k in COMMAND_COLUMNS}
    d["params"] = json.loads(d["params"])
    return d


def job_dict(row: Any) -> dict[str, Any]:
    d = {k: row[k] for k in JOB_COLUMNS}
    d["params"] = json.loads(d["params"])
    d["off_hours"] = bool(d["off_hours"])
    return d


async def create_tables(db: Any) -> None:
    """Inside ``storage.write()`` at start-up (``executescript`` COMMITs whatever is pending first)."""
    await db.executescript(SCHEMA)
