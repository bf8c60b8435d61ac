"""The printer firmware profile: firmware_profiles/printers/NAME.toml, validated strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from drivers import profiles

from .codec import hex_bytes


class LineSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    baudrate: int = 115200
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: float = 1
    rtscts: bool = False
    dsrdtr: bool = False
    xonxoff: bool = False


class Timeouts(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    status: float = 0.5
    gs_r: float = 2.0
    print: float = 15.0


class Features(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    cutter: bool = True
    partial_cut: bool = True
    qr: Literal["native", "raster", "none"] = "native"
    chinese_mode: bool = True
    gs_r: bool = True
    asb: bool = False


class Quirks(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    cut_feed_lines: int = 4
    tolerate_stray_bytes: bool = True


class PrinterProfile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    dialect: Literal["escpos"]
    model: str
    paper_width_mm: int
    dots: int
    columns: int
    encoding: Literal["gb18030", "gbk"]
    init: str
    line: LineSettings
    timeouts: Timeouts
    features: Features
    quirks: Quirks

    @property
    def init_bytes(self) -> bytes:
        return hex_bytes(self.init)


def load_profile(name: str, root: Path | None = None) -> PrinterProfile:
    """Load and validate a printer profile; errors name the file and the dotted field."""
    prof = profiles.load("printer", name, PrinterProfile, root)
    try:
        prof.init_bytes  # noqa: B018 - validate the hex once, at load
    except ValueError as err:
        raise profiles.ProfileError(f"printer profile {name!r}: init: {err}") from err
    if prof.dots < 96 or prof.columns < 16:
        raise profiles.ProfileError(f"printer profile {name!r}: dots/columns too small")
    if prof.line.dsrdtr:
        raise profiles.ProfileError(
            f"printer profile {name!r}: line.dsrdtr: DSR/DTR handshake is not supported by the transport"
        )
    return prof
