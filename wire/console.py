"""Frames for the diagnostic console's serial line: pure functions on bytes, no I/O.

A frame on the wire::

    A5 5A | type:1 | seq:2 | part:1 | total:1 | length:2 | hcrc:1 | payload:length | crc32:4

``hcrc`` is a CRC-8 over the six header bytes after the magic, so a corrupted length is
refused at once instead of swallowing the frames that follow; the CRC-32 covers header and
payload. The decoder never raises on what comes off the line: bytes that do not form a
valid frame are skipped (counted as garbage) and it resynchronises on the next magic.
A frame whose bytes were dropped is found out by its CRC when the following bytes fill it
up, or by :meth:`Decoder.flush_stale` when the line has gone quiet.

Frame types: REQ (laptop to terminal, one JSON request), ACK (terminal: "got seq, working"),
REP (terminal: part ``part`` of ``total`` of the JSON reply to ``seq``) and RESEND (laptop:
"send part ``part`` of the reply to ``seq`` again").
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

# The console's commands, as a request names them (``{"cmd": ...}``): the terminal's catalogue
# (agent/console/commands.py registers exactly these, checked at registration and by
# tests/console/test_wire_shared.py) and what the laptop offers when the terminal does not list its own.
COMMANDS = ("help", "status", "selftest", "netcheck", "logs", "config show", "versions", "outbox", "outbox clear",
            "config set", "reboot", "reenrol", "reenrol install")
# A setting whose value is secret: shown as *** by the terminal, and kept out of the laptop's echo and history.
SECRET_KEY = re.compile(r"passphrase|password|secret|token|private", re.I)

MAGIC = b"\xa5\x5a"
REQ, ACK, REP, RESEND = 1, 2, 3, 4
TYPES = frozenset({REQ, ACK, REP, RESEND})
MAX_PAYLOAD = 2048
_HEAD = struct.Struct(">BHBBH")  # type, seq, part, total, length
HEADER_LEN = len(MAGIC) + _HEAD.size + 1
TRAILER_LEN = 4
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN


class FramingError(ValueError):
    """A frame cannot be built (payload too long, bad field); never raised on received bytes."""


def _crc8_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table.append(c)
    return table


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8 (polynomial 0x07, init 0), as used by SMBus."""
    c = 0
    for b in data:
        c = _CRC8[c ^ b]
    return c


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    part: int = 0
    total: int = 1


def encode(frame: Frame) -> bytes:
    if frame.type not in TYPES:
        raise FramingError(f"unknown frame type {frame.type}")
    if not 0 <= frame.seq <= 0xFFFF:
        raise FramingError(f"seq {frame.seq} out of range")
    if not 1 <= frame.total <= 255 or not 0 <= frame.part < frame.total:
        raise FramingError(f"part {frame.part} of {frame.total} is not valid")
    if len(frame.payload) > MAX_PAYLOAD:
        raise FramingError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    head = _HEAD.pack(frame.type, frame.seq, frame.part, frame.total, len(frame.payload))
    body = MAGIC + head + bytes([crc8(head)]) + frame.payload
    return body + struct.pack(">I", zlib.crc32(body))


def split(type_: int, seq: int, payload: bytes, part_size: int = 1024) -> list[Frame]:
    """Cut a long payload into numbered parts (at most 255)."""
    if part_size < 1 or part_size > MAX_PAYLOAD:
        raise FramingError(f"part size {part_size} out of range")
    chunks = [payload[i : i + part_size] for i in range(0, len(payload), part_size)] or [b""]
    if len(chunks) > 255:
        raise FramingError(f"payload of {len(payload)} bytes needs more than 255 parts")
    return [Frame(type_, seq, c, i, len(chunks)) for i, c in enumerate(chunks)]


class Decoder:
    """Incremental decoder: feed it whatever the line delivered, get the valid frames back."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.garbage_bytes = 0
        self.crc_errors = 0
        self.header_errors = 0
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        return self._parse()

    def flush_stale(self) -> list[Frame]:
        """The line went quiet with a partial frame held: its header lied (dropped bytes or a
        corrupted length). Skip it and look for complete frames in what is left."""
        out: list[Frame] = []
        while self._buf:
            out += self._parse()
            if self._buf:
                self._skip(1)
        return out

    def reset(self) -> None:
        self.garbage_bytes += len(self._buf)
        self._buf.clear()

    def _skip(self, n: int) -> None:
        self.garbage_bytes += n
        del self._buf[:n]

    def _parse(self) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        while True:
            i = buf.find(MAGIC)
            if i < 0:
                keep = 1 if buf[-1:] == MAGIC[:1] else 0
                self._skip(len(buf) - keep)
                return out
            if i:
                self._skip(i)
            if len(buf) < HEADER_LEN:
                return out
            head = bytes(buf[2 : 2 + _HEAD.size])
            type_, seq, part, total, length = _HEAD.unpack(head)
            if (
                buf[HEADER_LEN - 1] != crc8(head)
                or type_ not in TYPES
                or length > MAX_PAYLOAD
                or total == 0
                or part >= total
            ):
                self.header_errors += 1
                self._skip(1)
                continue
            need = HEADER_LEN + length + TRAILER_LEN
            if len(buf) < need:
                return out
            body = bytes(buf[: HEADER_LEN + length])
            (crc,) = struct.unpack(">I", buf[HEADER_LEN + length : need])
            if crc != zlib.crc32(body):
                self.crc_errors += 1
                self._skip(1)
                continue
            out.append(Frame(type_, seq, body[HEADER_LEN:], part, total))
            self.frames += 1
            del buf[:need]
