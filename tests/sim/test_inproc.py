"""The real drivers on in-process emulators (emu://, simulator/emulators/inproc.py) in virtual time: the same
answers as over a pty, and a driver's timeout against a silent emulator passes on the virtual clock, not the
wall's."""

from __future__ import annotations

import time

import pytest

from agent.config import PeripheralConfig, PeripheralsConfig
from agent.peripherals import PeripheralSet
from simulator.emulators import idcard, inproc, modem, printer
from wire.clock import VirtualClock


@pytest.fixture()
def unit():
    clock = VirtualClock(1_700_000_000)
    emus = {"modem": modem.ModemEmulator("quectel-ec20"), "printer": printer.PrinterEmulator("generic-58mm"),
            "idcard": idcard.IdCardEmulator(idcard.SyntheticCard.resident())}
    devs = [inproc.InprocDevice(e, clock, f"t-{k}") for k, e in emus.items()]
    cfg = PeripheralsConfig(modem=PeripheralConfig(port="emu://t-modem", profile="quectel-ec20"),
                            printer=PeripheralConfig(port="emu://t-printer", profile="generic-58mm"),
                            idcard=PeripheralConfig(port="emu://t-idcard", profile="generic-sam"))
    ps = PeripheralSet(cfg, monotonic=clock.monotonic)
    yield clock, emus, ps
    ps.close()
    for d in devs:
        d.close()


def states(ps: PeripheralSet) -> dict[str, tuple[int, str]]:
    return {k: (c.state, c.reason) for k, c in ps.check_all().items()}


@pytest.mark.parametrize("fault,kind,reason,virtual_s", [
    ("modem_unresponsive", "modem", "modem not answering", 2.0),
    ("idcard_reader_fault", "idcard", "SAM not answering", 1.0),
    ("printer_offline", "printer", "printer not answering", 0.5),
])
def test_silent_emulator_costs_virtual_not_real_time(unit, fault, kind, reason, virtual_s):
    clock, emus, ps = unit
    assert all(st == 0 for st, _ in states(ps).values())
    emus[kind].faults.add(fault)
    v0, t0 = clock.monotonic(), time.monotonic()
    got = states(ps)
    waited_virtual, waited_real = clock.monotonic() - v0, time.monotonic() - t0
    assert got[kind] == (1, reason)
    assert waited_virtual >= virtual_s  # the driver's own timeouts from its profile, all of them
    assert waited_real < 0.5 * waited_virtual  # ... passed on the virtual clock (a pty would wait them out)
    emus[kind].faults.discard(fault)
    assert states(ps)[kind] == (0, "")


def test_sim_missing_and_paper_out_read_as_over_a_pty(unit):
    clock, emus, ps = unit
    emus["modem"].faults.add("sim_missing")
    emus["printer"].faults.add("printer_paper_out")
    got = states(ps)
    assert got["modem"][0] == 1 and got["modem"][1].startswith("SIM not inserted")
    assert got["printer"] == (1, "paper out")
    assert got["idcard"] == (0, "")
