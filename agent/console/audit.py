"""The console's audit trail: one JSON line per session event and command, in the data dir.

The file is the terminal's own record (an engineer's visit can be reconstructed from it
even if the server never hears of it). :meth:`AuditLog.take_events` hands the lines not yet
reported to the agent as telemetry events (kind ``console``); the agent stores them in its
outbox, which carries them to the server when the link returns. The read offset is kept
in a small file next to the log, so a restart neither loses nor repeats them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from wire.messages import Event

log = logging.getLogger(__name__)

EVENT_KIND = "console"
MAX_LINE = 4096


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(path.name + ".reported")
        self._lock = threading.Lock()

    def write(self, ts: float, event: str, **fields: Any) -> dict[str, Any]:
        from drivers.idcard.mask import redact_text

        record = {"ts": round(ts, 3), "event": event, **fields}
        line = redact_text(json.dumps(record, ensure_ascii=False, default=str))
        if len(line.encode()) > MAX_LINE:
            record = {k: v for k, v in record.items() if k in ("ts", "event", "session", "engineer", "command",
                                                                  "result")}
            record["truncated"] = True
            line = redact_text(json.dumps(record, ensure_ascii=False, default=str))
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as err:  # a full disk must not take the console down
                log.error("console audit not written to %s: %s", self.path, err)
        log.info("console audit: %s", line)
        return json.loads(line)  # type: ignore[no-any-return]

    def read(self, limit: int = 1000) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for line in lines[-limit:]:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def take_events(self, limit: int = 200) -> list[Event]:
        """Audit records not yet handed over, as events for the outbox (oldest first).

        Call from the agent loop and store each with the agent's outbox; they are marked as
        handed over at once (the outbox is durable from there)."""
        with self._lock:
            try:
                offset = int(self.offset_path.read_text() or 0)
            except (OSError, ValueError):
                offset = 0
            try:
                with open(self.path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if offset > size:  # the log was rotated or replaced: start again
                        offset = 0
                    f.seek(offset)
                    events: list[Event] = []
                    while len(events) < limit:
                        line = f.readline()
                        if not line or not line.endswith(b"\n"):
                            break
                        offset += len(line)
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue
                        events.append(Event(seq=0, ts=int(rec.pop("ts", 0)), kind=EVENT_KIND, data=rec))
            except OSError:
                return []
            try:
                tmp = self.offset_path.with_name(self.offset_path.name + ".tmp")
                tmp.write_text(str(offset))
                tmp.replace(self.offset_path)
            except OSError as err:
                log.error("console audit offset not saved: %s", err)
            return events
