"""Remote configuration changes that cannot strand a terminal.

``set_config`` validates the change, keeps the current file as ``<config>.bak``, writes the
new one, records ``config-pending.json`` and restarts the agent in place. At start-up,
:func:`check_pending` sees the marker: once the server acknowledges again under the new
configuration the change is confirmed (and the backup removed); if the link is not back
before the deadline the old file is put back and the agent restarts with it. Either way
the command's result reports what happened.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from .config import ConfigError, parse

MARKER = "config-pending.json"


def _apply(data: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {p} is not a table")
        node = nxt
    node[parts[-1]] = value


def stage_change(path: Path, command_id: str, changes: dict[str, object], rollback_minutes: float, now: float) -> str:
    """Validate and write the new configuration; raises ConfigError (naming the field) when invalid."""
    if not changes:
        raise ConfigError("changes: nothing to change")
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for key, value in changes.items():
        if key in ("sn", "data_dir", "base_dir") or key.startswith(("clock.", "commands.")):
            raise ConfigError(f"{key}: cannot be changed remotely")
        _apply(data, key, value)
    new_text = tomli_w.dumps(data)
    parse(new_text, str(path.parent))  # raises ConfigError naming the field
    backup = path.with_name(path.name + ".bak")
    backup.write_text(text, encoding="utf-8")
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(new_text, encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    marker = {"command": command_id, "deadline": now + rollback_minutes * 60, "changes": changes}
    (path.parent / MARKER).write_text(json.dumps(marker))
    os.replace(tmp, path)
    return f"changed {', '.join(sorted(changes))}; restarting to apply (rolled back if the server is not reached " \
           f"within {rollback_minutes:g} min)"


class ConfigGuard:
    """Watches a pending change after the restart that applied it."""

    def __init__(self, config_path: Path | None) -> None:
        self.path = config_path
        self.pending: dict[str, Any] | None = None
        if config_path is not None:
            marker = config_path.parent / MARKER
            if marker.exists():
                try:
                    self.pending = json.loads(marker.read_text())
                except (OSError, ValueError):
                    marker.unlink(missing_ok=True)

    def confirm(self) -> str | None:
        """The server acknowledged under the new configuration: keep it. Returns the command id."""
        if self.pending is None or self.path is None:
            return None
        cid = str(self.pending["command"])
        self.path.with_name(self.path.name + ".bak").unlink(missing_ok=True)
        (self.path.parent / MARKER).unlink(missing_ok=True)
        self.pending = None
        return cid

    def overdue(self, now: float) -> bool:
        return self.pending is not None and now > float(self.pending["deadline"])

    def roll_back(self) -> str | None:
        """Put the previous file back. Returns the command id."""
        if self.pending is None or self.path is None:
            return None
        cid = str(self.pending["command"])
        backup = self.path.with_name(self.path.name + ".bak")
        if backup.exists():
            os.replace(backup, self.path)
        (self.path.parent / MARKER).unlink(missing_ok=True)
        self.pending = None
        return cid
