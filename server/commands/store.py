"""Rows of the command service's tables (their schema is storage's: ``server/storage/schema.py``).

``cmd_commands``: one row per (command, unit): the signed payload that is (re)sent as is, the
state with its timestamps, the agent's bounded output. ``cmd_jobs``: a command to many units,
with its pacing, abort threshold and waves.
"""

from __future__ import annotations

import json
from typing import Any

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

