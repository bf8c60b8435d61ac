"""The test page, printed by the real driver to the emulator and checked by what came out."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from drivers.printer import Printer, load_profile
from drivers.printer.testpage import CHINESE_SAMPLE, END_MARK, build_test_page
from simulator.emulators.printer import PrinterEmulator, serve

SN = "HN00010001"
NOW = datetime(2026, 11, 2, 9, 30, 5)
PROFILES = ["generic-58mm", "generic-80mm"]
ROOT = Path(__file__).resolve().parents[2]


def _print_page(profile, faults=()):
    emu = PrinterEmulator(profile)
    emu.faults |= set(faults)
    dev = serve(profile, emu)
    try:
        with Printer(dev.path, profile) as printer:
            printer.print_test_page(SN, NOW, agent_version="0.1.0")
        time.sleep(0.05)
    finally:
        dev.stop()
    return emu


@pytest.mark.parametrize("profile", PROFILES)
def test_test_page_reads_right_on_paper(profile):
    emu = _print_page(profile)
    cols = emu.profile.columns
    out = emu.printed
    assert any(SN in line for line in out.lines)
    assert any("0.1.0" in line for line in out.lines)
    assert any("2026-11-02 09:30:05" in line for line in out.lines)
    assert CHINESE_SAMPLE in out.lines  # GB18030 in Chinese mode, full-width ￥ and punctuation intact
    assert not any("\ufffd" in line for line in out.lines)  # no mojibake anywhere
    assert out.qr == [SN]
    assert out.cuts == ["partial"]
    assert out.events[-1] == ("cut", "partial")
    # the ruler is exactly one line: a wrong width would wrap it into two dash lines
    dash_lines = [line for line in out.lines if line and set(line) == {"-"}]
    assert dash_lines and all(line == "-" * cols for line in dash_lines)
    assert any("倍宽倍高" in line for line in out.double_lines)
    assert (emu.profile.dots, 24) in out.images  # density pattern spans the head
    assert "纸张：正常 OK" in out.lines
    assert "纸仓盖：关闭 CLOSED" in out.lines


def test_near_end_is_printed_on_the_page():
    emu = _print_page("generic-58mm", faults={"paper_near_end"})
    assert any("将尽" in line for line in emu.printed.lines)


def test_58mm_page_on_an_80mm_printer_shows_a_short_ruler():
    # what the ruler is for: a 58 mm job on an 80 mm head leaves the ruler short of the edge
    emu = PrinterEmulator("generic-80mm")
    emu.feed(build_test_page(load_profile("generic-58mm"), sn=SN, now=NOW))
    assert "-" * 48 not in emu.printed.lines
    assert "-" * 32 in emu.printed.lines


def test_raster_qr_profile_prints_an_image_instead(tmp_path):
    folder = tmp_path / "printers"
    folder.mkdir()
    base = ROOT / "firmware_profiles" / "printers" / "generic-58mm.toml"
    (folder / "generic-58mm.toml").write_text(base.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "old-58.toml").write_text(
        'inherits = "generic-58mm"\nmodel = "no GS ( k"\n[features]\nqr = "raster"\npartial_cut = false\n',
        encoding="utf-8",
    )
    profile = load_profile("old-58", root=tmp_path)
    emu = PrinterEmulator(profile)
    emu.feed(build_test_page(profile, sn=SN, now=NOW))
    assert emu.printed.qr == []  # no GS ( k sent to a printer that lacks it
    assert len(emu.printed.images) == 2  # density pattern + QR image
    assert emu.printed.cuts == ["full"]
    assert CHINESE_SAMPLE in emu.printed.lines
    assert END_MARK in emu.printed.lines  # python-escpos' ESC t 0 did not break Chinese mode


def test_sn_must_be_printable():
    with pytest.raises(ValueError):
        build_test_page(load_profile("generic-58mm"), sn="\x00\x1b", now=NOW)


def test_status_and_check_do_not_import_python_escpos():
    code = (
        "import sys\n"
        "from datetime import datetime\n"
        "from drivers.printer import Printer, load_profile\n"
        "from drivers.printer.testpage import build_test_page\n"
        "Printer('loop://').check()\n"
        "build_test_page(load_profile('generic-58mm'), sn='X1', now=datetime(2026, 1, 1))\n"
        "assert not [m for m in sys.modules if m.startswith('escpos')], 'escpos imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
