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

    emu.revision = "EC25EFAR06A11M4G"  # firmware updated: the modem reboots into it
    emu.reboot()
    assert check(ps) == "identity"
    assert ps.identity()["modem_firmware"] == "EC25EFAR06A11M4G"
    emu.imei = "861234567890999"  # another modem, same SIM: it boots
    emu.reboot()
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


def _asked(emu, before: int, *commands: str) -> int:
    return sum(1 for c in emu.received[before:] if c in commands)


IDENTITY_COMMANDS = ("AT+CGSN", "AT+CIMI", "ATI", "AT+COPS?")


def test_identity_is_not_asked_every_sample(rig) -> None:
    """Eleven AT exchanges a sample, not nineteen: IMEI, IMSI, model, firmware and operator are asked when
    they may have changed, the ICCID every time (a swapped SIM is seen at once, without a reboot)."""
    ps, emu = rig
    assert check(ps) == "identity"
    n0 = len(emu.received)
    for _ in range(5):
        assert check(ps) is None
    assert _asked(emu, n0, *IDENTITY_COMMANDS) == 0, emu.received[n0:]
    assert _asked(emu, n0, "AT+QCCID") == 5 and _asked(emu, n0, "AT+CSQ") == 5, "ICCID and signal every sample"
    assert (len(emu.received) - n0) / 5 <= 11

    emu.iccid, emu.imsi, emu.plmn = "89860099999999999999", "460009999999999", "46000"  # hot swap, no reboot
    assert check(ps) == "sim_changed"
    assert (ps.identity()["imsi"], ps.identity()["carrier"]) == ("460009999999999", "China Mobile")

    n1 = len(emu.received)
    emu.reg_stat = 5  # roaming now: registration changed, so the operator is asked again at the next sample
    check(ps)
    check(ps)
    assert _asked(emu, n1, "AT+COPS?") == 2, "one full read (numeric and named operator)"


def test_identity_is_refreshed_after_its_period(tmp_path) -> None:
    dev = modem.serve("quectel-ec25")
    ps = PeripheralSet(PeripheralsConfig(modem=PeripheralConfig(port=dev.path, profile="quectel-ec25")),
                       identity_refresh_s=0.0)
    try:
        check(ps)
        n0 = len(dev.emulator.received)
        check(ps)
        check(ps)
        assert _asked(dev.emulator, n0, "AT+CGSN") == 2, "period 0: every sample reads the identity"
    finally:
        ps.close()
        dev.stop()
