"""The agent's printer test page, as bytes (pure: no I/O).

What support staff need from a village clinic's printer: which terminal, which agent,
when; a ruler exactly one line wide (catches a 58/80 mm width mix-up); ASCII and Chinese
samples (catches encoding mistakes: full-width punctuation and ``￥``); double size; a
density pattern; a QR code of the terminal SN; the paper/cover status read just before;
a final cut. No personal data ever goes on this page.

Chinese text is encoded here as GB18030 for a printer put in Chinese mode (``FS &``),
not through python-escpos' MagicEncode (which routes only U+4E00-U+9FA5 to GB18030 and
sends ``¥``/CJK punctuation wrongly). For printers without native ``GS ( k`` the QR code is
rasterised here as ``GS v 0`` from segno's module matrix (segno: pure Python, no dependencies, ~0.1 MB,
imported only then); python-escpos with Pillow, qrcode and PyYAML (~28 MB on disk, ~11 MB RSS) is not
needed on a terminal (issue 13, decision 017).
"""

from __future__ import annotations

from datetime import datetime

from .codec import PrinterStatus, encode_line, fit, ruler, wrap
from .profile import PrinterProfile

ESC = b"\x1b"
GS = b"\x1d"
FS = b"\x1c"
LF = b"\n"

ALIGN_LEFT = ESC + b"a\x00"
ALIGN_CENTER = ESC + b"a\x01"
SIZE_NORMAL = GS + b"!\x00"
SIZE_DOUBLE = GS + b"!\x11"  # double width and double height, ASCII and Chinese alike
CHINESE_ON = FS + b"&"
CHINESE_OFF = FS + b"."

TITLE = "打印机测试页"
CHINESE_SAMPLE = "医保结算测试页，合计：￥12.50"
ASCII_SAMPLE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 !#$%&*+-=/?@"
DOUBLE_SAMPLE = "倍宽倍高 2x"
END_MARK = "-- 测试结束 END --"

_PAPER_TEXT = {"ok": "正常 OK", "near_end": "将尽 NEAR END", "out": "缺纸 OUT"}


def qr_native(payload: str, size: int = 6) -> bytes:
    """``GS ( k``: model 2, module size, EC level M, store data, print."""
    data = payload.encode("ascii")
    if not data or len(data) > 7000:
        raise ValueError("QR payload must be 1..7000 ASCII bytes")

    def fn(cn_fn: bytes, body: bytes) -> bytes:
        n = len(body) + 2
        return GS + b"(k" + bytes((n & 0xFF, n >> 8)) + b"1" + cn_fn + body

    return (
        fn(b"A", b"2\x00")  # fn 65: model 2
        + fn(b"C", bytes((size,)))  # fn 67: module size
        + fn(b"E", b"1")  # fn 69: error correction M
        + fn(b"P", b"0" + data)  # fn 80: store data
        + fn(b"Q", b"0")  # fn 81: print stored data
    )


def qr_raster(payload: str, dots: int) -> bytes:
    """QR (EC level M, 4-module quiet zone) as a ``GS v 0`` raster image, 4 dots a module on a 58 mm head and 6
    on an 80 mm one. segno is imported here only: the test page is rare."""
    import segno  # noqa: PLC0415 - deliberately lazy

    data = payload.encode("ascii")
    if not data or len(data) > 7000:
        raise ValueError("QR payload must be 1..7000 ASCII bytes")
    scale = 6 if dots >= 576 else 4
    qr = segno.make_qr(data, error="m", boost_error=False)
    rows = [bytes(row) for row in qr.matrix_iter(scale=scale, border=4)]
    if len(rows[0]) > dots:
        raise ValueError(f"QR code {len(rows[0])} dots wide does not fit the {dots}-dot head")
    width = (len(rows[0]) + 7) // 8
    out = bytearray(GS + b"v0\x00" + bytes((width & 0xFF, width >> 8, len(rows) & 0xFF, len(rows) >> 8)))
    for row in rows:
        bits = int("".join("1" if m else "0" for m in row).ljust(width * 8, "0"), 2)
        out += bits.to_bytes(width, "big")
    return bytes(out)


def density_pattern(dots: int) -> bytes:
    """``GS v 0``: 8 rows solid, 8 rows 50 % checkerboard, 8 rows vertical stripes, full width."""
    width = dots // 8
    rows = [b"\xff" * width] * 8
    rows += [(b"\xaa" if r % 2 == 0 else b"\x55") * width for r in range(8)]
    rows += [b"\xcc" * width] * 8
    height = len(rows)
    return GS + b"v0\x00" + bytes((width & 0xFF, width >> 8, height & 0xFF, height >> 8)) + b"".join(rows)


def _clean_sn(sn: str) -> str:
    cleaned = "".join(c for c in sn if c.isprintable() and ord(c) < 0x7F).strip()
    if not cleaned:
        raise ValueError("terminal SN must contain printable ASCII characters")
    return cleaned


def build_test_page(
    profile: PrinterProfile,
    *,
    sn: str,
    now: datetime,
    agent_version: str = "",
    status: PrinterStatus | None = None,
) -> bytes:
    """The complete job: init, content, QR of ``sn``, cut. Returns the bytes to send."""
    sn = _clean_sn(sn)
    cols = profile.columns
    enc = profile.encoding
    out = bytearray(profile.init_bytes)
    if profile.features.chinese_mode:
        out += CHINESE_ON

    def line(text: str) -> None:
        for part in wrap(text, cols):
            out.extend(encode_line(part, enc) + LF)

    out += ALIGN_CENTER + SIZE_DOUBLE
    line(fit(TITLE, cols // 2))
    out += SIZE_NORMAL
    line("POSFLEET PRINTER TEST")
    out += ALIGN_LEFT
    line(f"终端编号：{sn}")
    line(f"程序版本：{agent_version or '-'}")
    line(f"时间：{now.strftime('%Y-%m-%d %H:%M:%S')}")
    line(f"型号：{profile.name} {profile.paper_width_mm}mm/{cols}")
    line(ruler(cols))
    line(ASCII_SAMPLE)
    line(CHINESE_SAMPLE)
    out += SIZE_DOUBLE
    line(fit(DOUBLE_SAMPLE, cols // 2))
    out += SIZE_NORMAL
    line("浓度 DENSITY:")
    out += density_pattern(profile.dots) + LF
    if status is not None:
        line(f"纸张：{_PAPER_TEXT[status.paper]}")
        line(f"纸仓盖：{'打开 OPEN' if status.cover_open else '关闭 CLOSED'}")
        if status.errors:
            line("错误：" + ",".join(status.errors))
    line(ruler(cols))
    if profile.features.qr != "none":
        out += ALIGN_CENTER
        out += qr_native(sn) if profile.features.qr == "native" else qr_raster(sn, profile.dots)
        out += LF
        line(sn)
        out += ALIGN_LEFT
    line(END_MARK)
    out += LF * profile.quirks.cut_feed_lines
    if profile.features.cutter:
        out += GS + (b"V\x01" if profile.features.partial_cut else b"V\x00")
    return bytes(out)
