"""Talk to a terminal's diagnostic console over a serial cable (or any pyserial URL).

Stop-and-wait over the frames of wire/console.py: send a request, expect an ACK
within ``ack_timeout`` (else send it again), then the reply's parts; ask again for a part
that did not arrive. The terminal keeps its last reply, so a request sent twice never runs
twice.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import serial

from drivers.transport import close_quietly
from wire.console import ACK, MAX_PAYLOAD, REP, REQ, RESEND, Decoder, Frame, encode

# Seconds a command may take on the terminal (after its ACK) before we ask again.
COMMAND_TIMEOUTS = {"selftest": 120.0, "netcheck": 60.0, "reenrol": 30.0}
DEFAULT_TIMEOUT = 15.0
STALE_S = 0.3
# Acknowledged, no part of the reply yet: ask again after 2 s, 4 s, ... at most every 15 s.
NUDGE_FIRST_S, NUDGE_MAX_S = 2.0, 15.0


class ConsoleError(Exception):
    """Base of what the console client raises."""


class PortError(ConsoleError):
    """The serial port cannot be opened or used."""


class NoAnswer(ConsoleError):
    """The terminal's console did not answer (wrong port, console not enabled, cable)."""


class Refused(ConsoleError):
    """The terminal answered no: ``code`` is usage, refused, failed or no_session."""

    def __init__(self, code: str, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply or {}


class SessionClosed(Refused):
    """The terminal closed the session (idle, restarted): call :meth:`ConsoleClient.hello` again."""


class ConsoleClient:
    def __init__(self, port: str, baud: int = 115200, *, ack_timeout: float = 1.0, retries: int = 6,
                 client_name: str = "posfleet diag") -> None:
        self.port_url = port
        self.baud = baud
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.client_name = client_name
        self._port: serial.SerialBase | None = None
        self._decoder = Decoder()
        self._seq = secrets.randbelow(0x10000)
        self.session: str | None = None
        self.nonce = ""
        self.info: dict[str, Any] = {}
        self.engineer: dict[str, Any] | None = None
        self.retransmissions = 0

    # lifecycle ---------------------------------------------------------------------------
    def open(self) -> ConsoleClient:
        if self._port is None:
            try:
                self._port = serial.serial_for_url(self.port_url, baudrate=self.baud, timeout=0.05, write_timeout=2.0)
            except (serial.SerialException, OSError, ValueError) as err:
                raise PortError(f"cannot open {self.port_url}: {err}") from err
        return self

    def close(self) -> None:
        port, self._port = self._port, None
        close_quietly(port)

    def __enter__(self) -> ConsoleClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        if self.session is not None and self._port is not None:
            try:
                self.request("bye", timeout=2.0)
            except ConsoleError:
                pass
        self.close()

    # session -----------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        data = self.call("hello", {"client": self.client_name, "nonce": secrets.token_hex(8)})
        self.session = str(data["session"])
        self.nonce = str(data["nonce"])
        self.info = data
        self.engineer = None
        return data

    def auth(self, credential_file: str | Path) -> dict[str, Any]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from wire.credentials import prove

        try:
            doc = json.loads(Path(credential_file).read_text(encoding="utf-8"))
            key = serialization.load_pem_private_key(doc["private_key"].encode(), None)
            cred = doc["credential"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConsoleError(f"{credential_file}: not a credential file ({err})") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConsoleError(f"{credential_file}: the key is not EC")
        if self.session is None:
            self.hello()
        proof = prove(key, str(self.info["sn"]), str(self.session), self.nonce)
        try:
            data = self.call("auth", {"credential": cred, "proof": proof})
        except Refused as err:
            self.nonce = str(err.reply.get("nonce", self.nonce))
            raise
        self.nonce = str(data.get("nonce", self.nonce))
        self.engineer = data
        return data

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Run one command; its data, or :class:`Refused` with the terminal's reason."""
        reply = self.request(cmd, args, timeout)
        if not reply.get("ok"):
            code, message = str(reply.get("code", "failed")), str(reply.get("error", "refused"))
            if code == "no_session":
                self.session = None
                raise SessionClosed(code, message, reply)
            raise Refused(code, message, reply)
        return reply.get("data")

    # frames -------------------------------------------------------------------------------
    def request(self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"cmd": cmd, "args": args or {}}
        if self.session is not None:
            body["session"] = self.session
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if len(payload) > MAX_PAYLOAD:
            raise ConsoleError(f"request of {len(payload)} bytes is too long for one frame ({MAX_PAYLOAD})")
        wait = timeout if timeout is not None else COMMAND_TIMEOUTS.get(cmd, DEFAULT_TIMEOUT)
        raw = self._exchange(payload, wait)
        try:
            reply = json.loads(raw)
        except ValueError as err:
            raise ConsoleError(f"the terminal's reply is not JSON: {err}") from err
        if not isinstance(reply, dict):
            raise ConsoleError("the terminal's reply is not an object")
        return reply

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _write(self, frame: Frame) -> None:
        if self._port is None:
            self.open()
        assert self._port is not None
        try:
            self._port.write(encode(frame))
            self._port.flush()
        except (serial.SerialException, OSError) as err:
            raise PortError(f"write to {self.port_url} failed: {err}") from err

    def _read_frames(self, last_rx: list[float]) -> list[Frame]:
        assert self._port is not None
        try:
            data = self._port.read(self._port.in_waiting or 1)
        except (serial.SerialException, OSError) as err:
            raise PortError(f"read from {self.port_url} failed: {err}") from err
        now = time.monotonic()
        if data:
            last_rx[0] = now
            return self._decoder.feed(data)
        if self._decoder.pending and now - last_rx[0] > STALE_S:
            return self._decoder.flush_stale()
        return []

    def _exchange(self, payload: bytes, timeout: float) -> bytes:
        if self._port is None:
            self.open()
        seq = self._next_seq()
        req = Frame(REQ, seq, payload)
        self._write(req)
        sent = time.monotonic()
        last_rx = [sent]
        acked = False
        parts: dict[int, bytes] = {}
        total: int | None = None
        tries = resend_rounds = 0
        last_part = sent
        acked_at = 0.0
        nudge = NUDGE_FIRST_S
        while True:
            for f in self._read_frames(last_rx):
                if f.seq != seq:
                    continue  # a late answer to an earlier request
                if f.type in (ACK, REP) and not acked:
                    acked, acked_at = True, time.monotonic()
                if f.type == REP:
                    total = f.total
                    parts[f.part] = f.payload
                    last_part = time.monotonic()
            if total is not None and len(parts) >= total:
                return b"".join(parts[i] for i in range(total))
            now = time.monotonic()
            if not acked and now - sent > self.ack_timeout:
                tries += 1
                if tries > self.retries:
                    raise NoAnswer(f"no answer from a console on {self.port_url} "
                                   f"(sent {tries} times; is the console enabled on this port and baud rate?)")
                self.retransmissions += 1
                self._write(req)
                sent = now
            elif total is not None and now - last_part > 0.5:
                resend_rounds += 1
                if resend_rounds > self.retries * 2:
                    raise NoAnswer("the reply kept arriving damaged; check the cable")
                for i in range(total):
                    if i not in parts:
                        self.retransmissions += 1
                        self._write(Frame(RESEND, seq, b"", i, total))
                last_part = now
            elif acked and total is None and now - acked_at > timeout:
                raise NoAnswer(f"the terminal acknowledged but sent no reply within {timeout:g} s")
            elif acked and total is None and now - sent > nudge:
                # No part yet: the reply may have been lost whole. Ask again (same seq, same bytes):
                # a terminal that has finished sends its stored reply, one still working answers
                # once it is done; never runs the command twice.
                self.retransmissions += 1
                self._write(req)
                sent = now
                nudge = min(nudge * 2, NUDGE_MAX_S)
