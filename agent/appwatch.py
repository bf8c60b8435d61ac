"""What the terminal's own insurance application leaves on disk, read without ever sending a person's data
(issue 18; the formats are documented in docs/agent.md, "The terminal application's files"):

* **service events** (``[terminal_app] events_file``): JSON lines the application appends, one per service or
  identity check. The agent reads four fields (``ts``, ``event``, ``method``, ``business``), ignores every other
  field (a name, an ID number, an amount: never parsed into anything kept, never logged) and counts per hour;
  only an hour's counts leave the terminal (``svc`` events), once the hour is over and again if late lines for it
  arrive (each send replaces the hour on the server).
* **interface status** (``status_file``): a JSON object the application rewrites, per business interface whether
  its last attempt reached it. The agent reports, for the interfaces configured, yes/no, the time of the last
  success and a reason word (``iface`` events), when that changes.
* **the address** of the wired or cellular interface (``wired_interface`` / ``cellular_interface``): sent with the
  identity (``identity`` event with ``ip`` and ``link``) only when it changes, so it costs nothing otherwise.

The read position and the open hours are kept in ``appwatch.json`` in the data directory, so a restart neither
counts a line twice nor loses an hour.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from wire.messages import Event

log = logging.getLogger(__name__)

METHODS = ("face", "idcard", "evoucher")  # anything else an application writes counts as "other"
MAX_LINE = 4096  # a longer line is not a service event: skipped unread
MAX_READ = 4 * 1024 * 1024  # bytes read per poll (a backlog is read over several polls)
KEEP_HOURS_S = 7 * 86400  # hours older than this are dropped unsent (the application's file was that late)
MAX_BUSINESS = 16  # business types per hour (the server's bound)
_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_REASON = re.compile(r"^[a-z0-9_]{1,32}$")


class AppWatch:
    def __init__(self, cfg: Any, data_dir: Path) -> None:
        self.cfg = cfg
        self.state_file = data_dir / "appwatch.json"
        self.offset = 0
        self.inode = 0
        self.hours: dict[int, dict[str, Any]] = {}  # hour start -> counts; "sent": what was last sent
        self.reach: dict[str, list[Any]] = {}  # interface -> [ok, reason] last reported
        self.address: list[str] = []  # [ip, link] last reported
        self.skipped = 0  # lines that were not service events (bad JSON, too long, wrong fields): counted only
        self._load()

    # state ---------------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            d = json.loads(self.state_file.read_text())
            self.offset, self.inode = int(d.get("offset", 0)), int(d.get("inode", 0))
            self.hours = {int(k): v for k, v in d.get("hours", {}).items()}
            self.reach = d.get("reach", {})
            self.address = d.get("address", [])
        except (OSError, ValueError, TypeError, AttributeError):
            pass

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"offset": self.offset, "inode": self.inode, "reach": self.reach,
                                       "address": self.address,
                                       "hours": {str(k): v for k, v in self.hours.items()}}))
            os.replace(tmp, self.state_file)
        except OSError as err:
            log.warning("terminal application watch: cannot keep its state in %s: %s", self.state_file,
                        err.strerror)

    # the whole poll --------------------------------------------------------------------------------------
    def poll(self, now: int, identity: dict[str, Any]) -> list[Event]:
        """The events to send now (sequence numbers are the outbox's)."""
        out: list[Event] = []
        if self.cfg.events_file:
            self._read_events(Path(self.cfg.events_file))
            out += self._due_hours(now)
        if self.cfg.status_file and self.cfg.interfaces:
            out += self._reach(Path(self.cfg.status_file), now)
        addr = self.current_address()
        if addr is not None and list(addr) != self.address:
            self.address = list(addr)
            log.info("network address now %s on the %s link", addr[0], addr[1])
            out.append(Event(seq=0, ts=now, kind="identity", data={**identity, "ip": addr[0], "link": addr[1]}))
        if out or self.cfg.events_file:
            self._save()
        return out

    # service events --------------------------------------------------------------------------------------
    def _read_events(self, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        if st.st_ino != self.inode or st.st_size < self.offset:  # rotated or truncated: from its start
            self.inode, self.offset = st.st_ino, 0
        if st.st_size == self.offset:
            return
        try:
            with path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read(MAX_READ)
        except OSError as err:
            log.warning("terminal application events: cannot read %s: %s", path, err.strerror)
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) >= MAX_LINE:  # one endless line: skip it
                self.offset += len(chunk)
                self.skipped += 1
            return
        for line in chunk[:end].split(b"\n"):
            self._count(line)
        self.offset += end + 1

    def _count(self, line: bytes) -> None:
        if not line.strip():
            return
        if len(line) > MAX_LINE:
            self.skipped += 1
            return
        try:
            d = json.loads(line)
        except ValueError:
            self.skipped += 1
            return
        if not isinstance(d, dict):
            self.skipped += 1
            return
        ts = _epoch(d.get("ts"))
        event = d.get("event")
        if ts is None or event not in ("service", "check"):
            self.skipped += 1
            return
        h = self.hours.setdefault(ts // 3600 * 3600, {"services": 0, "face": 0, "idcard": 0, "evoucher": 0,
                                                       "other": 0, "business": {}, "sent": None})
        if event == "service":
            h["services"] += 1
            business = d.get("business")
            if isinstance(business, str) and _WORD.match(business) and (
                    business in h["business"] or len(h["business"]) < MAX_BUSINESS):
                h["business"][business] = h["business"].get(business, 0) + 1
        method = d.get("method")
        if method is not None and method != "":
            h[method if method in METHODS else "other"] += 1

    def _due_hours(self, now: int) -> list[Event]:
        out = []
        for hour in sorted(self.hours):
            h = self.hours[hour]
            if hour + 3600 > now:
                continue  # still open
            if hour < now - KEEP_HOURS_S:
                del self.hours[hour]
                continue
            counts = {k: h[k] for k in ("services", "face", "idcard", "evoucher", "other")}
            counts["business"] = dict(h["business"])
            if h.get("sent") != counts:
                out.append(Event(seq=0, ts=now, kind="svc", data={"hour": hour, **counts}))
                h["sent"] = counts
        for hour in [k for k, h in self.hours.items() if h.get("sent") and k < now - 2 * 86400]:
            del self.hours[hour]  # sent and two days old: a line for it now would be very late
        return out

    # interface reach -------------------------------------------------------------------------------------
    def _reach(self, path: Path, now: int) -> list[Event]:
        try:
            raw = path.read_bytes()[: 256 * 1024]
            d = json.loads(raw)
            ifaces = d.get("interfaces") if isinstance(d, dict) else None
        except (OSError, ValueError):
            return []
        if not isinstance(ifaces, dict):
            return []
        out = []
        for code in self.cfg.interfaces:
            st = ifaces.get(code)
            if not isinstance(st, dict) or not isinstance(st.get("ok"), bool):
                continue
            reason = st.get("reason")
            reason = reason if isinstance(reason, str) and _REASON.match(reason) else ("" if not reason else "other")
            last_ok = _epoch(st.get("last_ok"))
            key = [st["ok"], reason]
            if self.reach.get(code) == key:
                continue
            self.reach[code] = key
            data: dict[str, Any] = {"interface": code, "ok": st["ok"]}
            if last_ok is not None:
                data["last_ok"] = last_ok
            if reason:
                data["reason"] = reason
            log.info("business interface %s: %s%s", code, "reached" if st["ok"] else "not reached",
                     f" ({reason})" if reason else "")
            out.append(Event(seq=0, ts=now, kind="iface", data=data))
        return out

    # address -------------------------------------------------------------------------------------------
    def current_address(self) -> tuple[str, str] | None:
        """(IPv4 address, "wired" | "cellular") of the configured interface carrying the link: the wired one when
        it has an address, else the cellular one."""
        if not self.cfg.wired_interface and not self.cfg.cellular_interface:
            return None
        try:
            addrs = psutil.net_if_addrs()
        except OSError:
            return None
        for name, link in ((self.cfg.wired_interface, "wired"), (self.cfg.cellular_interface, "cellular")):
            if not name:
                continue
            for a in addrs.get(name, []):
                if a.family == socket.AF_INET and a.address:
                    return a.address, link
        return None


def _epoch(value: Any) -> int | None:
    """Epoch seconds from a number or an ISO 8601 time with offset (what the application writes)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if 946_684_800 <= value < 4_102_444_800 else None
    if isinstance(value, str) and len(value) <= 40:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return _epoch(int(dt.timestamp()))
    return None
