"""Regenerate the committed captures in tests/drivers/testcases/<model>/<case>/ from the emulators.

    .venv/bin/python -m tests.capture.make_testcases [--only MODEL/CASE]

Each case runs ``posfleet diag capture`` (the real command) against an emulator twin with
the fault switches named here. Captures from the field are copied in by hand instead; this
script never touches a folder it does not list.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner

from posfleet.cli_diag_capture import command
from simulator.emulators.pty import PtyDevice

TESTCASES = Path(__file__).resolve().parent.parent / "drivers" / "testcases"


def _modem(profile: str, **kwargs: object) -> Callable[[], PtyDevice]:
    def start() -> PtyDevice:
        from simulator.emulators.modem import ModemEmulator

        return PtyDevice(ModemEmulator(profile, **kwargs)).start()  # type: ignore[arg-type]

    return start


def _printer(profile: str, *faults: str) -> Callable[[], PtyDevice]:
    def start() -> PtyDevice:
        from simulator.emulators.printer import PrinterEmulator, serve

        emu = PrinterEmulator(profile)
        emu.faults.update(faults)
        return serve(profile, emu)

    return start


def _reader(card: str | None, *faults: str) -> Callable[[], PtyDevice]:
    def start() -> PtyDevice:
        from simulator.emulators.idcard import serve

        dev = serve(card=card)
        dev.emulator.faults.update(faults)  # type: ignore[attr-defined]
        return dev

    return start


@dataclass(frozen=True)
class Case:
    model: str  # folder under testcases/: the firmware profile name
    name: str
    kind: str
    start: Callable[[], PtyDevice]
    args: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def folder(self) -> Path:
        return TESTCASES / self.model / self.name


CASES = [
    Case("quectel-ec20", "ok", "modem", _modem("quectel-ec20"), note="emulator: registered, SIM ready"),
    Case("generic-3gpp", "sim-missing", "modem", _modem("generic-3gpp", faults=["sim_missing"]),
         note="emulator fault sim_missing"),
    Case("simcom-sim7600", "ok-crcrlf", "modem", _modem("simcom-sim7600"),
         note="emulator: SIMCom CR CR LF framing"),
    Case("simcom-sim7600", "wcdma-3g", "modem", _modem("simcom-sim7600", act=2, rscp_dbm=-85, ecio_db=-6.5),
         note="emulator: on a WCDMA cell, AT+CPSI? answers the WCDMA form (Ec/Io, RSCP): asked once"),
    Case("fibocom-l610", "ok", "modem", _modem("fibocom-l610"),
         note="emulator: AT+GTCCINFO? answers signal and serving cell: asked once"),
    Case("generic-3gpp", "cpin-cme-100", "modem", _modem("generic-3gpp", cpin_cme=100),
         note="emulator: AT+CPIN? answers +CME ERROR: 100 (unknown); the ICCID is still read"),
    Case("generic-58mm", "ok", "printer", _printer("generic-58mm"), note="emulator: ready"),
    Case("generic-58mm", "paper-out", "printer", _printer("generic-58mm", "printer_paper_out"),
         note="emulator fault printer_paper_out"),
    Case("generic-sam", "read-resident", "idcard", _reader("resident"), ["--read-card"],
         note="emulator: synthetic resident card, read in 256-byte chunks"),
    Case("generic-sam", "read-foreigner-garbage", "idcard", _reader("foreigner", "garbage"), ["--read-card"],
         note="emulator: synthetic foreigner card, line noise before every reply"),
    Case("generic-sam", "self-test-failed", "idcard", _reader(None, "sam_self_test_failed"),
         note="emulator fault sam_self_test_failed"),
]


def record(case: Case, folder: Path) -> int:
    """Run ``posfleet diag capture`` for ``case`` into ``folder``; return its exit code."""
    dev = case.start()
    try:
        profile = case.model
        result = CliRunner().invoke(command, ["--kind", case.kind, "--port", dev.path, "--profile", profile,
                                              "--out", str(folder), "--force", "--note", case.note, *case.args])
    finally:
        dev.stop()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code


def main(argv: list[str]) -> int:
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    for case in CASES:
        if only and only != f"{case.model}/{case.name}":
            continue
        code = record(case, case.folder)
        print(f"{case.model}/{case.name}: exit {code}")  # noqa: T201 - a developer script's output
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
