"""The diagnostic console: serves the framed protocol on the configured serial device.

Runs in its own thread beside the agent loop and touches the agent only through calls that
are safe from another thread (status snapshot, the peripherals' per-port locks, the outbox's
own lock, the event queue). One session at a time: a new ``hello`` ends the previous session
(there is one cable); a session idle for ``idle_minutes`` is closed.

Reliability is stop-and-wait: the laptop sends a REQ; the terminal answers ACK at once, runs
the command, and sends the reply in numbered REP parts. A REQ that arrives again (same seq,
same bytes: the laptop missed the ACK or the reply) gets the stored reply again without
running the command twice; a missing part is asked for with RESEND.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial

from drivers.errors import DriverError
from drivers.transport import close_quietly
from wire.console import ACK, REP, REQ, RESEND, Decoder, Frame, FramingError, encode, split
from wire.credentials import CredentialRefused, Endorsement, check_standing, load_revoked, verify

from ..config import ConsoleConfig
from .audit import AuditLog
from .commands import REGISTRY, SECRET_KEY, Failed, Usage

log = logging.getLogger(__name__)

STALE_S = 0.3  # a partial frame with no byte for this long is dropped
PART_SIZE = 1024
AUDIT_FILE = "console-audit.jsonl"
CHANGE_FILE = "console-change.json"


@dataclass
class Session:
    id: str
    started: float
    client: str
    last: float = field(default_factory=time.monotonic)
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    engineer: Endorsement | None = None
    commands: int = 0

    @property
    def who(self) -> str:
        return f"{self.engineer.engineer} ({self.engineer.id})" if self.engineer else "anonymous"


def _err(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "code": code, "error": message, **extra}


def _audit_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        if SECRET_KEY.search(k) or (name == "config set" and k == "value" and SECRET_KEY.search(str(args.get("key")))):
            out[k] = "***"
        elif isinstance(v, str) and len(v) > 120:
            out[k] = f"<{len(v)} characters>"
        else:
            out[k] = v
    return out


class Console:
    def __init__(self, agent: Any, cfg: ConsoleConfig) -> None:
        self.agent = agent
        self.cfg = cfg
        self.audit = AuditLog(Path(agent.data_dir) / AUDIT_FILE)
        self.session: Session | None = None
        self.decoder = Decoder()
        self._port: serial.SerialBase | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._last_reply: tuple[int, int, list[Frame]] | None = None
        self._after: list[Callable[[], None]] = []
        self._open_error = ""
        self._tracked: dict[str, Any] | None = None

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._resolve_change()
        self._thread.start()
        log.info("diagnostic console on %s", self.cfg.port)

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5)
        self._end_session("agent stopping")
        self._close()

    def take_events(self, limit: int = 200) -> list[Any]:
        """Audit records not yet reported, as ``wire.messages.Event`` (kind ``console``) for the
        outbox. Call from the agent loop: ``for ev in console.take_events(): agent.store_event(ev)``."""
        return self.audit.take_events(limit)

    def after_reply(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the reply has gone out (restart, reboot)."""
        self._after.append(action)

    # serial ------------------------------------------------------------------------------
    def _open(self) -> bool:
        try:
            self._port = serial.serial_for_url(self.cfg.port, baudrate=self.cfg.baud, timeout=0.1, write_timeout=2.0)
        except (serial.SerialException, OSError, ValueError) as err:
            if str(err) != self._open_error:
                log.warning("console port %s not available (retrying): %s", self.cfg.port, err)
            self._open_error = str(err)
            return False
        if self._open_error:
            log.info("console port %s open", self.cfg.port)
        self._open_error = ""
        self.decoder.reset()
        return True

    def _close(self) -> None:
        port, self._port = self._port, None
        close_quietly(port)

    def _send(self, frame: Frame) -> None:
        if self._port is None:
            return
        try:
            self._port.write(encode(frame))
            self._port.flush()
        except (serial.SerialException, OSError) as err:
            log.warning("console write failed: %s", err)
            self._close()

    def _run(self) -> None:
        last_rx = time.monotonic()
        while not self._stop.is_set():
            if self._port is None and not self._open():
                self._stop.wait(2.0)
                continue
            assert self._port is not None
            try:
                data = self._port.read(self._port.in_waiting or 1)
            except (serial.SerialException, OSError) as err:
                log.warning("console read failed: %s", err)
                self._close()
                self._stop.wait(1.0)
                continue
            now = time.monotonic()
            if data:
                last_rx = now
                frames = self.decoder.feed(data)
            elif self.decoder.pending and now - last_rx > STALE_S:
                frames = self.decoder.flush_stale()
            else:
                frames = []
            for f in frames:
                self._on_frame(f)
            self._check_idle()
            self._watch_change()

    # frames ------------------------------------------------------------------------------
    def _on_frame(self, f: Frame) -> None:
        if f.type == RESEND:
            if self._last_reply and self._last_reply[0] == f.seq and f.part < len(self._last_reply[2]):
                self._send(self._last_reply[2][f.part])
            return
        if f.type != REQ:
            return
        crc = zlib.crc32(f.payload)
        if self._last_reply and self._last_reply[:2] == (f.seq, crc):
            self._send(Frame(ACK, f.seq))
            for part in self._last_reply[2]:
                self._send(part)
            return
        self._send(Frame(ACK, f.seq))
        body = self._reply_bytes(self._handle(f.payload))
        try:
            parts = split(REP, f.seq, body, PART_SIZE)
        except FramingError:
            parts = split(REP, f.seq, self._reply_bytes(_err("failed", "reply too large")), PART_SIZE)
        self._last_reply = (f.seq, crc, parts)
        for part in parts:
            self._send(part)
        after, self._after = self._after, []
        for action in after:
            action()

    def _reply_bytes(self, reply: dict[str, Any]) -> bytes:
        from drivers.idcard.mask import redact_text

        text = redact_text(json.dumps(reply, ensure_ascii=False, default=str, separators=(",", ":")))
        body = text.encode()
        if len(body) > self.cfg.max_reply_bytes:
            body = json.dumps(_err("failed", f"reply of {len(body)} bytes is over the console's limit of "
                                   f"{self.cfg.max_reply_bytes}; ask for less")).encode()
        return body

    # requests ----------------------------------------------------------------------------
    def _handle(self, payload: bytes) -> dict[str, Any]:
        try:
            req = json.loads(payload)
            name = req["cmd"]
            args = req.get("args") or {}
            if not isinstance(name, str) or not isinstance(args, dict):
                raise TypeError("cmd must be text and args an object")
        except (ValueError, KeyError, TypeError) as err:
            return _err("usage", f"not a console request: {err}")
        if name == "hello":
            return self._hello(args)
        session = self.session
        if session is None or req.get("session") != session.id:
            return _err("no_session", "no session open (closed after "
                        f"{self.cfg.idle_minutes:g} min idle, or the agent restarted): connect again")
        session.last = time.monotonic()
        if name == "bye":
            self._end_session("bye")
            return {"ok": True, "data": {"bye": session.id}}
        if name == "auth":
            return self._auth(session, args)
        cmd = REGISTRY.get(name)
        if cmd is None:
            return _err("usage", f"unknown command {name!r}; `help` lists them")
        session.commands += 1
        audit = {"session": session.id, "engineer": session.engineer.engineer if session.engineer else None,
                 "credential": session.engineer.id if session.engineer else None, "command": name,
                 "args": _audit_args(name, args), "changes": cmd.changes}
        if cmd.changes:
            reason = self._authorised(session)
            if reason:
                self.audit.write(self.agent.clock.now(), "command", **audit, result="refused", reason=reason)
                return _err("refused", reason)
        try:
            data = cmd.func(self, session, args)
        except Usage as err:
            reply, result = _err("usage", str(err)), "usage"
        except Failed as err:
            reply, result = _err("failed", str(err)), "failed"
        except DriverError as err:
            reply, result = _err("failed", f"{type(err).__name__}: {err}"), "failed"
        except Exception as err:  # a bug in one command must not take the console down
            log.exception("console command %s failed", name)
            reply, result = _err("failed", f"internal error: {type(err).__name__}: {err}"), "error"
        else:
            reply, result = {"ok": True, "data": data}, "ok"
        self.audit.write(self.agent.clock.now(), "command", **audit, result=result,
                         **({"reason": reply["error"]} if not reply["ok"] else {}))
        return reply

    def _hello(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.session is not None:
            self._end_session("replaced by a new connection")
        client = str(args.get("client", ""))[:80]
        s = Session(secrets.token_hex(4), self.agent.clock.now(), client)
        self.session = s
        self.audit.write(s.started, "session_start", session=s.id, client=client)
        return {"ok": True, "data": {
            "session": s.id, "nonce": s.nonce, "sn": self.agent.sn, "county": self.cfg.county,
            "version": _version(), "idle_minutes": self.cfg.idle_minutes, "clock": self.agent.clock.now(),
            "clock_checked": bool(getattr(self.agent, "clock_ok", False)),
            "commands": [{"name": c.name, "help": c.help, "usage": c.usage, "changes": c.changes}
                         for c in REGISTRY.values()]}}

    def _auth(self, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        from cryptography import x509

        nonce, session.nonce = session.nonce, secrets.token_hex(16)  # one answer per challenge
        name = None
        try:
            ca_path = self.agent.cfg.path(self.cfg.engineer_ca_file)
            try:
                ca_cert = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
            except (OSError, ValueError) as err:
                raise CredentialRefused(f"the fleet CA certificate {ca_path} cannot be read: {err}") from err
            cred = args.get("credential")
            if isinstance(cred, dict):
                name = _peek_name(cred)
            e = verify(cred, str(args.get("proof", "")), ca_cert=ca_cert, sn=self.agent.sn, session=session.id,
                       nonce=nonce, now=self.agent.clock.now(), county=self.cfg.county, revoked=self._revoked())
        except CredentialRefused as err:
            self.audit.write(self.agent.clock.now(), "auth", session=session.id, engineer=name, result="refused",
                             reason=str(err))
            return _err("refused", str(err), nonce=session.nonce)
        session.engineer = e
        self.audit.write(self.agent.clock.now(), "auth", session=session.id, engineer=e.engineer, credential=e.id,
                         scope=e.scope, expires=e.expires, result="ok")
        return {"ok": True, "data": {"engineer": e.engineer, "credential": e.id, "scope": e.scope,
                                     "expires": e.expires, "nonce": session.nonce}}

    def _revoked(self) -> set[str]:
        listed = load_revoked(self.agent.cfg.path(self.cfg.revoked_file) if self.cfg.revoked_file else None)
        return listed | set(self.cfg.revoked)

    def _authorised(self, session: Session) -> str:
        if session.engineer is None:
            return "this command changes the terminal: it needs an engineer credential (`auth`) first"
        try:
            check_standing(session.engineer, now=self.agent.clock.now(), county=self.cfg.county,
                           revoked=self._revoked())
        except CredentialRefused as err:
            return str(err)
        return ""

    def _check_idle(self) -> None:
        s = self.session
        if s is not None and time.monotonic() - s.last > self.cfg.idle_minutes * 60:
            self._end_session(f"idle for {self.cfg.idle_minutes:g} min")

    def _end_session(self, why: str) -> None:
        s, self.session = self.session, None
        if s is not None:
            self.audit.write(self.agent.clock.now(), "session_end", session=s.id,
                             engineer=s.engineer.engineer if s.engineer else None, commands=s.commands, reason=why)

    # configuration changes made from the console ------------------------------------------
    def track_change(self, cid: str, key: str, digest: str) -> None:
        """Remember a change so its outcome (confirmed / rolled back) is audited after the restart."""
        # Resolved by the next process (this one's guard knows nothing of the change).
        tracked = {"change": cid, "key": key, "sha256": digest, "session": self.session.id if self.session else None,
                   "engineer": self.session.engineer.engineer if self.session and self.session.engineer else None}
        path = Path(self.agent.data_dir) / CHANGE_FILE
        try:
            path.write_text(json.dumps(tracked))
        except OSError as err:
            log.error("cannot record the console change %s: %s", cid, err)

    def _resolve_change(self) -> None:
        path = Path(self.agent.data_dir) / CHANGE_FILE
        try:
            self._tracked = json.loads(path.read_text())
        except (OSError, ValueError):
            self._tracked = None
            return
        self._watch_change()

    def _watch_change(self) -> None:
        t = self._tracked
        if t is None:
            return
        guard = getattr(self.agent, "guard", None)
        pending = getattr(guard, "pending", None)
        if pending is not None and pending.get("command") == t["change"]:
            return  # waiting for the server under the new configuration
        import hashlib

        cfg_path = getattr(self.agent, "config_path", None)
        try:
            now_digest = hashlib.sha256(Path(cfg_path).read_bytes()).hexdigest() if cfg_path else ""
        except OSError:
            now_digest = ""
        outcome = "confirmed" if now_digest == t["sha256"] else "rolled back"
        self.audit.write(self.agent.clock.now(), "config_change", change=t["change"], key=t["key"],
                         engineer=t.get("engineer"), session=t.get("session"), result=outcome)
        self._tracked = None
        (Path(self.agent.data_dir) / CHANGE_FILE).unlink(missing_ok=True)


def _peek_name(cred: dict[str, Any]) -> str | None:
    """The engineer's name from a credential that may not verify, for the audit trail only."""
    import base64

    try:
        return str(json.loads(base64.b64decode(str(cred.get("endorsement", "")))).get("engineer"))[:80]
    except (ValueError, TypeError, AttributeError):
        return None


def _version() -> str:
    from wire import __version__

    return __version__
