"""Emulated GA 467 ID card reader: the twin of ``drivers.idcard``.

It parses host frames with a real XOR check (a bad checksum is answered with SW3 0x10),
models a card being placed, found, selected, read, lifted and re-placed, answers with
synthetic cards of made-up people (never real dumps) and can misbehave on demand.

Fault switches (``emulator.faults``):

``idcard_reader_fault``
    the security module stops answering: every frame is ignored (scenario fault).
``sam_self_test_failed``
    the SAM answers every command with SW3 0x60.
``slow``
    every reply is held back ``slow_delay`` seconds (still inside the generic timeouts).
``garbage``
    line noise (random bytes, a broken preamble, a preamble with an impossible length)
    precedes every reply.
``bad_checksum``
    every reply's CHK byte is wrong.
``unplug``
    the reader disappears: with a :class:`PtyDevice` attached (``serve`` attaches it) the
    pty master is closed, so the driver's port fails with EIO as a pulled USB cable does.
    This cannot be undone on that pty; without one attached it behaves as silence.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, replace

from drivers.idcard import codec
from drivers.idcard.codec import CardText
from drivers.idcard.device import load_profile

from .pty import PtyDevice

log = logging.getLogger(__name__)

FAULTS = frozenset({"idcard_reader_fault", "sam_self_test_failed", "slow", "garbage", "bad_checksum", "unplug"})

DEFAULT_SAM_ID = "05.01-20101103-0001234567-0987654321"
# Not a photo: "WL" and a counting pattern, enough for the driver's presence check.
SYNTHETIC_PHOTO = b"WL" + bytes(i % 251 for i in range(codec.PHOTO_LEN - 2))


def _id(prefix6: str, birth: str, seq: str) -> str:
    first17 = prefix6 + birth + seq
    return first17 + codec.id_check_digit(first17)


@dataclass
class SyntheticCard:
    """A made-up card. ``type_mark`` overrides the mark at offset 248 (to test unknown types)."""

    text: CardText
    photo: bytes = SYNTHETIC_PHOTO
    fingerprint_len: int = 0  # 0, 512 or 1024 bytes in a 30 10 reply
    appended_address: str | None = None
    type_mark: str | None = None

    def text_block(self) -> bytes:
        block = codec.encode_text_block(self.text)
        if self.type_mark is not None:
            off = codec.TYPE_MARK_OFFSET
            block = block[:off] + self.type_mark.encode("utf-16-le")[:2].ljust(2, b"\0") + block[off + 2 :]
        return block

    @classmethod
    def resident(cls, **changes: object) -> SyntheticCard:
        """A resident ID card of a made-up person (valid check digit, matching birth date)."""
        text = CardText(
            type="resident",
            name="申测样",
            gender="2",
            nation="01",
            birth="19900307",
            address="北京市东城区测试路1号测试小区2栋3单元401室",
            id_number=_id("110101", "19900307", "128"),
            authority="北京市公安局测试分局",
            valid_from="20200101",
            valid_to="20400101",
        )
        return cls(text=replace(text, **changes))  # type: ignore[arg-type]

    @classmethod
    def long_term(cls) -> SyntheticCard:
        """A resident card valid for life ("长期"), as issued to people over 46."""
        return cls.resident(
            name="龙长期", gender="1", nation="03", birth="19580715",
            id_number=_id("640104", "19580715", "013"), valid_from="20100301", valid_to=codec.LONG_TERM,
        )

    @classmethod
    def hk_mo_tw(cls) -> SyntheticCard:
        """A Hong Kong/Macao/Taiwan residents' residence permit ('J'), made up."""
        text = CardText(
            type="hk_mo_tw",
            name="蓝测港",
            gender="1",
            nation="",
            birth="19851120",
            address="广东省深圳市福田区测试大道88号",
            id_number=_id("810000", "19851120", "041"),
            authority="深圳市公安局",
            valid_from="20190601",
            valid_to="20240601",
            pass_number="H98765432",
            issue_count="01",
        )
        return cls(text=text)

    @classmethod
    def foreigner(cls) -> SyntheticCard:
        """A foreigner permanent residence ID card (2017 layout, 'I'), made up."""
        text = CardText(
            type="foreigner",
            name="测外样",
            english_name="SAMPLE, TESTER",
            gender="1",
            id_number="USA310087060512",
            nationality="USA",
            birth="19870605",
            valid_from="20180101",
            valid_to="20280101",
            card_version="01",
            authority_code="1500",
        )
        return cls(text=text)


