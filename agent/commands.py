"""Remote commands on the terminal: verified, recorded durably, executed at most once.

Each command is checked before anything happens: the fleet CA endorsed the signing key,
the Ed25519 signature verifies, the command names this terminal, it has not expired, its
id and nonce were never seen, and its type and parameters are allowed. Anything else is
refused and reported as ``rejected`` with the reason.

The command id is written to ``commands.sqlite`` (synchronous=FULL) *before* the command
acts; a command found ``running`` at start-up is never run again: a reboot whose boot id
changed is reported ``succeeded`` (the unit came back), anything else ``failed``
(interrupted). The server re-sends until it has a result, so a command lost before it was
recorded still runs: exactly once overall.

Results travel as outbox events of kind ``cmd`` (store-and-forward).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from wire import codec
from wire.commands import PARAMS, TYPES, Command, SignedCommand, decode_command

from .config import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    nonce TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    received REAL NOT NULL,
    started REAL,
    finished REAL,
    code INTEGER,
    output TEXT NOT NULL DEFAULT ''
);
"""

#: what the reboot budget counts (commands.reboots_per_hour): each takes the terminal away from the clinic
DESTRUCTIVE = ("reboot", "shutdown")


class Rejected(Exception):
    """The command is refused; the message is the reason reported to the server."""


def _check_params(ctype: str, params: dict[str, object]) -> dict[str, object]:
    spec = PARAMS[ctype]
    unknown = set(params) - set(spec)
    if unknown:
        raise Rejected(f"params: unknown parameter(s) {', '.join(sorted(unknown))} for {ctype}")
    out: dict[str, object] = {}
    for name, (typ, default) in spec.items():
        if name not in params:
            if default is None and name not in ("rollback_minutes",):
                raise Rejected(f"params.{name}: required for {ctype}")
            out[name] = default
            continue
        value = params[name]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise Rejected(f"params.{name}: wrong type {type(value).__name__}")
        out[name] = value
    if ctype == "collect_logs" and not 1 <= int(out["lines"]) <= 5000:  # type: ignore[call-overload]
        raise Rejected("params.lines: must be 1..5000")
    return out


