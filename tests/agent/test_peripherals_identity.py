"""The agent's peripheral set against a real modem emulator on a pty: the modem and SIM identity is reported
when first seen and when it changes (a SIM swap is its own event), not with every check."""

from __future__ import annotations

import pytest

from agent.config import PeripheralConfig, PeripheralsConfig
from agent.peripherals import PeripheralSet
from simulator.emulators import modem

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rig():
    dev = modem.serve("quectel-ec25", iccid="89860112345678901234", imsi="460011234567890", plmn="46001",
                      operator_name="CHN-UNICOM")
    ps = PeripheralSet(PeripheralsConfig(modem=PeripheralConfig(port=dev.path, profile="quectel-ec25")))
    yield ps, dev.emulator
    ps.close()
    dev.stop()


def check(ps: PeripheralSet) -> str | None:
    assert ps.check_all()["modem"].state is not None
    return ps.pop_identity_event()


def test_identity_first_seen_then_each_change(rig) -> None:
    ps, emu = rig
    assert check(ps) == "identity"
    first = ps.identity()
    assert (first["iccid"], first["imsi"], first["imei"], first["mcc_mnc"], first["carrier"]) == (
        "89860112345678901234", "460011234567890", "861234567890123", "46001", "China Unicom")
    assert first["modem_model"] == "EC25" and first["modem_firmware"]
    assert check(ps) is None, "an unchanged identity is not reported again"

    emu.revision = "EC25EFAR06A11M4G"  # firmware updated
    assert check(ps) == "identity"
    assert ps.identity()["modem_firmware"] == "EC25EFAR06A11M4G"
    emu.imei = "861234567890999"  # another modem, same SIM
    assert check(ps) == "identity"
    assert ps.identity()["imei"] == "861234567890999" and ps.identity()["iccid"] == "89860112345678901234"

    emu.faults.add("sim_missing")  # SIM pulled: nothing new to say, the last identity is kept
    assert ps.check_all()["modem"].reason == "SIM not inserted"
    assert ps.pop_identity_event() is None and ps.identity()["iccid"] == "89860112345678901234"

    emu.iccid, emu.imsi, emu.plmn = "89860099999999999999", "460009999999999", "46000"  # another SIM
    emu.faults.discard("sim_missing")
    assert check(ps) == "sim_changed"
    now = ps.identity()
    assert (now["iccid"], now["imsi"], now["carrier"], now["imei"]) == (
        "89860099999999999999", "460009999999999", "China Mobile", "861234567890999")
    assert check(ps) is None
