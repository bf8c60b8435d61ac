"""``posfleet sim device``: an emulated peripheral standalone, as an engineer runs it. The real command in its
own process prints a pty path; the real driver connects to it; fault switches are set with ``--fault`` and
toggled by typing their names on stdin."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.modem import Modem
from drivers.printer import Printer
from posfleet.cli import main

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "posfleet", "sim", "device", *args], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    assert path.startswith("/dev/pts/"), (path, proc.stderr.read() if proc.poll() is not None else "")
    return proc, path


def toggle(proc: subprocess.Popen[str], name: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def finish(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_modem_standalone_with_a_fault_switch_toggled_from_stdin() -> None:
    proc, path = start("modem", "--profile", "quectel-ec20", "--fault", "sim_missing")
    try:
        with Modem(path, "quectel-ec20") as m:
            m.init()
            assert m.identity().model == "EC20"  # the quectel-ec20 dialect, not the generic one
            res = m.check()
            assert (res.state, res.reason) == ("fault", "SIM not inserted")
            assert toggle(proc, "sim_missing") == "faults: none"
            assert m.check().state == "ok"
            assert toggle(proc, "modem_unresponsive") == "faults: modem_unresponsive"
    finally:
        finish(proc)


def test_printer_standalone_paper_out_then_refilled() -> None:
    proc, path = start("printer", "--profile", "generic-80mm", "--fault", "printer_paper_out")
    try:
        with Printer(path, "generic-80mm") as p:
            assert p.check().reason == "paper out"
            assert toggle(proc, "printer_paper_out") == "faults: none"
            assert p.check().state == "ok"
    finally:
        finish(proc)


@pytest.mark.parametrize(("args", "field"), [
    (["idcard", "--fault", "printer_paper_out"], "--fault"),  # a printer switch on the reader
    (["modem", "--profile", "no-such-modem"], "--profile"),
])
def test_bad_fault_or_profile_is_a_usage_error_naming_the_option(args: list[str], field: str) -> None:
    res = CliRunner().invoke(main, ["sim", "device", *args])
    assert res.exit_code == 2 and field in res.output, res.output