class CommandExecutor:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.cfg = agent.cfg.commands
        path = agent.data_dir / "commands.sqlite"
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._work: queue.Queue[tuple[Command, dict[str, object]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name="commands", daemon=True)
        self.rejected = 0
        self.restart_requested: Callable[[], None] | None = None
        self.stopping = False
        self._handover: str | None = None  # an agent update whose new release is confirming itself
        self._updates = 0  # software updates taken on and not finished (queued or running in the worker)
        self._updates_lock = threading.Lock()

    # lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        from .release import resume
        from .update import recover_pending

        for what in recover_pending(self.agent.data_dir):  # an install cut short before its health check decided
            log.warning("rolled back an unconfirmed install: %s", what)
        try:
            self._handover = resume(self)  # an update of the agent itself: confirm this release, or report
        except (OSError, ValueError, sqlite3.Error) as err:
            log.error("agent handover: %s", err)
        self._recover()
        self._thread.start()

    def stop(self) -> None:
        self.stopping = True
        self._work.put(None)
        self._thread.join(timeout=5)
        self.db.close()

    def _recover(self) -> None:
        """Commands left 'running' by a previous process are never run again."""
        rows = self.db.execute("SELECT id, type, boot_id, received FROM commands WHERE state='running'").fetchall()
        for cid, ctype, boot, received in rows:
            if ctype in ("reboot", "shutdown") and boot != self.agent.boot_id:
                self.report(cid, ctype, "succeeded", 0, f"{ctype} done: the unit is back (boot {self.agent.boot_id[:8]})",
                            received)
            elif ctype == "set_config" and self.agent.guard.pending and self.agent.guard.pending.get("command") == cid:
                continue  # finished by the config guard once the server is reached, or rolled back
            elif cid == self._handover:
                continue  # reported by agent.release once this new release confirmed itself, or rolled back
            else:
                self.report(cid, ctype, "failed", -1, "interrupted: the agent restarted before the command finished;"
                            " not run again", received)

    # receiving -----------------------------------------------------------------------
    def handle(self, payload: bytes) -> None:
        """A message on pf/<sn>/c (agent main thread)."""
        cid, ctype = "?", "?"
        try:
            signed = codec.decode(payload, SignedCommand)
        except codec.DecodeError as err:
            return self._reject(cid, ctype, f"undecodable command: {err.message}")
        try:
            cmd = decode_command(signed.body)
            cid, ctype = cmd.id[:64], cmd.type[:32]
        except msgspec.DecodeError as err:
            return self._reject(cid, ctype, f"undecodable command body: {err}")
        try:
            self._authenticate(signed)
        except Rejected as err:
            # Not signed by an endorsed key: record nothing under its id, or a forged copy published first
            # would block the genuine command with the same id.
            return self._reject(cid, ctype, str(err), nonce=None)
        try:
            params = self._verify(cmd)
        except Rejected as err:
            return self._reject(cid, ctype, str(err), nonce=cmd.nonce)
        row = self.db.execute("SELECT state, code, output, received, started, finished FROM commands WHERE id=?",
                              (cmd.id,)).fetchone()
        if row is not None:
            # a duplicate delivery: say again where it stands, do nothing
            self._emit(cmd.id, cmd.type, row[0], row[1], row[2], row[3], row[4], row[5])
            return
        now = time.time()
        if cmd.type in DESTRUCTIVE:
            busy = self._update_in_progress()
            if busy:
                # not recorded: the server sends it again (resend_after_s) and it runs once the update committed
                # or rolled back; a reboot now would cut the install or the new release's confirmation short
                log.warning("%s %s deferred: %s", cmd.type, cid, busy)
                self._emit(cmd.id, cmd.type, "delivered", None, f"deferred: {busy}; it runs when the server sends "
                           "it again after the update", now, None, None)
                return
            over = self._over_budget(now)
            if over:
                return self._reject(cid, ctype, over, nonce=cmd.nonce)
        try:
            self.db.execute(
                "INSERT INTO commands(id, nonce, type, state, boot_id, received) VALUES (?,?,?,?,?,?)",
                (cmd.id, cmd.nonce, cmd.type, "running", self.agent.boot_id, now),
            )
        except sqlite3.IntegrityError:
            return self._reject(cid, ctype, "replayed nonce", nonce=None)
        except sqlite3.Error as err:
            # cannot make the at-most-once record: do not act (the server will re-send)
            log.error("command %s not recorded (%s); not run", cid, err)
            return
        self._emit(cmd.id, cmd.type, "running", None, "", now, now, None)
        if cmd.type == "software_update":
            with self._updates_lock:
                self._updates += 1
        self._work.put((cmd, params))

    def _update_in_progress(self) -> str:
        """Why a reboot or shutdown must wait (catalogue S8: not while an update is in progress), "" when not."""
        from .release import handing_over

        if self._updates:
            return "a software update is in progress"
        if self._handover and handing_over(self.agent.data_dir, self._handover):
            return "the agent's new release is confirming itself after an update"
        return ""

    def _over_budget(self, now: float) -> str:
        """The reboot budget (catalogue S8): reboots and shutdowns taken on in the last hour, whatever became
        of them, against ``commands.reboots_per_hour``. The reason when over it, "" when within."""
        limit = self.cfg.reboots_per_hour
        n = int(self.db.execute(
            f"SELECT count(*) FROM commands WHERE type IN ({','.join('?' * len(DESTRUCTIVE))}) AND state <> 'rejected' "
            "AND received > ?", (*DESTRUCTIVE, now - 3600)).fetchone()[0])
        if n < limit:
            return ""
        return (f"rate_limited: {n} reboot/shutdown command(s) in the last hour on this terminal, at most {limit} an "
                "hour (commands.reboots_per_hour)")

    def _authenticate(self, signed: SignedCommand) -> None:
        """The fleet CA endorsed the signing key, and the key signed these exact bytes (checked in a child
        process, so the agent never holds ``cryptography``: docs/decisions/019-verify-in-a-child.md)."""
        from wire.signing import SignatureError, verify_detached

        check = getattr(self.agent, "signed_check", verify_detached)
        try:
            check(self.agent.cfg.path(self.agent.cfg.link.ca_file), signed.endorsement, "command",
                            signed.body, signed.sig, self.agent.clock.now(), frozenset(self.cfg.revoked_keys))
        except SignatureError as err:
            raise Rejected(str(err)) from err

    def _verify(self, cmd: Command) -> dict[str, object]:
        """An authentic command: is it for us, in time, new, and allowed?"""
        now = self.agent.clock.now()
        if cmd.sn != self.agent.sn:
            raise Rejected(f"command is for {cmd.sn!r}, this terminal is {self.agent.sn!r}")
        if now > cmd.expires:
            raise Rejected(f"expired {int(now - cmd.expires)} s ago")
        if cmd.issued > now + 600:
            raise Rejected("issued in the future")
        if cmd.type not in TYPES:
            raise Rejected(f"unknown command type {cmd.type!r}")
        if self.cfg.allowed and cmd.type not in self.cfg.allowed:
            raise Rejected(f"command type {cmd.type!r} is not allowed on this terminal")
        if self.db.execute("SELECT 1 FROM commands WHERE nonce=? AND id<>?", (cmd.nonce, cmd.id)).fetchone():
            raise Rejected("replayed nonce")
        return _check_params(cmd.type, dict(cmd.params))

    def _reject(self, cid: str, ctype: str, reason: str, nonce: str | None = None) -> None:
        self.rejected += 1
        log.warning("command %s (%s) rejected: %s", cid, ctype, reason)
        now = time.time()
        if cid != "?" and nonce:
            try:
                self.db.execute("INSERT OR IGNORE INTO commands(id, nonce, type, state, boot_id, received, finished, "
                                "code, output) VALUES (?,?,?,?,?,?,?,?,?)",
                                (cid, nonce, ctype, "rejected", self.agent.boot_id, now, now, -1, reason))
            except sqlite3.Error:
                pass
        self._emit(cid, ctype, "rejected", -1, reason, now, None, now)

    # executing (worker thread) ---------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            cmd, params = item
            started = time.time()
            try:
                code, output = self._run(cmd, params)
            except Exception as err:  # a failing command is a result, not a crash
                log.exception("command %s failed", cmd.id)
                code, output = 1, f"{type(err).__name__}: {err}"
            if cmd.type == "software_update":
                with self._updates_lock:
                    self._updates -= 1
            self.agent.events.put(("cmd_done", (cmd.id, cmd.type, code, output, started)))

    def _run(self, cmd: Command, params: dict[str, object]) -> tuple[int, str]:
        from drivers.idcard.mask import redact_text

        from .logs import RING

        a = self.agent
        if cmd.type == "test_page":
            with a.peripherals.use("printer") as printer:
                printer.print_test_page(a.sn, _now_dt(a), agent_version=_version())
            return 0, "test page printed"
        if cmd.type == "idcard_selftest":
            with a.peripherals.use("idcard") as reader:
                result = reader.self_test(read=bool(params["read"]))
            return (0 if result.get("sam_ok") else 1), redact_text(_json(result))
        if cmd.type == "modem_diag":
            with a.peripherals.use("modem") as modem:
                st = modem.status()
            return 0, _json(st.as_dict())
        if cmd.type == "network_check":
            return self._network_check()
        if cmd.type == "collect_logs":
            lines = list(RING.lines)[-int(params["lines"]):]  # type: ignore[call-overload]
            return 0, redact_text("\n".join(lines))
        if cmd.type in ("reboot", "shutdown"):
            argv = self.cfg.reboot_command if cmd.type == "reboot" else self.cfg.shutdown_command
            log.warning("%s requested by command %s", cmd.type, cmd.id)
            subprocess.Popen(argv, start_new_session=True)  # noqa: S603 - configured by the operator
            time.sleep(60)  # the unit goes down; if it does not, report that
            return 1, f"{cmd.type} command ran but the unit did not go down within 60 s"
        if cmd.type == "set_config":
            return self._set_config(cmd, params)
        if cmd.type == "software_update":
            from .update import apply_update

            return apply_update(a, cmd, params)
        return 1, f"no handler for {cmd.type}"

    def _network_check(self) -> tuple[int, str]:
        a = self.agent
        out: dict[str, object] = {"connected": a.link.connected}
        ok = True
        if "modem" in a.peripherals.ports:
            try:
                with a.peripherals.use("modem") as modem:
                    st = modem.status().as_dict()
                out["modem"] = {k: st.get(k) for k in ("sim", "registration", "signal", "operator")}
            except Exception as err:
                out["modem"] = f"error: {err}"
                ok = False
        host, port = a.cfg.link.host, a.cfg.link.port
        t0 = time.monotonic()
        try:
            addrs = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
            out["dns_ms"] = round((time.monotonic() - t0) * 1000, 1)
            out["dns"] = sorted({x[4][0] for x in addrs})
        except OSError as err:
            out["dns"] = f"error: {err}"
            ok = False
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=10) as s:
                out["tcp_connect_ms"] = round((time.monotonic() - t0) * 1000, 1)
                ctx = ssl.create_default_context(cafile=str(a.cfg.path(a.cfg.link.ca_file)))
                ctx.load_cert_chain(str(a.cfg.path(a.cfg.link.cert_file)), str(a.cfg.path(a.cfg.link.key_file)),
                                    password=a.cfg.link.key_passphrase or None)
                t1 = time.monotonic()
                with ctx.wrap_socket(s, server_hostname=host):
                    out["tls_handshake_ms"] = round((time.monotonic() - t1) * 1000, 1)
        except (OSError, ssl.SSLError) as err:
            out["broker"] = f"error: {err}"
            ok = False
        info = a.link.tcp_info()
        if info is not None:
            out["mqtt_rtt_ms"] = round(info.rtt_ms, 1)
            out["mqtt_rttvar_ms"] = round(info.rttvar_ms, 1)
        return (0 if ok else 1), _json(out)

    def _set_config(self, cmd: Command, params: dict[str, object]) -> tuple[int, str]:
        from .config_guard import stage_change

        path = self.agent.config_path
        if path is None:
            return 1, "set_config: the agent was not started from a configuration file"
        try:
            summary = stage_change(path, cmd.id, params["changes"], float(  # type: ignore[arg-type]
                params["rollback_minutes"] or self.cfg.rollback_minutes), self.agent.clock.now())
        except ConfigError as err:
            return 1, f"refused: {err}"
        # The new configuration is applied by restarting the agent in place; the guard at start-up
        # confirms it once the server is reachable again, or puts the old file back.
        self.agent.events.put(("restart", cmd.id))
        return 0, summary

    # results (main thread) --------------------------------------------------------------
    def finish(self, cid: str, ctype: str, code: int, output: str, started: float) -> None:
        from .release import done, handing_over

        if code == 0 and (ctype == "set_config" or (ctype == "software_update"
                                                    and handing_over(self.agent.data_dir, cid))):
            self.db.execute("UPDATE commands SET started=? WHERE id=?", (started, cid))
            return  # the result comes after the restart: from the config guard, or from the new agent release
        state = "succeeded" if code == 0 else "failed"
        row = self.db.execute("SELECT received FROM commands WHERE id=?", (cid,)).fetchone()
        self.report(cid, ctype, state, code, output, row[0] if row else started, started)
        if ctype == "software_update":
            done(self.agent.data_dir, cid)

    def report(self, cid: str, ctype: str, state: str, code: int, output: str, received: float,
               started: float | None = None) -> None:
        output = output[: self.cfg.max_output]
        now = time.time()
        self.db.execute("UPDATE commands SET state=?, code=?, output=?, started=coalesce(started, ?), finished=? "
                        "WHERE id=?", (state, code, output, started, now, cid))
        self._emit(cid, ctype, state, code, output, received, started, now)

    def _emit(self, cid: str, ctype: str, state: str, code: int | None, output: str, received: float | None,
              started: float | None, finished: float | None) -> None:
        from wire.messages import Event

        self.agent.store_event(Event(seq=0, ts=int(self.agent.clock.now()), kind="cmd", data={
            "id": cid, "type": ctype, "state": state, "code": code, "output": output,
            "received": received, "started": started, "finished": finished}))


def _json(obj: object) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, default=str)


def _now_dt(agent: Any):  # type: ignore[no-untyped-def]
    from datetime import datetime, timedelta, timezone

    return datetime.fromtimestamp(agent.clock.now(), timezone(timedelta(hours=8)))


def _version() -> str:
    from wire import __version__

    return __version__


def reexec(config_path: Path) -> None:
    """Restart the agent in place (same PID, so systemd and the watchdog keep tracking it)."""
    os.execv(sys.executable, [sys.executable, "-m", "posfleet", "agent", "run", "--config", str(config_path)])
