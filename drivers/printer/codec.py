"""ESC/POS status bytes and GB18030 line helpers: pure functions, no I/O.

Three kinds of status reply exist and they must not share a parser
(see docs: peripherals reference, section 3):

* ``DLE EOT n`` (``10 04 n``) real-time status: one byte, fixed bits ``0xx1xx10`` (base 0x12).
* ``GS r n`` (``1D 72 n``): one byte with **no** fixed bits (0x00 = all fine).
* Automatic Status Back (``GS a n``): 4-byte packets whose first byte is ``0xx1xx00``.

Anything that is empty or fails its validator raises :class:`~drivers.errors.ProtocolError`;
nothing here ever turns a missing answer into "paper ok".
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from drivers.errors import NotSupported, ProtocolError

Paper = Literal["ok", "near_end", "out"]

DLE = 0x10
EOT = 0x04
GS = 0x1D

# query numbers for DLE EOT n
PRINTER = 1
OFFLINE_CAUSE = 2
ERROR_CAUSE = 3
PAPER_SENSOR = 4
DLE_EOT_QUERIES = (PRINTER, OFFLINE_CAUSE, ERROR_CAUSE, PAPER_SENSOR)

_DLE_EOT_FIXED_MASK = 0x93  # bits 0, 1, 4, 7
_DLE_EOT_FIXED_VALUE = 0x12  # 0xx1xx10
_ASB_FIXED_MASK = 0x93
_ASB_FIXED_VALUE = 0x10  # 0xx1xx00


# -- commands ---------------------------------------------------------------------------
def dle_eot(n: int) -> bytes:
    """The real-time status request ``DLE EOT n`` for n = 1..4."""
    if n not in DLE_EOT_QUERIES:
        raise ValueError(f"DLE EOT n must be 1..4, not {n}")
    return bytes((DLE, EOT, n))


def gs_r(n: int = 1) -> bytes:
    """``GS r n``: 1 = paper sensor, 2 = drawer (answered only after earlier data is processed)."""
    if n not in (1, 2, 49, 50):
        raise ValueError(f"GS r n must be 1, 2, 49 or 50, not {n}")
    return bytes((GS, 0x72, n))


def asb_enable(mask: int) -> bytes:
    """``GS a n``: enable Automatic Status Back for the given status groups (0 = off)."""
    if not 0 <= mask <= 0xFF:
        raise ValueError("GS a mask must fit in one byte")
    return bytes((GS, 0x61, mask))


# -- DLE EOT ----------------------------------------------------------------------------
def is_dle_eot_byte(b: int) -> bool:
    return (b & _DLE_EOT_FIXED_MASK) == _DLE_EOT_FIXED_VALUE


def is_asb_header(b: int) -> bool:
    return (b & _ASB_FIXED_MASK) == _ASB_FIXED_VALUE


@dataclass(frozen=True)
class PrinterByte:
    """DLE EOT 1."""

    drawer_pin3_high: bool
    offline: bool
    waiting_recovery: bool
    feed_pressed: bool


@dataclass(frozen=True)
class OfflineCause:
    """DLE EOT 2."""

    cover_open: bool
    feeding: bool
    paper_end_stop: bool
    error: bool


@dataclass(frozen=True)
class ErrorCause:
    """DLE EOT 3."""

    recoverable: bool
    autocutter: bool
    unrecoverable: bool
    auto_recoverable: bool


@dataclass(frozen=True)
class PaperSensor:
    """DLE EOT 4."""

    near_end: bool
    end: bool

    @property
    def paper(self) -> Paper:
        return "out" if self.end else "near_end" if self.near_end else "ok"


def _one_status_byte(n: int, raw: bytes) -> int:
    if len(raw) == 0:
        raise ProtocolError(f"no reply to DLE EOT {n}", raw)
    if len(raw) != 1:
        raise ProtocolError(f"DLE EOT {n} reply must be exactly one byte, got {len(raw)}", raw)
    b = raw[0]
    if not is_dle_eot_byte(b):
        raise ProtocolError(f"DLE EOT {n} reply 0x{b:02X} does not match 0xx1xx10", raw)
    return b


def decode_printer(raw: bytes) -> PrinterByte:
    b = _one_status_byte(PRINTER, raw)
    return PrinterByte(bool(b & 0x04), bool(b & 0x08), bool(b & 0x20), bool(b & 0x40))


def decode_offline_cause(raw: bytes) -> OfflineCause:
    b = _one_status_byte(OFFLINE_CAUSE, raw)
    return OfflineCause(bool(b & 0x04), bool(b & 0x08), bool(b & 0x20), bool(b & 0x40))


def decode_error_cause(raw: bytes) -> ErrorCause:
    b = _one_status_byte(ERROR_CAUSE, raw)
    return ErrorCause(bool(b & 0x04), bool(b & 0x08), bool(b & 0x20), bool(b & 0x40))


def decode_paper_sensor(raw: bytes) -> PaperSensor:
    # Firmware sets both bits of a pair (0x0C near end, 0x60 end); one bit is enough for us,
    # since reporting paper trouble wrongly is cheaper than reporting "ok" wrongly.
    b = _one_status_byte(PAPER_SENSOR, raw)
    return PaperSensor(near_end=bool(b & 0x0C), end=bool(b & 0x60))


# -- combined status --------------------------------------------------------------------
@dataclass(frozen=True)
class PrinterStatus:
    """What the four DLE EOT bytes say together."""

    online: bool
    paper: Paper
    cover_open: bool
    errors: list[str] = field(default_factory=list)
    raw: bytes = b""

    @property
    def printable(self) -> bool:
        return self.online and self.paper != "out" and not self.cover_open and not self.errors

    def as_dict(self) -> dict[str, object]:
        return {
            "online": self.online,
            "paper": self.paper,
            "cover_open": self.cover_open,
            "errors": list(self.errors),
        }


def _errors(offline: OfflineCause | None, error: ErrorCause) -> list[str]:
    out = []
    if error.autocutter:
        out.append("autocutter")
    if error.unrecoverable:
        out.append("unrecoverable")
    if error.recoverable:
        out.append("recoverable")
    if error.auto_recoverable:
        out.append("auto_recoverable")
    if offline is not None and offline.error and not out:
        out.append("unspecified")
    return out


def status_from_bytes(raw: bytes) -> PrinterStatus:
    """Build the status from the replies to DLE EOT 1, 2, 3, 4 (in that order, one byte each)."""
    if len(raw) != 4:
        raise ProtocolError(f"need the 4 replies to DLE EOT 1..4, got {len(raw)} byte(s)", raw)
    printer = decode_printer(raw[0:1])
    offline = decode_offline_cause(raw[1:2])
    error = decode_error_cause(raw[2:3])
    sensor = decode_paper_sensor(raw[3:4])
    paper: Paper = "out" if (sensor.end or offline.paper_end_stop) else sensor.paper
    return PrinterStatus(
        online=not printer.offline,
        paper=paper,
        cover_open=offline.cover_open,
        errors=_errors(offline, error),
        raw=bytes(raw),
    )


# -- GS r -------------------------------------------------------------------------------
def decode_gs_r_paper(raw: bytes) -> Paper:
    """Reply to ``GS r 1``: bits 0+1 near end, bits 2+3 paper end; no fixed bits."""
    if len(raw) != 1:
        raise ProtocolError(f"GS r 1 reply must be exactly one byte, got {len(raw)}", raw)
    b = raw[0]
    if b & 0x90:
        # bits 4 and 7 are fixed 0 in every GS r reply we know of; 0x12-style bytes are DLE EOT replies.
        raise ProtocolError(f"GS r 1 reply 0x{b:02X} has bits outside the paper sensor field", raw)
    return "out" if b & 0x0C else "near_end" if b & 0x03 else "ok"


def decode_gs_r_drawer(raw: bytes) -> bool:
    """Reply to ``GS r 2``: drawer kick connector pin 3 level (True = high)."""
    if len(raw) != 1:
        raise ProtocolError(f"GS r 2 reply must be exactly one byte, got {len(raw)}", raw)
    if raw[0] & 0x90:
        raise ProtocolError(f"GS r 2 reply 0x{raw[0]:02X} has bits outside the drawer field", raw)
    return bool(raw[0] & 0x01)


# -- Automatic Status Back --------------------------------------------------------------
@dataclass(frozen=True)
class AsbStatus:
    drawer_pin3_high: bool
    offline: bool
    cover_open: bool
    feed_pressed: bool
    recoverable: bool
    autocutter: bool
    unrecoverable: bool
    auto_recoverable: bool
    near_end: bool
    end: bool
    vendor: int
    raw: bytes

    def to_status(self) -> PrinterStatus:
        err = ErrorCause(self.recoverable, self.autocutter, self.unrecoverable, self.auto_recoverable)
        paper: Paper = "out" if self.end else "near_end" if self.near_end else "ok"
        return PrinterStatus(not self.offline, paper, self.cover_open, _errors(None, err), self.raw)


def decode_asb(raw: bytes) -> AsbStatus:
    if len(raw) != 4:
        raise ProtocolError(f"ASB packet must be 4 bytes, got {len(raw)}", raw)
    b1, b2, b3, b4 = raw
    if not is_asb_header(b1):
        raise ProtocolError(f"ASB first byte 0x{b1:02X} does not match 0xx1xx00", raw)
    return AsbStatus(
        drawer_pin3_high=bool(b1 & 0x04),
        offline=bool(b1 & 0x08),
        cover_open=bool(b1 & 0x20),
        feed_pressed=bool(b1 & 0x40),
        recoverable=bool(b2 & 0x04),
        autocutter=bool(b2 & 0x08),
        unrecoverable=bool(b2 & 0x20),
        auto_recoverable=bool(b2 & 0x40),
        near_end=bool(b3 & 0x03),
        end=bool(b3 & 0x0C),
        vendor=b4,
        raw=bytes(raw),
    )


class StatusFramer:
    """Split a byte stream from the printer into DLE EOT replies, ASB packets and stray bytes.

    With ASB enabled, 4-byte packets interleave with DLE EOT replies; their headers differ in
    bit 1, so a header byte starts a packet and the next three bytes belong to it.
    """

    def __init__(self) -> None:
        self._asb = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """Return ``("dle_eot", b)``, ``("asb", packet)`` and ``("stray", b)`` items in arrival order."""
        out: list[tuple[str, bytes]] = []
        for b in data:
            if self._asb:
                self._asb.append(b)
                if len(self._asb) == 4:
                    out.append(("asb", bytes(self._asb)))
                    self._asb.clear()
            elif is_asb_header(b):
                self._asb.append(b)
            elif is_dle_eot_byte(b):
                out.append(("dle_eot", bytes((b,))))
            else:
                out.append(("stray", bytes((b,))))
        return out

    @property
    def pending(self) -> bytes:
        return bytes(self._asb)


# -- GB18030 text -----------------------------------------------------------------------
# U+00A5 becomes a 4-byte GB18030 sequence that GBK fonts print as garbage; full width is A3 A4.
_PRINTER_SAFE = str.maketrans({"\u00a5": "\uffe5"})


def char_width(ch: str) -> int:
    """Columns one character takes on a printer in Chinese mode: ASCII 1, any double-byte code 2."""
    o = ord(ch)
    if o < 0x20 or o == 0x7F:
        return 0
    if o < 0x80:
        return 1
    if unicodedata.combining(ch):
        return 0
    return 2


def display_width(text: str) -> int:
    return sum(char_width(c) for c in text)


def columns_for(dots: int, font_width: int = 12) -> int:
    """Font A is 12 dots wide: 384 dots -> 32 columns, 576 -> 48."""
    return dots // font_width


def encode_line(text: str, encoding: str = "gb18030") -> bytes:
    """Encode one line for a printer in Chinese mode (FS &): ``¥`` becomes full-width ``￥``."""
    safe = text.translate(_PRINTER_SAFE)
    try:
        return safe.encode(encoding)
    except UnicodeEncodeError as err:
        bad = safe[err.start : err.end]
        raise NotSupported(f"character {bad!r} (U+{ord(bad[0]):04X}) in {encoding}") from err
    except LookupError as err:
        raise NotSupported(f"text encoding {encoding!r}") from err


def fit(text: str, columns: int) -> str:
    """Cut ``text`` to at most ``columns`` display columns, never splitting a double-width character."""
    out = []
    used = 0
    for ch in text:
        w = char_width(ch)
        if used + w > columns:
            break
        out.append(ch)
        used += w
    return "".join(out)


def wrap(text: str, columns: int) -> list[str]:
    """Break ``text`` into lines of at most ``columns`` display columns (hard wrap, no hyphenation)."""
    if columns < 2:
        raise ValueError("columns must be at least 2")
    lines: list[str] = []
    cur: list[str] = []
    used = 0
    for ch in text:
        w = char_width(ch)
        if used + w > columns:
            lines.append("".join(cur))
            cur, used = [], 0
        cur.append(ch)
        used += w
    if cur or not lines:
        lines.append("".join(cur))
    return lines


def ruler(columns: int, ch: str = "-") -> str:
    if char_width(ch) != 1:
        raise ValueError("ruler character must be one column wide")
    return ch * columns


def hex_bytes(spec: str | Iterable[int]) -> bytes:
    """``"1B 40 1C 26"`` -> bytes; used for profile init sequences."""
    if isinstance(spec, str):
        try:
            return bytes.fromhex(spec)
        except ValueError as err:
            raise ValueError(f"not a hex byte string: {spec!r}") from err
    return bytes(spec)
