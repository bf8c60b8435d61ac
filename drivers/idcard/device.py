"""Device API for a second-generation ID card reader (GA 467 SAM protocol).

One :class:`IdCardReader` owns one serial port. Every command is one timed exchange:
write the frame, then read until the decoder yields a complete, checksum-valid reply or
the profile's timeout for that command runs out.

Privacy: a card read is decoded and masked inside :meth:`IdCardReader.read_card`; the
unmasked text is a local variable of that call and is never logged, kept on the object,
or put into an exception message (errors carry frame headers only).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec

from ..errors import DeviceFault, DeviceNotFound, DriverError, NotSupported, ProtocolError, Timeout
from ..health import CheckResult
from ..profiles import load
from ..transport import Transport
from . import codec
from .mask import MaskedCard, mask_address, mask_card

log = logging.getLogger(__name__)

InitStep = Literal["reset", "sam_status", "set_rf_frame"]


# profile ------------------------------------------------------------------------------------------
class Line(msgspec.Struct, forbid_unknown_fields=True):
    baudrate: int
    bytesize: Literal[5, 6, 7, 8]
    parity: Literal["N", "E", "O", "M", "S"]
    stopbits: float
    rtscts: bool


class Timeouts(msgspec.Struct, forbid_unknown_fields=True):
    reset: float
    sam_status: float
    sam_id: float
    find: float
    select: float
    read: float
    read_fingerprint: float
    read_address: float
    set_rf_frame: float


class FindSettings(msgspec.Struct, forbid_unknown_fields=True):
    poll_interval: float


class Features(msgspec.Struct, forbid_unknown_fields=True):
    fingerprint: bool
    appended_address: bool
    rf_frame_size: int


class Quirks(msgspec.Struct, forbid_unknown_fields=True):
    lift_to_reread: bool
    settle_after_reset: float


class IdCardProfile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    model: str
    dialect: Literal["ga467"]
    init: list[InitStep]
    line: Line
    timeouts: Timeouts
    find: FindSettings
    features: Features
    quirks: Quirks


def load_profile(name: str = "generic-sam") -> IdCardProfile:
    return load("reader", name, IdCardProfile)


# device ---------------------------------------------------------------------------------------------
class IdCardReader:
    """A GA 467 ID card reader on a serial port (any pyserial URL)."""

    def __init__(
        self,
        url: str,
        profile: str | IdCardProfile = "generic-sam",
        *,
        baudrate: int | None = None,
    ) -> None:
        self.url = url
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        line = self.profile.line
        self._transport = Transport(
            url,
            baudrate or line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=line.stopbits,
            rtscts=line.rtscts,
        )
        self._dirty = False  # a previous exchange ended early: stale bytes may be waiting

    def __repr__(self) -> str:
        return f"IdCardReader({self.url!r}, profile={self.profile.name!r})"

    # lifecycle ------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the port and run the profile's init sequence."""
        if self._transport.is_open:
            return
        self._transport.open()
        self._dirty = False
        try:
            for step in self.profile.init:
                self._init_step(step)
        except DriverError:
            self._transport.close()
            raise

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> IdCardReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_step(self, step: InitStep) -> None:
        if step == "reset":
            self.reset()
        elif step == "sam_status":
            code = self._sam_status_code()
            if code != codec.SW3_OK:
                raise DeviceFault(f"SAM status 0x{code:02X} ({codec.describe_sw3(code)})", code=f"0x{code:02X}")
        elif step == "set_rf_frame" and self.profile.features.rf_frame_size > 0:
            size = self.profile.features.rf_frame_size
            self._command(codec.SET_RF_FRAME, self.profile.timeouts.set_rf_frame, bytes([size]))

    # the one exchange ----------------------------------------------------------------------------------
    def _exchange(self, key: tuple[int, int], timeout: float, data: bytes = b"") -> codec.Reply:
        name = codec.COMMAND_NAMES[key]
        frame = codec.build_command(key[0], key[1], data)
        t = self._transport
        if not t.is_open:
            self.open()
        if self._dirty:
            stale = t.drain(quiet=0.05, limit=0.5)
            if stale:
                log.debug("discarded %d stale bytes before %s", len(stale), name)
            self._dirty = False
        log.debug("-> %s %s", name, frame.hex(" "))
        decoder = codec.FrameDecoder()
        self._dirty = True
        t.write(frame)
        deadline = self._transport.monotonic() + timeout
        while True:
            frames = decoder.feed(t.read_available())
            if frames:
                reply = codec.parse_reply(frames[0])
                self._dirty = bool(decoder.pending) or len(frames) > 1
                if decoder.discarded:
                    log.debug("skipped %d garbage bytes before the %s reply", decoder.discarded, name)
                log.debug("<- %s: SW3 0x%02X (%s), %d data bytes",
                          name, reply.sw3, codec.describe_sw3(reply.sw3), len(reply.data))
                return reply
            if decoder.bad_frames:
                # header only: the body of a read reply is personal data
                raise ProtocolError(f"{name}: reply failed its checksum", decoder.last_bad)
            if self._transport.monotonic() >= deadline:
                raise Timeout(name, timeout, decoder.head(10))

    def _command(self, key: tuple[int, int], timeout: float, data: bytes = b"",
                 accept: tuple[int, ...] = (codec.SW3_OK,)) -> codec.Reply:
        return codec.expect(self._exchange(key, timeout, data), codec.COMMAND_NAMES[key], *accept)

    # SAM --------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._command(codec.RESET, self.profile.timeouts.reset)
        settle = self.profile.quirks.settle_after_reset
        if settle > 0:
            self._transport.drain(quiet=settle, limit=settle * 4)

    def _sam_status_code(self) -> int:
        return self._exchange(codec.SAM_STATUS, self.profile.timeouts.sam_status).sw3

    def sam_status(self) -> bool:
        """True when the SAM reports OK (0x90); False when it answers with an error status."""
        return self._sam_status_checked() == codec.SW3_OK

    def _sam_status_checked(self) -> int:
        code = self._sam_status_code()
        if code == codec.SW3_OK:
            return code
        if code not in codec.SW3_TEXT:
            raise ProtocolError(f"SAM status: unknown SAM status 0x{code:02X}")
        log.info("SAM status 0x%02X: %s", code, codec.describe_sw3(code))
        return code

    def sam_id(self) -> str:
        reply = self._command(codec.SAM_ID, self.profile.timeouts.sam_id)
        return codec.format_sam_id(reply.data)

    # card ---------------------------------------------------------------------------------------------------
    def find_card(self) -> bool:
        """One find: True if a card answered (0x9F), False if none (0x80)."""
        reply = self._command(codec.FIND_CARD, self.profile.timeouts.find,
                              accept=(codec.SW3_FIND_OK, codec.SW3_FIND_FAILED))
        return reply.sw3 == codec.SW3_FIND_OK

    def wait_for_card(self, timeout: float) -> bool:
        """Poll find every ``find.poll_interval`` seconds until a card answers or ``timeout`` passes."""
        deadline = self._transport.monotonic() + timeout
        while True:
            if self.find_card():
                return True
            if self._transport.monotonic() + self.profile.find.poll_interval > deadline:
                return False
            self._transport.sleep(self.profile.find.poll_interval)

    def select_card(self) -> None:
        """Select the found card; :class:`DeviceFault` (0x81) if no card was found first."""
        self._command(codec.SELECT_CARD, self.profile.timeouts.select)

    def read_card(self, *, fingerprint: bool = False) -> MaskedCard:
        """Read the selected card's text (and photo, fingerprint) and return it masked.

        Send :meth:`find_card` and :meth:`select_card` first. With the ``lift_to_reread``
        quirk the card must be lifted and re-placed before it can be found again.
        """
        if fingerprint and not self.profile.features.fingerprint:
            raise NotSupported("fingerprint read", self.profile.name)
        key = codec.READ_TEXT_PHOTO_FP if fingerprint else codec.READ_TEXT_PHOTO
        timeout = self.profile.timeouts.read_fingerprint if fingerprint else self.profile.timeouts.read
        reply = self._command(key, timeout)
        blocks = codec.split_read_reply(reply, fingerprint=fingerprint)
        # decode and mask in one place; the unmasked CardText never leaves this frame
        card = mask_card(
            codec.decode_text_block(blocks.text),
            photo_present=blocks.photo_present,
            fingerprint_present=blocks.fingerprint_len > 0,
        )
        log.info("read %s card %s (photo %s)", card.type, card.id_masked,
                 "present" if card.photo_present else "missing")
        return card

    def read_placed_card(self) -> MaskedCard | None:
        """find -> select -> read; None when no (unread) card is on the reader."""
        if not self.find_card():
            return None
        self.select_card()
        return self.read_card()

    def read_address(self) -> str | None:
        """The appended ("latest") address, masked; None when the card has none (0x91)."""
        if not self.profile.features.appended_address:
            raise NotSupported("appended address", self.profile.name)
        reply = self._command(codec.READ_ADDRESS, self.profile.timeouts.read_address,
                              accept=(codec.SW3_OK, codec.SW3_NO_CONTENT))
        if reply.sw3 == codec.SW3_NO_CONTENT or not reply.data:
            return None
        try:
            text = reply.data.decode("utf-16-le")
        except UnicodeDecodeError as err:
            raise ProtocolError("appended address is not UCS-2") from err
        return mask_address(text.rstrip(" \x00"))

    # health ----------------------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        """Is the reader's security module answering and healthy? Never reads a card."""
        detail: dict[str, Any] = {"profile": self.profile.name}
        code: int | None = None
        try:
            for attempt in (1, 2):
                try:
                    code = self._sam_status_code()
                    break
                except ProtocolError:
                    if attempt == 2:
                        raise
                    log.debug("SAM status reply garbled; asking once more")
        except DeviceNotFound as err:
            return CheckResult.unknown(f"port missing: {err.reason}", port=self.url, **detail)
        except Timeout as err:
            return CheckResult.fault("SAM not answering", command=err.command, seconds=err.seconds, **detail)
        except ProtocolError as err:
            return CheckResult.fault(f"reader protocol error: {err}", **detail)
        except DeviceFault as err:  # from the init sequence
            return CheckResult.fault(str(err), sw3=err.code, **detail)
        assert code is not None
        if code == codec.SW3_OK:
            return CheckResult.ok(**detail)
        fault = codec.sam_fault(code)
        return CheckResult.fault(fault["reason"], sw3=fault["sw3"], **detail)

    def self_test(self, read: bool = False) -> dict[str, Any]:
        """SAM status and ID; with ``read``, also find/select/read a card (masked fields only).
        A SAM status error is named: ``sam_error`` ``{"sw3": "0x60", "reason": "SAM self-test failed"}``."""
        code = self._sam_status_checked()
        sam_ok = code == codec.SW3_OK
        result: dict[str, Any] = {"sam_id": self.sam_id() if sam_ok else None, "sam_ok": sam_ok}
        if not sam_ok:
            result["sam_error"] = codec.sam_fault(code)
        if read:
            card: dict[str, Any] = {"present": None, "type": None, "name_masked": None, "id_masked": None}
            if sam_ok:
                found = self.read_placed_card()
                card["present"] = found is not None
                if found is not None:
                    card.update(type=found.type, name_masked=found.name_masked, id_masked=found.id_masked)
            result["card"] = card
        return result
