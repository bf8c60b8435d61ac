"""Pure codec for the GA 467 "SAM" protocol of second-generation ID card readers.

No I/O here: frames are built and decoded from bytes, text blocks are split into fields,
ID numbers are checked. Everything that fails to parse raises a :mod:`drivers.errors` type
(:class:`ProtocolError` for bytes we cannot make sense of, :class:`DeviceFault` for a SAM
status that says "error"), never ``IndexError``/``UnicodeDecodeError``.

Frame (both directions)::

    AA AA AA 96 69 | LEN1 LEN2 | body ... | CHK

LEN is big-endian and counts the body plus CHK; CHK is the XOR of LEN1..last body byte.
Host body = CMD PARA [DATA]; reader body = SW1 SW2 SW3 [DATA].

Personal data: :class:`CardText` holds the unmasked fields of a card. Its ``repr`` hides
them; callers turn it into a masked record (``drivers.idcard.mask.mask_card``) at once and
drop it. Photo bytes are never returned, only whether a photo is present.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from ..errors import DeviceFault, ProtocolError

PREAMBLE = b"\xaa\xaa\xaa\x96\x69"
HEADER_LEN = 7  # preamble + LEN1 LEN2
MIN_LEN = 3  # CMD PARA CHK (host) / reader frames need 4, checked by parse_reply
MAX_LEN = 0x0A00  # largest real reply is 30 10 with a 1024-byte fingerprint: LEN 0x090A

# commands (CMD, PARA) --------------------------------------------------------------------
RESET = (0x10, 0xFF)
SAM_STATUS = (0x11, 0xFF)
SAM_ID = (0x12, 0xFF)
FIND_CARD = (0x20, 0x01)
SELECT_CARD = (0x20, 0x02)
READ_TEXT_PHOTO = (0x30, 0x01)
READ_ADDRESS = (0x30, 0x03)
READ_TEXT_PHOTO_FP = (0x30, 0x10)
SET_RF_FRAME = (0x61, 0xFF)

COMMAND_NAMES: dict[tuple[int, int], str] = {
    RESET: "reset SAM",
    SAM_STATUS: "SAM status",
    SAM_ID: "read SAM ID",
    FIND_CARD: "find card",
    SELECT_CARD: "select card",
    READ_TEXT_PHOTO: "read text+photo",
    READ_ADDRESS: "read appended address",
    READ_TEXT_PHOTO_FP: "read text+photo+fingerprint",
    SET_RF_FRAME: "set RF frame size",
}

# SW3 status codes ---------------------------------------------------------------------------
SW3_OK = 0x90
SW3_FIND_OK = 0x9F
SW3_NO_CONTENT = 0x91
SW3_BAD_CHECKSUM = 0x10
SW3_BAD_LENGTH = 0x11
SW3_BAD_COMMAND = 0x21
SW3_READ_FAILED = 0x41
SW3_SELF_TEST_FAILED = 0x60
SW3_FIND_FAILED = 0x80
SW3_SELECT_FAILED = 0x81

SW3_TEXT: dict[int, str] = {
    0x90: "success",
    0x9F: "find card success",
    0x91: "no content for this item",
    0x10: "SAM received a frame with bad checksum",
    0x11: "SAM received a frame with bad length",
    0x21: "bad command (value or sequence error)",
    0x23: "unauthorised operation",
    0x24: "unrecognised error",
    0x31: "card failed to authenticate the SAM",
    0x32: "SAM failed to authenticate the card",
    0x33: "information verification error",
    0x40: "unrecognised card type",
    0x41: "read card failed",
    0x47: "get random number failed",
    0x60: "SAM self-test failed, cannot accept commands",
    0x66: "SAM not authorised",
    0x80: "find card failed",
    0x81: "select card failed",
}
SUCCESS_CODES = frozenset({SW3_OK, SW3_FIND_OK, SW3_NO_CONTENT})


def describe_sw3(sw3: int) -> str:
    return SW3_TEXT.get(sw3, f"unknown SAM status 0x{sw3:02X}")


def sam_fault(sw3: int) -> dict[str, str]:
    """What a SAM status error means, the one wording the agent's check and ``diag idcard`` both give:
    ``{"sw3": "0x60", "reason": "SAM self-test failed"}``."""
    reason = "SAM self-test failed" if sw3 == SW3_SELF_TEST_FAILED else f"SAM status 0x{sw3:02X}: {describe_sw3(sw3)}"
    return {"sw3": f"0x{sw3:02X}", "reason": reason}


# frames ---------------------------------------------------------------------------------------
def xor(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def build_frame(body: bytes) -> bytes:
    """Wrap ``body`` (CMD PARA DATA, or SW1 SW2 SW3 DATA) into a complete frame."""
    n = len(body) + 1
    if not MIN_LEN <= n <= 0xFFFF:
        raise ValueError(f"frame body of {len(body)} bytes cannot be framed")
    length = n.to_bytes(2, "big")
    return PREAMBLE + length + body + bytes([xor(length + body)])


def build_command(cmd: int, para: int, data: bytes = b"") -> bytes:
    return build_frame(bytes([cmd, para]) + data)


def build_reply(sw3: int, data: bytes = b"", sw1: int = 0, sw2: int = 0) -> bytes:
    return build_frame(bytes([sw1, sw2, sw3]) + data)


@dataclass(frozen=True)
class Frame:
    """One complete frame whose checksum verified. ``body`` excludes LEN and CHK."""

    body: bytes


class FrameDecoder:
    """Streaming decoder: feed raw bytes, get complete checksum-valid frames.

    Resyncs on the preamble after garbage; waits for LEN, then for the whole frame; a
    frame whose checksum fails is discarded whole and counted in :attr:`bad_frames`
    (its first bytes kept in :attr:`last_bad` for diagnostics: header only, never data).
    A preamble followed by an impossible LEN is treated as garbage.
    """

    def __init__(self, max_len: int = MAX_LEN) -> None:
        self.max_len = max_len
        self._buf = bytearray()
        self.bad_frames = 0
        self.discarded = 0  # garbage bytes skipped while resyncing
        self.last_bad = b""

    @property
    def pending(self) -> int:
        return len(self._buf)

    def head(self, n: int = 16) -> bytes:
        """The first ``n`` buffered bytes (a partial frame's header, for timeout messages)."""
        return bytes(self._buf[:n])

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(PREAMBLE)
            if start < 0:
                # keep a tail that could be the start of a preamble split across reads
                keep = 0
                for k in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
                    if buf.endswith(PREAMBLE[:k]):
                        keep = k
                        break
                self.discarded += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            if start:
                self.discarded += start
                del buf[:start]
            if len(buf) < HEADER_LEN:
                return out
            n = int.from_bytes(buf[5:7], "big")
            if not MIN_LEN <= n <= self.max_len:
                # not a real frame: skip this preamble's first byte and look again
                self.discarded += 1
                del buf[:1]
                continue
            total = HEADER_LEN + n
            if len(buf) < total:
                return out
            frame = bytes(buf[:total])
            del buf[:total]
            if xor(frame[5:-1]) != frame[-1]:
                self.bad_frames += 1
                self.last_bad = frame[:10]
                continue
            out.append(Frame(frame[HEADER_LEN:-1]))


def decode_frames(data: bytes) -> list[Frame]:
    """All complete, valid frames in ``data`` (convenience for tests and captures)."""
    return FrameDecoder().feed(data)


@dataclass(frozen=True)
class Command:
    cmd: int
    para: int
    data: bytes = b""

    @property
    def key(self) -> tuple[int, int]:
        return (self.cmd, self.para)


def parse_command(frame: Frame) -> Command:
    body = frame.body
    if len(body) < 2:
        raise ProtocolError("command frame shorter than CMD PARA", body)
    return Command(body[0], body[1], body[2:])


@dataclass(frozen=True, repr=False)
class Reply:
    sw1: int
    sw2: int
    sw3: int
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.sw3 in SUCCESS_CODES

    def __repr__(self) -> str:  # data may be a card's text block: never show it
        return f"Reply(sw3=0x{self.sw3:02X} {describe_sw3(self.sw3)!r}, {len(self.data)} data bytes)"


def parse_reply(frame: Frame) -> Reply:
    body = frame.body
    if len(body) < 3:
        raise ProtocolError("reply frame shorter than SW1 SW2 SW3", body)
    return Reply(body[0], body[1], body[2], body[3:])


def expect(reply: Reply, command: str, *accepted: int) -> Reply:
    """Return ``reply`` if its SW3 is one of ``accepted``; else raise.

    A known SAM error code raises :class:`DeviceFault` (code ``"0xNN"``); a code not in the
    GA 467 table raises :class:`ProtocolError` (some vendors emit non-standard frames).
    """
    if reply.sw3 in accepted:
        return reply
    code = f"0x{reply.sw3:02X}"
    if reply.sw3 in SW3_TEXT:
        raise DeviceFault(f"{command}: SAM answered {code} ({SW3_TEXT[reply.sw3]})", code=code)
    raise ProtocolError(f"{command}: unknown SAM status {code}", bytes([reply.sw1, reply.sw2, reply.sw3]))


# read replies ---------------------------------------------------------------------------------
TEXT_LEN = 256
PHOTO_LEN = 1024


@dataclass(frozen=True, repr=False)
class ReadBlocks:
    """A read reply split by its length words. The photo itself is not kept."""

    text: bytes
    photo_len: int
    photo_present: bool
    fingerprint_len: int

    def __repr__(self) -> str:
        return (
            f"ReadBlocks(text=<{len(self.text)} bytes>, photo_len={self.photo_len}, "
            f"photo_present={self.photo_present}, fingerprint_len={self.fingerprint_len})"
        )


def split_read_reply(reply: Reply, *, fingerprint: bool = False) -> ReadBlocks:
    """Split the data of a 30 01 (two length words) or 30 10 (three) reply.

    Error messages carry only the length words, never the blocks.
    """
    data = reply.data
    words = 3 if fingerprint else 2
    head = 2 * words
    if len(data) < head:
        raise ProtocolError(f"read reply too short for {words} length words ({len(data)} bytes)")
    lengths = struct.unpack(f">{words}H", data[:head])
    text_len, photo_len = lengths[0], lengths[1]
    fp_len = lengths[2] if fingerprint else 0
    if head + text_len + photo_len + fp_len != len(data):
        raise ProtocolError(
            f"read reply length words {'/'.join(map(str, lengths))} do not add up "
            f"to its {len(data) - head} data bytes"
        )
    if text_len != TEXT_LEN:
        raise ProtocolError(f"text block of {text_len} bytes (expected {TEXT_LEN})")
    photo = data[head + text_len : head + text_len + photo_len]
    present = photo_len > 0 and photo[:2] == b"WL"
    return ReadBlocks(data[head : head + text_len], photo_len, present, fp_len)


# text blocks ------------------------------------------------------------------------------------
CardType = Literal["resident", "hk_mo_tw", "foreigner"]
TYPE_MARK_OFFSET = 248

GENDERS = {"0": "unknown", "1": "male", "2": "female", "9": "unspecified"}
LONG_TERM = "长期"

NATIONS = dict(
    enumerate(
        (
            "汉 蒙古 回 藏 维吾尔 苗 彝 壮 布依 朝鲜 满 侗 瑶 白 土家 哈尼 哈萨克 傣 黎 傈僳 佤 畲 高山 "
            "拉祜 水 东乡 纳西 景颇 柯尔克孜 土 达斡尔 仫佬 羌 布朗 撒拉 毛南 仡佬 锡伯 阿昌 普米 "
            "塔吉克 怒 乌孜别克 俄罗斯 鄂温克 德昂 保安 裕固 京 塔塔尔 独龙 鄂伦春 赫哲 门巴 珞巴 基诺"
        ).split(),
        start=1,
    )
)
NATIONS[97] = "其他"
NATIONS[98] = "外国血统中国籍人士"


def nation_name(code: str) -> str:
    """``"01"`` -> ``"汉"``; unknown or blank codes give ``""``."""
    return NATIONS.get(int(code), "") if code.isascii() and code.isdigit() else ""


@dataclass(frozen=True, repr=False)
class CardText:
    """Decoded (UNMASKED) fields of a card's text block. ``repr`` shows none of them.

    Resident and HK/Macao/Taiwan permit cards share the first 220 bytes; foreigner
    permanent residence cards use a different layout (their permit number is in
    ``id_number``, the English name in ``english_name``).
    """

    type: CardType
    name: str
    gender: str  # code: "0", "1", "2", "9"
    birth: str  # YYYYMMDD
    id_number: str
    valid_from: str
    valid_to: str  # YYYYMMDD or "长期"
    nation: str = ""  # "01".."56", "97", "98"; blank on permits
    address: str = ""
    authority: str = ""
    pass_number: str = ""  # J: HK/Macao/Taiwan pass number
    issue_count: str = ""  # J
    english_name: str = ""  # I
    nationality: str = ""  # I: ISO 3166 alpha-3
    card_version: str = ""  # I
    authority_code: str = ""  # I

    def __repr__(self) -> str:
        return f"CardText(type={self.type!r}, <personal data hidden>)"

    __str__ = __repr__


# (offset, bytes) of each field
_RESIDENT = {
    "name": (0, 30),
    "gender": (30, 2),
    "nation": (32, 4),
    "birth": (36, 16),
    "address": (52, 70),
    "id_number": (122, 36),
    "authority": (158, 30),
    "valid_from": (188, 16),
    "valid_to": (204, 16),
}
_PERMIT_EXTRA = {"pass_number": (220, 18), "issue_count": (238, 4)}
_FOREIGNER = {
    "english_name": (0, 120),
    "gender": (120, 2),
    "id_number": (122, 30),
    "nationality": (152, 6),
    "name": (158, 30),
    "valid_from": (188, 16),
    "valid_to": (204, 16),
    "birth": (220, 16),
    "card_version": (236, 4),
    "authority_code": (240, 8),
}
_LAYOUTS: dict[str, dict[str, tuple[int, int]]] = {
    "resident": _RESIDENT,
    "hk_mo_tw": {**_RESIDENT, **_PERMIT_EXTRA},
    "foreigner": _FOREIGNER,
}
_TYPE_MARKS = {"hk_mo_tw": "J", "foreigner": "I"}


def card_type(block: bytes) -> CardType:
    """Type from the mark at offset 248: ``J`` permit, ``I`` foreigner, blank resident.

    Any other mark (e.g. a newer card type) raises :class:`ProtocolError`.
    """
    if len(block) != TEXT_LEN:
        raise ProtocolError(f"text block of {len(block)} bytes (expected {TEXT_LEN})")
    mark = block[TYPE_MARK_OFFSET : TYPE_MARK_OFFSET + 2]
    if mark == b"J\x00":
        return "hk_mo_tw"
    if mark == b"I\x00":
        return "foreigner"
    if mark in (b" \x00", b"\x00\x00"):
        return "resident"
    raise ProtocolError(f"unknown card type mark {mark.hex(' ')} at offset {TYPE_MARK_OFFSET}")


def _text(block: bytes, offset: int, size: int) -> str:
    raw = block[offset : offset + size]
    try:
        s = raw.decode("utf-16-le")
    except UnicodeDecodeError as err:
        # messages name the field position only: the bytes may be personal data
        raise ProtocolError(f"text block field at offset {offset} is not UCS-2") from err
    return s.rstrip(" \x00")


def decode_text_block(block: bytes) -> CardText:
    """Decode a 256-byte text block (UCS-2LE, space padded) into :class:`CardText`."""
    kind = card_type(block)
    fields = {name: _text(block, off, size) for name, (off, size) in _LAYOUTS[kind].items()}
    if fields["gender"] not in GENDERS:
        raise ProtocolError(f"gender code {fields['gender']!r} is not one of 0/1/2/9")
    if kind == "resident" and not (len(fields["nation"]) == 2 and fields["nation"].isascii() and fields["nation"].isdigit()):
        raise ProtocolError("nation code is not two digits")
    return CardText(type=kind, **fields)


def encode_text_block(card: CardText) -> bytes:
    """Inverse of :func:`decode_text_block` (emulators and tests build synthetic cards)."""
    block = bytearray(" ".encode("utf-16-le") * (TEXT_LEN // 2))
    for name, (off, size) in _LAYOUTS[card.type].items():
        raw = getattr(card, name).encode("utf-16-le")
        if len(raw) > size:
            raise ValueError(f"{name} longer than {size // 2} characters")
        block[off : off + len(raw)] = raw
    mark = _TYPE_MARKS.get(card.type)
    if mark:
        block[TYPE_MARK_OFFSET : TYPE_MARK_OFFSET + 2] = mark.encode("utf-16-le")
    return bytes(block)


def birth_year(card: CardText) -> int | None:
    b = card.birth
    return int(b[:4]) if len(b) == 8 and b.isascii() and b.isdigit() else None


# ID numbers ----------------------------------------------------------------------------------------
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_MAP = "10X98765432"


def id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need exactly 17 digits")
    return _CHECK_MAP[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def id_checksum_ok(id_number: str) -> bool:
    s = id_number.upper()
    if len(s) != 18 or not s[:17].isascii() or not s[:17].isdigit():
        return False
    return id_check_digit(s[:17]) == s[17]


def id_birth_matches(id_number: str, birth: str) -> bool:
    """The ID number's digits 7-14 equal the card's birth date."""
    return len(id_number) == 18 and len(birth) == 8 and id_number[6:14] == birth


# SAM ID ------------------------------------------------------------------------------------------------
SAM_ID_LEN = 16


def format_sam_id(data: bytes) -> str:
    """16 bytes (u16 LE, u16 LE, u32 LE, u32 LE, u32 LE) -> ``05.01-20101103-0001234567-0987654321``."""
    if len(data) != SAM_ID_LEN:
        raise ProtocolError(f"SAM ID of {len(data)} bytes (expected {SAM_ID_LEN})", data)
    a, b, c, d, e = struct.unpack("<HHIII", data)
    return f"{a:02d}.{b:02d}-{c:08d}-{d:010d}-{e:010d}"


def encode_sam_id(text: str) -> bytes:
    a, b, c, d, e = _sam_id_parts(text)
    try:
        return struct.pack("<HHIII", a, b, c, d, e)
    except struct.error as err:
        raise ValueError(f"SAM ID {text!r} out of range") from err


def _sam_id_parts(text: str) -> tuple[int, ...]:
    parts = text.strip().replace(".", "-").split("-")
    if not 4 <= len(parts) <= 5 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"not a SAM ID: {text!r}")
    return tuple(int(p) for p in parts)


def normalize_sam_id(text: str) -> tuple[int, ...]:
    """Numeric parts of a SAM ID, so differently padded forms (and 4-part forms) compare."""
    return _sam_id_parts(text)


def same_sam_id(a: str, b: str) -> bool:
    """Compare two printed SAM IDs numerically; a 4-part form matches on its four parts."""
    pa, pb = normalize_sam_id(a), normalize_sam_id(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]
