"""The printer device API: status, check, test page.

Status is read with ``DLE EOT 1..4`` sent by us, one byte awaited per query under the
profile's ``timeouts.status``. We do not use python-escpos' ``query_status``: it reads 16
bytes (so every call blocks for the whole timeout) and reports "paper adequate" on an empty
read. An empty or invalid reply here is "not answering", never "paper ok".

python-escpos is not imported by this module; the test page imports it only when the
profile asks for a raster QR code.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from drivers.errors import DeviceFault, DeviceNotFound, NotSupported, ProtocolError, Timeout
from drivers.health import CheckResult
from drivers.transport import Transport

from . import codec
from .codec import PrinterStatus
from .profile import PrinterProfile, load_profile

log = logging.getLogger(__name__)


def assess(status: PrinterStatus) -> CheckResult:
    """Turn a status the printer gave into ok / fault, worst cause first."""
    detail = status.as_dict()
    if status.cover_open:
        return CheckResult.fault("cover open", **detail)
    if status.paper == "out":
        return CheckResult.fault("paper out", **detail)
    if "autocutter" in status.errors:
        return CheckResult.fault("cutter error", **detail)
    if "unrecoverable" in status.errors:
        return CheckResult.fault("unrecoverable error", **detail)
    if status.errors:
        return CheckResult.fault(f"printer error ({', '.join(status.errors)})", **detail)
    if not status.online:
        return CheckResult.fault("printer offline", **detail)
    if status.paper == "near_end":
        return CheckResult.ok(note="paper near end", **detail)
    return CheckResult.ok(**detail)


class Printer:
    """One ESC/POS printer on one serial port (device path or any pyserial URL)."""

    def __init__(
        self,
        url: str,
        profile: str | PrinterProfile = "generic-58mm",
        *,
        baudrate: int | None = None,
        profiles_root: Path | None = None,
    ) -> None:
        self.profile = (
            profile if isinstance(profile, PrinterProfile) else load_profile(profile, profiles_root)
        )
        line = self.profile.line
        self.url = url
        self.baudrate = baudrate or line.baudrate
        self._transport = Transport(
            url,
            self.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=line.stopbits,
            rtscts=line.rtscts,
        )

    # lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        self._transport.open()

    def close(self) -> None:
        self._transport.close()

    @property
    def is_open(self) -> bool:
        return self._transport.is_open

    def __enter__(self) -> Printer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # status ----------------------------------------------------------------------------
    def _query(self, n: int) -> bytes:
        """Send DLE EOT n and wait for its one reply byte, skipping ASB packets and stray bytes."""
        framer = codec.StatusFramer()
        found: list[bytes] = []
        stray = bytearray()
        seen = 0
        tolerate = self.profile.quirks.tolerate_stray_bytes

        def done(buf: bytes) -> bool:
            # read_until hands us the whole buffer so far; frame only what is new.
            nonlocal seen
            new, seen = buf[seen:], len(buf)
            for kind, data in framer.feed(new):
                if kind == "dle_eot" and not found:
                    found.append(data)
                elif kind == "asb":
                    log.debug("ASB packet while waiting for DLE EOT %d: %s", n, data.hex(" "))
                else:
                    stray.extend(data)
            if stray and not tolerate:
                raise ProtocolError(f"invalid reply to DLE EOT {n}", bytes(stray))
            return bool(found)

        self._transport.write(codec.dle_eot(n))
        try:
            self._transport.read_until(done, self.profile.timeouts.status, f"DLE EOT {n}")
        except Timeout as err:
            if stray:
                raise ProtocolError(f"no valid reply to DLE EOT {n}", bytes(stray)) from err
            raise
        if stray:
            log.info("printer sent %d stray byte(s) with DLE EOT %d: %s", len(stray), n, stray.hex(" "))
        return found[0]

    def status(self) -> PrinterStatus:
        """Read DLE EOT 1..4. Raises Timeout (not answering), ProtocolError, DeviceNotFound."""
        opened_here = not self._transport.is_open
        self._transport.open()
        try:
            stale = self._transport.drain(quiet=0.0, limit=0.2)
            if stale:
                log.info("discarded %d stale byte(s) from the printer: %s", len(stale), stale[:32].hex(" "))
            raw = b"".join(self._query(n) for n in codec.DLE_EOT_QUERIES)
            status = codec.status_from_bytes(raw)
            log.debug("printer status %s (raw %s)", status.as_dict(), raw.hex(" "))
            return status
        finally:
            if opened_here:
                self._transport.close()

    def paper_sensor(self) -> codec.Paper:
        """``GS r 1``: answered only after earlier data has been processed (a job barrier)."""
        if not self.profile.features.gs_r:
            raise NotSupported("GS r", self.profile.name)
        return self._gs_r_paper(self.profile.timeouts.gs_r)

    def _gs_r_paper(self, timeout: float) -> codec.Paper:
        self._transport.write(codec.gs_r(1))
        raw = self._transport.read_exact(1, timeout, "GS r 1")
        return codec.decode_gs_r_paper(raw[:1])

    def check(self) -> CheckResult:
        """ok / fault from the printer's own answer; unknown only when the port cannot be used."""
        started = self._transport.monotonic()
        try:
            status = self.status()
        except DeviceNotFound as err:
            return CheckResult.unknown("printer port unavailable", port=self.url, error=err.reason)
        except Timeout as err:
            return CheckResult.fault("printer not answering", command=err.command, seconds=err.seconds)
        except ProtocolError as err:
            return CheckResult.fault("printer not answering", error="invalid reply", raw=err.raw.hex(" "))
        result = assess(status)
        result.detail["elapsed_s"] = round(self._transport.monotonic() - started, 3)
        return result

    # printing --------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Write raw ESC/POS bytes (a prepared job, ``GS a`` to enable ASB...) to the printer."""
        self._transport.write(data)

    def print_test_page(self, sn: str, now: datetime, agent_version: str = "") -> None:
        """Print the agent test page. Raises DeviceFault if the printer cannot print now."""
        from .testpage import build_test_page

        opened_here = not self._transport.is_open
        self._transport.open()
        try:
            status = self.status()
            verdict = assess(status)
            if verdict.state != "ok":
                raise DeviceFault(f"cannot print test page: {verdict.reason}", code=verdict.reason)
            job = build_test_page(self.profile, sn=sn, now=now, agent_version=agent_version, status=status)
            self._transport.write(job)
            log.info("test page sent (%d bytes) to %s", len(job), self.url)
            if self.profile.features.gs_r:
                try:
                    paper = self._gs_r_paper(self.profile.timeouts.print)
                except (Timeout, ProtocolError) as err:
                    raise DeviceFault(
                        "test page sent but the printer did not confirm it", "unconfirmed"
                    ) from err
                if paper == "out":
                    raise DeviceFault("paper ran out during the test page", code="paper out")
        finally:
            if opened_here:
                self._transport.close()
