"""Emulated ESC/POS thermal printer (China-market firmware), twin of drivers.printer.

It accepts any byte stream, keeps a transcript, and keeps a decoded record of what a
person would see on the paper: text lines (GB18030 in Chinese mode ``FS &``, the ``ESC t``
code page otherwise, wrapped at the profile's width like the real head), QR payloads
(``GS ( k``), raster images, cuts. It answers ``DLE EOT n``, ``GS r n`` and Automatic
Status Back from its state, building the bytes independently from the driver's codec
(the way the print801 firmware does: base 0x12, paper end sets both near-end and end bits,
any offline cause sets the offline bit).

Fault switches (``faults``): ``printer_paper_out``, ``printer_cover_open``,
``printer_offline`` (answers nothing at all), ``paper_near_end``, ``cutter_error``,
``slow`` (replies ``slow_s`` late), ``extra_bytes`` (junk after each status reply),
``unplug`` (the port goes away: the pty master is closed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.printer.profile import PrinterProfile, load_profile

from .pty import PtyDevice

log = logging.getLogger(__name__)

FAULTS = frozenset(
    {
        "printer_paper_out",
        "printer_cover_open",
        "printer_offline",
        "paper_near_end",
        "cutter_error",
        "slow",
        "extra_bytes",
        "unplug",
    }
)

EXTRA = b"\x00\xff\x00"  # what "extra_bytes" appends to every status reply
_CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 16: "cp1252", 17: "cp866", 19: "cp858"}

# ESC / FS / GS commands that take a fixed number of parameter bytes after the 2-byte command
# fmt: off
_FIXED = {
    0x1B: {
        0x20: 1, 0x21: 1, 0x24: 2, 0x25: 1, 0x2D: 1, 0x32: 0, 0x33: 1, 0x3C: 0, 0x3D: 1, 0x3F: 1,
        0x40: 0, 0x45: 1, 0x47: 1, 0x4A: 1, 0x4C: 0, 0x4D: 1, 0x52: 1, 0x53: 0, 0x54: 1,
        0x56: 1, 0x5C: 2, 0x61: 1, 0x63: 2, 0x64: 1, 0x65: 1, 0x69: 0, 0x6D: 0, 0x70: 3, 0x72: 1,
        0x74: 1, 0x7B: 1,
    },
    0x1C: {0x21: 1, 0x26: 0, 0x2D: 1, 0x2E: 0, 0x43: 1, 0x53: 2, 0x57: 1, 0x70: 2},
    0x1D: {
        0x21: 1, 0x24: 2, 0x2F: 1, 0x3A: 0, 0x42: 1, 0x48: 1, 0x49: 1, 0x4C: 2, 0x50: 2, 0x57: 2,
        0x5C: 2, 0x61: 1, 0x66: 1, 0x68: 1, 0x72: 1, 0x77: 1,
    },
}
# fmt: on


@dataclass
class Printed:
    """What came out of the printer, in order."""

    lines: list[str] = field(default_factory=list)
    qr: list[str] = field(default_factory=list)
    images: list[tuple[int, int]] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)
    events: list[tuple[str, object]] = field(default_factory=list)
    double_lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class PrinterEmulator:
    def __init__(self, profile: str | PrinterProfile = "generic-58mm") -> None:
        self.profile = profile if isinstance(profile, PrinterProfile) else load_profile(profile)
        self.faults: set[str] = set()
        self.slow_s = 0.25
        self.transcript = bytearray()
        self.printed = Printed()
        self.qr_stored: list[str] = []
        self.drawer_pin3_high = False
        self.asb_mask = 0
        self._pending = bytearray()  # incomplete command carried over between feeds
        self._held = bytearray()  # data received while the printer cannot print
        self._rt_tail = b""  # last bytes of held data, to spot DLE EOT split across feeds
        self._delayed: list[tuple[float, bytes]] = []
        self._last_asb: bytes | None = None
        self._unplug_hook: Callable[[], None] | None = None
        self.unplugged = False
        self._reset_modes()
        self._line: list[tuple[str, int]] = []
        self._lead = bytearray()

    # state -------------------------------------------------------------------------------
    def _reset_modes(self) -> None:
        self.chinese_mode = self.profile.features.chinese_mode
        self.code_page = 0
        self.double_width = False
        self.double_height = False

    @property
    def paper_out(self) -> bool:
        return "printer_paper_out" in self.faults

    @property
    def cover_open(self) -> bool:
        return "printer_cover_open" in self.faults

    @property
    def near_end(self) -> bool:
        return "paper_near_end" in self.faults or self.paper_out

    @property
    def mute(self) -> bool:
        return bool({"printer_offline", "unplug"} & self.faults)

    @property
    def stalled(self) -> bool:
        """Cover open or paper out: data is buffered, not printed; only real-time commands answer."""
        return self.paper_out or self.cover_open

    def status_byte(self, n: int) -> int:
        b = 0x12
        if n == 1:
            if self.drawer_pin3_high:
                b |= 0x04
            if self.stalled or "cutter_error" in self.faults:
                b |= 0x08
        elif n == 2:
            if self.cover_open:
                b |= 0x04
            if self.paper_out:
                b |= 0x20
            if "cutter_error" in self.faults:
                b |= 0x40
        elif n == 3:
            if "cutter_error" in self.faults:
                b |= 0x08
        elif n == 4:
            if self.near_end:
                b |= 0x0C
            if self.paper_out:
                b |= 0x60
        return b

    def gs_r_byte(self, n: int) -> int:
        if n in (1, 49):
            return (0x03 if self.near_end else 0) | (0x0C if self.paper_out else 0)
        return 0x01 if self.drawer_pin3_high else 0x00

    def asb_packet(self) -> bytes:
        b1 = 0x10 | (0x04 if self.drawer_pin3_high else 0)
        b1 |= 0x08 if (self.stalled or "cutter_error" in self.faults) else 0
        b1 |= 0x20 if self.cover_open else 0
        b2 = 0x08 if "cutter_error" in self.faults else 0
        b3 = (0x03 if self.near_end else 0) | (0x0C if self.paper_out else 0)
        return bytes((b1, b2, b3, 0x0F))

    # Emulator protocol -------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes | None:
        self.transcript += data
        if self.mute:
            return None
        if self.stalled:
            return self._reply(self._hold(data))
        self._release_held()  # what waited while stalled goes first, before anything sent after it
        self._pending += data
        return self._reply(self._process())

    def pending(self) -> bool:
        """Whether tick() has anything to do soon (the pty hub ticks lazy devices only then)."""
        return bool(self._held or self._rt_tail or self._delayed or self.asb_mask) or (
            "unplug" in self.faults and not self.unplugged)

    def tick(self) -> bytes | None:
        if "unplug" in self.faults and not self.unplugged:
            self.unplugged = True
            if self._unplug_hook is not None:
                self._unplug_hook()
            return None
        out = bytearray()
        if not self.mute and not self.stalled and (self._held or self._rt_tail):
            self._release_held()
            out += self._reply(self._process()) or b""
        if self.asb_mask and not self.mute:
            packet = self.asb_packet()
            if packet != self._last_asb:
                self._last_asb = packet
                out += packet
        now = time.monotonic()
        due = [d for t, d in self._delayed if t <= now]
        self._delayed = [(t, d) for t, d in self._delayed if t > now]
        for d in due:
            out += d
        return bytes(out) or None

    def _release_held(self) -> None:
        self._pending += self._held + self._rt_tail
        self._held.clear()
        self._rt_tail = b""

    def _reply(self, data: bytes) -> bytes | None:
        if not data:
            return None
        if "slow" in self.faults:
            self._delayed.append((time.monotonic() + self.slow_s, data))
            return None
        return data

    def _status_reply(self, n: int) -> bytes:
        reply = bytes((self.status_byte(n),))
        return reply + EXTRA if "extra_bytes" in self.faults else reply

    def _hold(self, data: bytes) -> bytes:
        """Stalled: keep data for later, but answer (and strip) real-time DLE EOT requests now."""
        buf = self._rt_tail + data
        answered = bytearray()
        kept = bytearray()
        i = 0
        while i < len(buf):
            if buf[i] == 0x10 and i + 2 < len(buf) and buf[i + 1] == 0x04 and 1 <= buf[i + 2] <= 4:
                answered += self._status_reply(buf[i + 2])
                i += 3
                continue
            kept.append(buf[i])
            i += 1
        # a request split across feeds: keep up to 2 trailing bytes to look at next time
        tail = 2 if kept[-2:-1] == b"\x10" else 1 if kept[-1:] == b"\x10" else 0
        self._rt_tail = bytes(kept[len(kept) - tail :]) if tail else b""
        self._held += kept[: len(kept) - tail]
        return bytes(answered)

    # ESC/POS interpreter -----------------------------------------------------------------
    def _process(self) -> bytes:
        out = bytearray()
        buf = self._pending
        i = 0
        while i < len(buf):
            n = self._command(buf, i, out)
            if n == 0:
                break
            i += n
            if self.stalled:
                # a fault switched on mid-stream: the rest waits
                self._held += buf[i:]
                i = len(buf)
        del buf[:i]
        return bytes(out)

    def _command(self, buf: bytearray, i: int, out: bytearray) -> int:
        """Interpret one command or character at ``buf[i]``; return bytes consumed (0 = need more)."""
        b = buf[i]
        avail = len(buf) - i
        if self._lead:
            return self._text_byte(b)
        if b == 0x10:  # DLE
            if avail < 3:
                return 0
            cmd, n = buf[i + 1], buf[i + 2]
            if cmd == 0x04:
                if 1 <= n <= 4:
                    out += self._status_reply(n)
                return 3
            if cmd == 0x05:
                return 3
            if cmd == 0x14:
                return 5 if avail >= 5 else 0
            return 1
        if b in (0x1B, 0x1C, 0x1D):
            if avail < 2:
                return 0
            return self._escape(buf, i, out)
        if b == 0x0A:
            self._end_line()
            return 1
        if b == 0x0C:
            self._end_line()
            return 1
        if b < 0x20 or b == 0x7F:
            return 1
        return self._text_byte(b)

    def _escape(self, buf: bytearray, i: int, out: bytearray) -> int:
        prefix, cmd = buf[i], buf[i + 1]
        avail = len(buf) - i
        if prefix == 0x1D and cmd == 0x28:  # GS ( X pL pH data
            if avail < 5:
                return 0
            p = buf[i + 3] | (buf[i + 4] << 8)
            if avail < 5 + p:
                return 0
            if buf[i + 2] == 0x6B:
                self._two_d_code(bytes(buf[i + 5 : i + 5 + p]))
            return 5 + p
        if prefix == 0x1D and cmd == 0x76:  # GS v 0 m xL xH yL yH data
            if avail < 8:
                return 0
            w = buf[i + 4] | (buf[i + 5] << 8)
            h = buf[i + 6] | (buf[i + 7] << 8)
            if avail < 8 + w * h:
                return 0
            self._end_line(force=False)
            self.printed.images.append((w * 8, h))
            self.printed.events.append(("image", (w * 8, h)))
            return 8 + w * h
        if prefix == 0x1B and cmd == 0x2A:  # ESC * m nL nH data
            if avail < 5:
                return 0
            m, n = buf[i + 2], buf[i + 3] | (buf[i + 4] << 8)
            size = n * (3 if m in (32, 33) else 1)
            return 5 + size if avail >= 5 + size else 0
        if prefix == 0x1D and cmd == 0x56:  # GS V m [n]
            if avail < 3:
                return 0
            m = buf[i + 2]
            extra = 1 if m in (65, 66, 97, 98, 103, 104) else 0
            if avail < 3 + extra:
                return 0
            self._cut("partial" if m in (1, 49, 66, 98, 104) else "full")
            return 3 + extra
        if prefix == 0x1D and cmd == 0x6B:  # GS k barcode
            if avail < 3:
                return 0
            m = buf[i + 2]
            if m <= 6:
                end = buf.find(b"\x00", i + 3)
                return end - i + 1 if end >= 0 else 0
            if avail < 4:
                return 0
            n = buf[i + 3]
            return 4 + n if avail >= 4 + n else 0
        if prefix == 0x1D and cmd == 0x2A:  # GS * x y data
            if avail < 4:
                return 0
            size = buf[i + 2] * buf[i + 3] * 8
            return 4 + size if avail >= 4 + size else 0
        if prefix == 0x1B and cmd == 0x44:  # ESC D tabs, NUL-terminated
            end = buf.find(b"\x00", i + 2)
            return end - i + 1 if end >= 0 else 0
        nparams = _FIXED[prefix].get(cmd)
        if nparams is None:
            log.debug("unknown command %02X %02X", prefix, cmd)
            return 2
        if avail < 2 + nparams:
            return 0
        params = buf[i + 2 : i + 2 + nparams]
        self._apply(prefix, cmd, bytes(params), out)
        return 2 + nparams

    def _apply(self, prefix: int, cmd: int, p: bytes, out: bytearray) -> None:
        if prefix == 0x1B:
            if cmd == 0x40:  # ESC @ clears the line buffer and the modes
                self._line = []
                self._lead.clear()
                self._reset_modes()
            elif cmd == 0x21:
                self.double_height, self.double_width = bool(p[0] & 0x10), bool(p[0] & 0x20)
            elif cmd == 0x74:
                self.code_page = p[0]
            elif cmd == 0x64:
                self._end_line(force=False)
                for _ in range(p[0]):
                    self._end_line()
        elif prefix == 0x1C:
            if cmd == 0x26:
                self.chinese_mode = True
            elif cmd == 0x2E:
                self.chinese_mode = False
            elif cmd == 0x21:
                self.double_width, self.double_height = bool(p[0] & 0x04), bool(p[0] & 0x08)
        elif prefix == 0x1D:
            if cmd == 0x21:
                self.double_width, self.double_height = bool(p[0] & 0xF0), bool(p[0] & 0x0F)
            elif cmd == 0x72:
                out += bytes((self.gs_r_byte(p[0]),))
            elif cmd == 0x61:
                self.asb_mask = p[0]
                self._last_asb = None  # send the current state once on enable

    def _two_d_code(self, body: bytes) -> None:
        if len(body) < 2 or body[0] != 0x31:  # cn 49 = QR
            return
        fn = body[1]
        if fn == 0x50 and len(body) >= 3:  # store data: cn fn m data
            self.qr_stored.append(body[3:].decode("latin-1"))
        elif fn == 0x51 and self.qr_stored:  # print stored data
            self._end_line(force=False)
            payload = self.qr_stored[-1]
            self.printed.qr.append(payload)
            self.printed.events.append(("qr", payload))

    def _cut(self, mode: str) -> None:
        self._end_line(force=False)
        if "cutter_error" in self.faults:
            self.printed.events.append(("cut_failed", mode))
            return
        self.printed.cuts.append(mode)
        self.printed.events.append(("cut", mode))

    # text --------------------------------------------------------------------------------
    def _text_byte(self, b: int) -> int:
        if self._lead:
            self._lead.append(b)
            need = 4 if len(self._lead) >= 2 and 0x30 <= self._lead[1] <= 0x39 else 2
            if len(self._lead) >= need:
                ch = bytes(self._lead).decode("gb18030", errors="replace")
                self._lead.clear()
                if len(ch) != 1:  # a lead byte followed by a non-trail byte: one garbage glyph
                    ch = "\ufffd"
                self._put(ch, 2)
            return 1
        if self.chinese_mode and b >= 0x81 and b != 0xFF:
            self._lead.append(b)  # a lead byte eats whatever comes next, as on the real head
            return 1
        if self.chinese_mode and b >= 0x80:
            self._put("\ufffd", 1)
            return 1
        if b >= 0x80:
            ch = bytes((b,)).decode(_CODE_PAGES.get(self.code_page, "cp437"), errors="replace")
        else:
            ch = chr(b)
        self._put(ch, 1)
        return 1

    def _put(self, ch: str, width: int) -> None:
        width *= 2 if self.double_width else 1
        used = sum(w for _, w in self._line)
        if used + width > self.profile.columns:
            self._end_line()  # the head wraps at the paper width
        self._line.append((ch, width))

    def _end_line(self, force: bool = True) -> None:
        if not self._line and not force:
            return
        text = "".join(c for c, _ in self._line)
        self._line = []
        self.printed.lines.append(text)
        self.printed.events.append(("line", text))
        if self.double_width or self.double_height:
            self.printed.double_lines.append(text)


def serve(
    profile: str | PrinterProfile = "generic-58mm", emulator: PrinterEmulator | None = None
) -> PtyDevice:
    """Start a printer emulator on a pty; the driver opens ``device.path``. Call ``stop()`` after."""
    emu = emulator or PrinterEmulator(profile)
    dev = PtyDevice(emu)

    def unplug() -> None:
        # Closing the master makes every read/write on the slave fail like a vanished USB port.
        master, dev.master = dev.master, -1
        try:
            os.close(master)
        except OSError:
            pass
        dev.unplugged = True

    emu._unplug_hook = unplug
    return dev.start()