@dataclass
class _CardState:
    present: bool = False
    found: bool = False
    selected: bool = False
    read_since_placed: bool = False


class IdCardEmulator:
    """Feed it host bytes, get reader bytes; see the module docstring for fault switches."""

    def __init__(
        self,
        card: SyntheticCard | None = None,
        *,
        sam_id: str = DEFAULT_SAM_ID,
        slow_delay: float = 0.3,
        lift_to_reread: bool = True,
        seed: int = 467,
    ) -> None:
        self.card = card
        self.sam_id = sam_id
        self.slow_delay = slow_delay
        self.lift_to_reread = lift_to_reread
        self.faults: set[str] = set()
        self.received: list[str] = []  # names of the commands received, for tests
        self.state = _CardState(present=card is not None)
        self._decoder = codec.FrameDecoder()
        self._bad_seen = 0
        self._queue: list[tuple[float, bytes]] = []
        self._rng = random.Random(seed)
        self._pty: PtyDevice | None = None
        self._unplugged = False

    # placement ------------------------------------------------------------------------------------
    def attach(self, pty: PtyDevice) -> None:
        self._pty = pty

    def place(self, card: SyntheticCard | None = None) -> None:
        """Put a card (this one, or the last one) on the reader."""
        if card is not None:
            self.card = card
        if self.card is None:
            raise ValueError("no card to place")
        self.state = _CardState(present=True)

    def lift(self) -> None:
        self.state = _CardState(present=False)

    # emulator protocol ------------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes | None:
        if self._silent():
            return None
        frames = self._decoder.feed(data)
        out = bytearray()
        while self._bad_seen < self._decoder.bad_frames:
            self._bad_seen += 1
            self.received.append("<bad checksum>")
            out += codec.build_reply(codec.SW3_BAD_CHECKSUM)
        for frame in frames:
            out += self._answer(codec.parse_command(frame))
        return self._deliver(bytes(out)) if out else None

    def pending(self) -> bool:
        """Whether tick() has anything to do soon (the pty hub ticks lazy devices only then)."""
        return bool(self._queue) or ("unplug" in self.faults and not self._unplugged)

    def tick(self) -> bytes | None:
        if "unplug" in self.faults:
            self._unplug()
            return None
        if not self._queue:
            return None
        now = time.monotonic()
        due = [data for when, data in self._queue if when <= now]
        self._queue = [(when, data) for when, data in self._queue if when > now]
        return b"".join(due) or None

    # internals ------------------------------------------------------------------------------------------
    def _silent(self) -> bool:
        return bool(self.faults & {"idcard_reader_fault", "unplug"})

    def _unplug(self) -> None:
        if self._unplugged or self._pty is None:
            return
        self._unplugged = True
        pty = self._pty
        fd, pty.master = pty.master, -1  # the pty loop stops at its next select
        pty.unplugged = True
        try:
            os.close(fd)
        except OSError:
            pass
        log.debug("reader unplugged: closed pty master of %s", pty.path)

    def _deliver(self, reply: bytes) -> bytes | None:
        if "bad_checksum" in self.faults:
            reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
        if "garbage" in self.faults:
            # no 0x69 in the noise, so it can never hold a whole preamble by chance
            noise = bytes(self._rng.choice((0xAA, 0x96, 0x00, 0xFF, 0x13, 0x55)) for _ in range(12))
            reply = noise + codec.PREAMBLE + b"\xff\xff" + b"\xaa\xaa\xaa\x96" + reply
        if "slow" in self.faults:
            self._queue.append((time.monotonic() + self.slow_delay, reply))
            return None
        return reply

    def _answer(self, cmd: codec.Command) -> bytes:
        key = cmd.key
        self.received.append(codec.COMMAND_NAMES.get(key, f"{cmd.cmd:02X} {cmd.para:02X}"))
        if "sam_self_test_failed" in self.faults:
            return codec.build_reply(codec.SW3_SELF_TEST_FAILED)
        st = self.state
        if key == codec.RESET:
            st.found = st.selected = False
            return codec.build_reply(codec.SW3_OK)
        if key in (codec.SAM_STATUS, codec.SET_RF_FRAME):
            return codec.build_reply(codec.SW3_OK)
        if key == codec.SAM_ID:
            return codec.build_reply(codec.SW3_OK, codec.encode_sam_id(self.sam_id))
        if key == codec.FIND_CARD:
            if not st.present or (st.read_since_placed and self.lift_to_reread):
                st.found = st.selected = False
                return codec.build_reply(codec.SW3_FIND_FAILED)
            st.found = True
            return codec.build_reply(codec.SW3_FIND_OK, bytes(4))
        if key == codec.SELECT_CARD:
            if not (st.present and st.found):
                return codec.build_reply(codec.SW3_SELECT_FAILED)
            st.selected = True
            return codec.build_reply(codec.SW3_OK, bytes(8))
        if key in (codec.READ_TEXT_PHOTO, codec.READ_TEXT_PHOTO_FP):
            return self._read(fingerprint=key == codec.READ_TEXT_PHOTO_FP)
        if key == codec.READ_ADDRESS:
            card = self.card
            if not st.present or card is None:
                return codec.build_reply(codec.SW3_READ_FAILED)
            if not card.appended_address:
                return codec.build_reply(codec.SW3_NO_CONTENT)
            return codec.build_reply(codec.SW3_OK, card.appended_address.ljust(35).encode("utf-16-le")[:70])
        return codec.build_reply(codec.SW3_BAD_COMMAND)

    def _read(self, *, fingerprint: bool) -> bytes:
        st, card = self.state, self.card
        if not (st.present and st.selected) or card is None:
            return codec.build_reply(codec.SW3_READ_FAILED)
        text, photo = card.text_block(), card.photo
        if fingerprint:
            fp = bytes((i * 7) % 256 for i in range(card.fingerprint_len))
            words = len(text).to_bytes(2, "big") + len(photo).to_bytes(2, "big") + len(fp).to_bytes(2, "big")
            data = words + text + photo + fp
        else:
            data = len(text).to_bytes(2, "big") + len(photo).to_bytes(2, "big") + text + photo
        st.found = st.selected = False
        st.read_since_placed = True
        return codec.build_reply(codec.SW3_OK, data)


