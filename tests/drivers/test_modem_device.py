"""The real Modem driver against ModemEmulator over a pty: every profile, every fault switch."""

from __future__ import annotations

import json
import os
import time

import msgspec
import pytest
from click.testing import CliRunner

from drivers import profiles
from drivers.errors import Timeout
from drivers.modem import Modem, load_profile
from posfleet.cli_diag_modem import command as diag_modem
from simulator.emulators.modem import FAULTS, ModemEmulator, serve
from simulator.emulators.pty import PtyDevice

PROFILES = profiles.available("modem")
ICCID = "898602F9091830030220"


def fast(name: str, **timeouts: float):
    """The named profile with shorter timeouts, so fault tests stay under a few seconds."""
    p = load_profile(name)
    t = msgspec.structs.replace(p.timeouts, **{"default": 1.0, "probe": 0.6, "boot": 3.0, **timeouts})
    return msgspec.structs.replace(p, timeouts=t)


def test_all_six_profiles_present():
    assert {"generic-3gpp", "quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s",
            "fibocom-l610"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_status_every_profile(modem_pty, name):
    dev = modem_pty(name, iccid=ICCID, plmn="46011", operator_name="CHN-CT", act=7, csq=18,
                    rsrp_dbm=-101, rsrq_db=-11, sinr_db=9, tac=0x5F0C, cell_id=0xE0B70B)
    with Modem(dev.path, name) as m:
        m.init()
        st = m.status()
        assert m.check().state == "ok"
    assert (st.iccid, st.imsi, st.imei, st.sim) == (ICCID, "460001234567890", "861234567890123", "ready")
    assert (st.operator.mcc_mnc, st.operator.name, st.operator.carrier) == ("46011", "CHN-CT", "China Telecom")
    r = st.registration
    assert (r.state, r.registered, r.technology, r.tac, r.cell_id) == ("home", True, "lte", 0x5F0C, 0xE0B70B)
    assert (st.signal.csq, st.signal.rssi_dbm, st.signal.rsrp_dbm, st.signal.rsrq_db) == (18, -77, -101.0, -11.0)
    prof = load_profile(name)
    # SINR only where the dialect's unit is documented (QCSQ, HCSQ); never guessed elsewhere
    assert st.signal.sinr == (9.0 if prof.commands.signal_dialect in ("qcsq", "hcsq") else None)
    # the modem's own signal lines are kept as sent, so an unconverted value (SINR elsewhere) is not lost
    prefix = {"cesq": "+CESQ:", "qcsq": "+QCSQ:", "hcsq": "^HCSQ:", "cpsi": "+CPSI:", "gtccinfo": "+GTCCINFO:"}
    assert any(r.startswith(prefix[prof.commands.signal_dialect]) for r in st.signal.raw), st.signal.raw
    assert st.model and st.firmware
    assert (st.counters is not None) == prof.features.counters
    if prof.features.counters:
        assert st.counters == {"bytes_sent": 123456, "bytes_received": 654321}
    d = st.as_dict()
    assert json.loads(json.dumps(d))["operator"]["mcc_mnc"] == "46011"


@pytest.mark.parametrize("name", PROFILES)
def test_status_without_identity_asks_only_what_changes(modem_pty, name):
    """The agent's every-sample form: ICCID, radio, registration, cell, signal, counters; not the IMEI, IMSI,
    model, firmware or operator, and not the SIM state it has just read in check()."""
    dev = modem_pty(name, iccid=ICCID, csq=18, tac=0x5F0C, cell_id=0xE0B70B)
    with Modem(dev.path, name) as m:
        m.init()
        n0 = len(dev.emulator.received)
        st = m.status(identity=False, sim="ready")
        asked = dev.emulator.received[n0:]
    assert (st.iccid, st.sim, st.imsi, st.imei, st.model, st.firmware) == (ICCID, "ready", None, None, None, None)
    assert st.operator.mcc_mnc is None and st.operator.carrier is None, "not asked, not guessed"
    assert (st.registration.registered, st.signal.csq) == (True, 18)
    assert not [c for c in asked if c.startswith(("AT+CPIN", "AT+CGSN", "AT+CIMI", "ATI", "AT+COPS", "AT+CGMM",
                                                  "AT+CGMR"))], asked
    assert len(asked) <= 9, asked


@pytest.mark.parametrize("name", ["quectel-ec25", "simcom-sim7600"])
def test_boot_wait_through_mute_phase_and_garbage(modem_pty, name):
    dev = modem_pty(name, boot_delay=1.2, boot_garbage=True)
    with Modem(dev.path, fast(name)) as m:
        t0 = time.monotonic()
        m.init()
        assert time.monotonic() - t0 >= 1.0  # it really waited for the boot
        assert m.sim_state() == "ready"
    assert dev.emulator.ignored >= 2  # AT resent every boot_retry while the modem was mute or garbling
    assert "ATE0" in dev.emulator.received and "AT+CMEE=1" in dev.emulator.received


def test_boot_timeout_when_modem_never_answers(modem_pty):
    dev = modem_pty("quectel-ec20", faults={"modem_unresponsive"})
    with Modem(dev.path, fast("quectel-ec20", boot=1.0)) as m, pytest.raises(Timeout):
        m.init()


def test_modem_unresponsive_is_a_fault_and_recovers(modem_pty):
    dev = modem_pty("quectel-ec25")
    with Modem(dev.path, fast("quectel-ec25")) as m:
        m.init()
        dev.emulator.faults.add("modem_unresponsive")
        t0 = time.monotonic()
        res = m.check()
        assert res.state == "fault" and res.reason == "modem not answering"
        assert time.monotonic() - t0 < 3
        dev.emulator.faults.discard("modem_unresponsive")
        assert m.check().state == "ok"


@pytest.mark.parametrize("name", PROFILES)
def test_sim_missing(modem_pty, name):
    dev = modem_pty(name, faults={"sim_missing"})
    with Modem(dev.path, fast(name)) as m:
        m.init()
        res = m.check()
        st = m.status()
    assert res.state == "fault" and res.reason == "SIM not inserted"
    assert (st.sim, st.iccid, st.imsi) == ("absent", None, None)
    assert st.registration.registered is False and st.operator.mcc_mnc is None
    assert st.imei == "861234567890123"  # the modem itself still answers


def test_sim_missing_with_verbose_cme(modem_pty):
    dev = modem_pty("generic-3gpp", faults={"sim_missing"})
    with Modem(dev.path, fast("generic-3gpp")) as m:
        m.init()
        m.command("AT+CMEE=2")
        assert m.sim_state() == "absent"


def test_sim_busy_is_retried(modem_pty):
    dev = modem_pty("quectel-ec20", iccid=ICCID, sim_busy=3)
    with Modem(dev.path, "quectel-ec20") as m:
        m.init()
        assert m.iccid() == ICCID
    assert dev.emulator.received.count("AT+QCCID") == 4


def test_slow_answers_still_read(modem_pty):
    dev = modem_pty("simcom-sim7600", slow_delay=0.3, faults={"slow"})
    with Modem(dev.path, fast("simcom-sim7600")) as m:
        m.init()
        assert m.csq().rssi == 20
        assert m.imei() == "861234567890123"


def test_late_answer_is_not_taken_for_the_next_command(modem_pty):
    dev = modem_pty("quectel-ec25", slow_delay=0.5)
    with Modem(dev.path, fast("quectel-ec25")) as m:
        m.init()
        dev.emulator.faults.add("slow")
        with pytest.raises(Timeout) as err:
            m.command("AT+CSQ", timeout=0.2, expect=("+CSQ:",))
        assert err.value.command == "AT+CSQ"
        dev.emulator.faults.discard("slow")
        time.sleep(0.4)
        assert m.imei() == "861234567890123"
        assert m.sim_state() == "ready"


def test_garbage_on_the_line(modem_pty):
    dev = modem_pty("huawei-me909s", faults={"garbage"}, iccid=ICCID)
    with Modem(dev.path, "huawei-me909s") as m:
        m.init()
        time.sleep(0.3)
        st = m.status()
    assert (st.iccid, st.sim, st.operator.mcc_mnc, st.signal.csq) == (ICCID, "ready", "46000", 20)


def test_urc_mid_reply_goes_to_the_queue(modem_pty):
    dev = modem_pty("quectel-ec25")
    with Modem(dev.path, "quectel-ec25") as m:
        m.init()
        m.pop_urcs()
        dev.emulator.mid_reply_urcs = ['+QIND: "csq",20,99', "+CEREG: 5"]
        ident = m.identity()
        assert (ident.manufacturer, ident.model) == ("Quectel", "EC25")
        assert m.pop_urcs() == ['+QIND: "csq",20,99', "+CEREG: 5"]


def test_chunked_delivery_and_cr_cr_lf(modem_pty):
    dev = modem_pty("simcom-sim7600", chunk=3, chunk_delay=0.001, iccid=ICCID)
    with Modem(dev.path, "simcom-sim7600") as m:
        m.init()
        assert m.iccid() == ICCID
        assert m.registrations()[-1].registered


@pytest.mark.parametrize("style", ["quoted", "plain", "zero_padded"])
def test_registration_line_styles_and_data_only_sim(modem_pty, style):
    dev = modem_pty("generic-3gpp", reg_style=style, creg_stat=0, reg_stat=5, ucs2_names=True,
                    operator_name="CHINA  MOBILE")
    with Modem(dev.path, "generic-3gpp") as m:
        m.init()
        st = m.status()
    r = st.registration
    assert (r.state, r.registered, r.source, r.tac, r.cell_id) == ("roaming", True, "CEREG", 0x1A2B, 0x0A1B2C3)
    assert st.operator.name == "CHINA MOBILE"


def test_unplug_fault_then_reboot_reinitialises(modem_pty):
    dev = modem_pty("quectel-ec25", boot_delay=0.3)
    with Modem(dev.path, fast("quectel-ec25")) as m:
        m.init()
        dev.emulator.faults.add("unplug")
        assert m.check().reason == "modem not answering"
        dev.emulator.faults.discard("unplug")
        deadline = time.monotonic() + 4
        while m.check().state != "ok":
            assert time.monotonic() < deadline
        m.sim_state()
        dev.emulator.faults.add("sim_missing")
        res = m.check()
    # after its reboot the modem was set to numeric errors again, so "no SIM" is told apart from "error"
    assert res.reason == "SIM not inserted"
    assert dev.emulator.cmee == 1 and dev.emulator.echo is False


def test_port_vanishes_and_comes_back(tmp_path):
    link = tmp_path / "ttyUSB2"
    first = serve("quectel-ec20")
    os.symlink(first.path, link)
    second: PtyDevice | None = None
    try:
        with Modem(str(link), fast("quectel-ec20")) as m:
            m.init()
            assert m.check().state == "ok"
            first.stop()  # USB re-enumeration: the port disappears...
            link.unlink()
            res = m.check()
            assert res.state in ("unknown", "fault")
            assert m.check().reason == "modem port not found"
            second = PtyDevice(ModemEmulator("quectel-ec20", boot_delay=0.3)).start()  # ...and comes back
            os.symlink(second.path, link)
            assert m.check().state == "ok"
            assert m.imei() == "861234567890123"
        assert "ATE0" in second.emulator.received  # re-initialised after the re-open
    finally:
        first.stop()
        if second is not None:
            second.stop()


THREE_G = [n for n in PROFILES if load_profile(n).commands.signal_dialect in ("cesq", "hcsq", "cpsi")
           or load_profile(n).commands.cell_dialect in ("qeng", "cpsi")]


@pytest.mark.parametrize("name", THREE_G)
def test_3g_signal_keeps_rscp_and_ecio(modem_pty, name):
    """On a WCDMA cell the modem's RSCP and Ec/Io reach the status (and so the diag output and the sample)."""
    dev = modem_pty(name, act=2, rscp_dbm=-85, ecio_db=-6.5)
    with Modem(dev.path, name) as m:
        m.init()
        st = m.status()
    assert (st.signal.rscp_dbm, st.signal.ecio_db) == (-85.0, -6.5), st.signal
    assert st.as_dict()["signal"]["rscp_dbm"] == -85.0


def test_3g_profiles_cover_the_three_dialects():
    dialects = {load_profile(n).commands.signal_dialect for n in THREE_G}
    assert {"cesq", "hcsq", "cpsi"} <= dialects


@pytest.mark.parametrize("name", ["simcom-sim7600", "fibocom-l610"])
def test_serving_cell_query_sent_once_per_status(modem_pty, name):
    """SIMCom and Fibocom answer signal and serving cell with one command: one status asks it once."""
    dev = modem_pty(name)
    cmd = load_profile(name).commands.cell
    with Modem(dev.path, name) as m:
        m.init()
        st = m.status()
    assert st.signal.rsrp_dbm == -95.0 and st.registration.cell_id is not None
    assert [c for c in dev.emulator.received if c.upper() == cmd.upper()] == [cmd]


@pytest.mark.parametrize("code,state,meaning", [(100, "unknown", "unknown"), (3, "unknown", "operation not allowed"),
                                                (13, "error", "SIM failure"), (15, "wrong", "SIM wrong")])
def test_cpin_cme_error_read_by_the_standard(modem_pty, code, state, meaning):
    """+CME ERROR to AT+CPIN?: the code is read by 27.007 §9.2 and kept; the ICCID is still read."""
    dev = modem_pty("quectel-ec20", iccid=ICCID, cpin_cme=code)
    with Modem(dev.path, "quectel-ec20") as m:
        m.init()
        st = m.status()
        check = m.check()
    assert (st.sim, st.sim_error) == (state, {"code": code, "meaning": meaning})
    assert st.iccid == ICCID
    assert check.state == "fault"
    if state == "unknown":  # the code says nothing about the SIM: the reason names it
        assert check.reason == f"SIM state unknown (+CME ERROR: {code} {meaning})"
    else:
        assert check.reason == meaning


# ---------------------------------------------------------------------------------- diag command

def _run(args):
    return CliRunner().invoke(diag_modem, args, catch_exceptions=False)


def test_diag_json_ok(modem_pty):
    dev = modem_pty("quectel-ec25", iccid=ICCID)
    res = _run(["--port", dev.path, "--profile", "quectel-ec25", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert (d["iccid"], d["imsi"], d["imei"], d["sim"]) == (ICCID, "460001234567890", "861234567890123", "ready")
    assert d["operator"]["mcc_mnc"] == "46000" and d["operator"]["name"] == "CHINA MOBILE"
    assert d["registration"]["state"] == "home"
    assert {k: d["signal"][k] for k in ("csq", "rssi_dbm", "rsrp_dbm", "rsrq_db", "sinr")} == {
        "csq": 20, "rssi_dbm": -73, "rsrp_dbm": -95.0, "rsrq_db": -10.0, "sinr": 12.0}
    assert d["model"] == "EC25" and d["firmware"] == "EC25EFAR06A09M4G"


def test_diag_exit_codes(modem_pty, tmp_path):
    dev = modem_pty("generic-3gpp", faults={"sim_missing"})
    res = _run(["--port", dev.path, "--json"])
    assert res.exit_code == 6
    d = json.loads(res.output)
    assert d["sim"] == "absent" and d["iccid"] is None and d["check"]["reason"] == "SIM not inserted"

    dead = modem_pty("generic-3gpp", faults={"modem_unresponsive"})
    res = _run(["--port", dead.path, "--wait", "0.5", "--json"])
    assert res.exit_code == 4 and json.loads(res.output)["imei"] is None

    res = _run(["--port", str(tmp_path / "ttyUSB9"), "--json"])
    assert res.exit_code == 3 and json.loads(res.output)["check"]["reason"] == "modem port not found"

    babbler = modem_pty("quectel-ec25", boot_delay=3.0, boot_garbage=True)  # garbles from 1.5 s, never OK
    res = _run(["--port", babbler.path, "--profile", "quectel-ec25", "--wait", "2", "--json"])
    assert res.exit_code == 5, res.output
    d = json.loads(res.stdout)  # progress lines go to stderr
    assert d["check"]["reason"] == "modem answers garbage" and "COMMAND NOT SUPPORT" in d["error"]

    ok = modem_pty("fibocom-l610")
    res = _run(["--port", ok.path, "--profile", "fibocom-l610"])
    assert res.exit_code == 0 and "CHINA MOBILE (46000, China Mobile)" in res.output
    assert _run(["--port", ok.path, "--profile", "no-such-modem"]).exit_code == 2


@pytest.mark.parametrize("name", PROFILES)
def test_every_fault_switch_on_every_profile(modem_pty, name):
    """Each switch in turn on one running modem: the check says what a field engineer would see, and the
    modem is healthy again once the switch is off (sim_missing has its own test per profile above)."""
    dev = modem_pty(name, slow_delay=0.3, boot_delay=0.2)
    emu = dev.emulator
    with Modem(dev.path, fast(name, probe=0.4)) as m:
        m.init()
        for fault, during in [("modem_unresponsive", "modem not answering"), ("unplug", "modem not answering"),
                              ("slow", None), ("garbage", None)]:
            emu.faults.add(fault)
            res = m.check()
            if during is None:  # late or noisy answers inside the timeout are still answers
                assert res.state == "ok", (fault, res)
                assert m.imei() == "861234567890123", fault
            else:
                assert (res.state, res.reason) == ("fault", during), fault
            emu.faults.discard(fault)
            deadline = time.monotonic() + 5
            while (res := m.check()).state != "ok":
                assert time.monotonic() < deadline, (fault, res)
    assert set(FAULTS) == {"modem_unresponsive", "unplug", "slow", "garbage", "sim_missing"}  # none left out
