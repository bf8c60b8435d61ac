"""``posfleet diag modem|printer|idcard --baud N``: the port is really opened at N, else at the profile's rate.
The pty keeps the line settings the driver made, so the emulator's side of it shows the speed used."""

from __future__ import annotations

import termios

import pytest
from click.testing import CliRunner

from posfleet import cli_diag_idcard, cli_diag_modem, cli_diag_printer
from simulator.emulators import idcard, modem, printer

KINDS = {
    "modem": (cli_diag_modem.command, lambda: modem.serve("quectel-ec20"), "quectel-ec20"),
    "printer": (cli_diag_printer.command, lambda: printer.serve("generic-58mm"), "generic-58mm"),
    "idcard": (cli_diag_idcard.command, lambda: idcard.serve("generic-sam"), "generic-sam"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(("args", "speed"), [([], termios.B115200), (["--baud", "9600"], termios.B9600)])
def test_baud_option_reaches_the_port(kind: str, args: list[str], speed: int) -> None:
    command, serve, profile = KINDS[kind]
    dev = serve()
    try:
        res = CliRunner().invoke(command, ["--port", dev.path, "--profile", profile, "--json", *args])
        assert res.exit_code == 0, res.output
        ispeed, ospeed = termios.tcgetattr(dev.slave)[4:6]
        assert (ispeed, ospeed) == (speed, speed)
    finally:
        dev.stop()