SYNTHETIC_KINDS = ("resident", "long_term", "hk_mo_tw", "foreigner")


def serve(
    profile: str = "generic-sam",
    card: SyntheticCard | str | None = "resident",
    *,
    chunk: int = 256,
    chunk_delay: float = 0.02,
) -> PtyDevice:
    """Start an emulated reader of model ``profile`` on a pty; open ``.path`` with the driver.

    ``card``: a :class:`SyntheticCard`, the name of a made-up one (``"resident"``,
    ``"long_term"``, ``"hk_mo_tw"``, ``"foreigner"``) lying on the reader, or None for an
    empty reader. The emulator is ``returned.emulator``; long replies arrive in
    ``chunk``-byte pieces ``chunk_delay`` seconds apart, as a USB reader delivers them.
    Call ``.stop()`` when done.
    """
    if isinstance(card, str):
        if card not in SYNTHETIC_KINDS:
            raise ValueError(f"unknown synthetic card {card!r} (one of {', '.join(SYNTHETIC_KINDS)})")
        card = getattr(SyntheticCard, card)()
    prof = load_profile(profile)
    emulator = IdCardEmulator(card, lift_to_reread=prof.quirks.lift_to_reread)
    pty = PtyDevice(emulator, chunk=chunk, chunk_delay=chunk_delay)
    emulator.attach(pty)
    return pty.start()
