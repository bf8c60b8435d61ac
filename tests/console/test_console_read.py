"""Read-only console commands, the shell, sessions and line noise: the laptop CLI against a
real agent process's console over a pty cable."""

from __future__ import annotations

import io
import json
import os

import pytest

from drivers.idcard.mask import mask_id
from posfleet.diagconsole.client import ConsoleClient, NoAnswer, PortError, SessionClosed
from posfleet.diagconsole.render import width
from posfleet.diagconsole.shell import ConsoleShell, Runner
from simulator.emulators.idcard import SyntheticCard
from tests.console.conftest import COUNTY, SECRET, Rig
from tests.console.helpers import remote
from tests.fleet import wait_for

CARD = SyntheticCard.resident().text
UNMASKED = [CARD.name, CARD.id_number, CARD.address, CARD.address[:10], SECRET]


def assert_private(text: str) -> None:
    for value in UNMASKED:
        assert value not in text, f"{value!r} shown unmasked"


def test_status_json_and_human(rig: Rig) -> None:
    def status() -> dict | None:
        code, _out, doc = remote(rig.cable.laptop_path, "status")
        assert code == 0 and doc["ok"]
        return doc if doc["data"]["link"]["connected"] and doc["data"]["checks"] else None

    doc = wait_for(status, 30, "the agent's link up and its first sample (it starts with a jittered delay)",
                   interval=0.5)
    data = doc["data"]
    assert data["sn"] == rig.sn
    assert data["link"]["connected"] is True
    assert data["console"]["county"] == COUNTY
    # health, each peripheral's check, outbox backlog and its oldest entry, clock state, last errors
    assert data["health"]["cpu"] is not None and data["health"]["mem_avail_mb"] > 0
    assert {k: c["state"] for k, c in data["checks"].items() if k in ("modem", "printer", "idcard")} == \
        {"modem": 0, "printer": 0, "idcard": 0}  # wire.messages OK
    assert data["outbox"]["count"] >= 1  # no server here: the inventory event waits
    assert data["outbox"]["oldest_ts"] <= data["clock"]["now"]
    assert isinstance(data["clock"]["checked"], bool)
    assert isinstance(data["last_errors"], list)
    code, out, _ = remote(rig.cable.laptop_path, "status", as_json=False)
    assert code == 0
    assert f"county    {COUNTY}" in out or COUNTY in out  # Chinese intact
    assert "connected to localhost" in out
    assert "waiting, oldest 20" in out and "printer" in out and "clock" in out
    assert "\x1b[" not in out  # no colour when not on a terminal


def test_selftest_prints_a_page_and_reads_the_card_masked(rig: Rig) -> None:
    before = len(rig.printer.emulator.printed.lines)  # type: ignore[attr-defined]
    code, _out, doc = remote(rig.cable.laptop_path, "selftest")
    assert code == 0, doc.get("error")
    per = doc["data"]["peripherals"]
    assert {k: v["state"] for k, v in per.items()} == {"modem": "ok", "printer": "ok", "idcard": "ok"}
    assert per["printer"]["test_page"] == "printed"
    after_page = len(rig.printer.emulator.printed.lines)  # type: ignore[attr-defined]
    printed = "\n".join(rig.printer.emulator.printed.lines[before:])  # type: ignore[attr-defined]
    assert f"终端编号：{rig.sn}" in printed
    card = per["idcard"]["self_test"]["card"]
    assert card["present"] is True and card["id_masked"].startswith(CARD.id_number[:4]) and "*" in card["id_masked"]
    assert_private(json.dumps(doc, ensure_ascii=False))
    rig.reader.emulator.lift()  # type: ignore[attr-defined]
    rig.reader.emulator.place()  # type: ignore[attr-defined]
    code, out, _ = remote(rig.cable.laptop_path, "selftest", "print=no", as_json=False)
    assert code == 0 and "all ok" in out
    assert f"card resident: {card['name_masked']} {card['id_masked']}" in out
    assert len(rig.printer.emulator.printed.lines) == after_page  # print=no: no second page  # type: ignore[attr-defined]
    assert_private(out)


def test_netcheck_walks_modem_dns_tcp_tls(rig: Rig) -> None:
    code, out, doc = remote(rig.cable.laptop_path, "netcheck")
    assert code == 0, out
    steps = doc["data"]["steps"]
    assert steps["modem"]["ok"] and steps["modem"]["imei"]
    assert steps["sim"]["ok"] and steps["registration"]["ok"]
    assert steps["signal"]["ok"] and 0 <= steps["signal"]["csq"] <= 31
    assert steps["dns"]["addresses"]
    assert steps["tcp"]["connect_ms"] >= 0
    assert steps["tls"]["ok"] and steps["tls"]["client_certificate_accepted"] is True
    assert steps["link"]["connected"] and steps["link"]["rtt_ms"] is not None  # the round trip of the live link
    assert doc["data"]["verdict"] == "network ok"
    assert_private(out)
    # for people: one short readable line per step, no raw JSON (the modem step used to be a 600-character blob)
    for lang, verdict in (("zh", "网络正常"), ("en", "network ok")):
        code, human, _ = remote(rig.cable.laptop_path, "netcheck", as_json=False, lang=lang)
        assert code == 0 and verdict in human
        assert "{" not in human and '"' not in human and "raw" not in human, human
        assert max(width(line) for line in human.splitlines()) <= 160, human
        assert "CSQ" in human and ("IMEI" in human)
    # a fault is found and named: the SIM taken out
    rig.modem.emulator.faults.add("sim_missing")  # type: ignore[attr-defined]
    try:
        code, out, doc = remote(rig.cable.laptop_path, "netcheck")
    finally:
        rig.modem.emulator.faults.discard("sim_missing")  # type: ignore[attr-defined]
    assert code == 6, out
    assert doc["data"]["steps"]["sim"]["ok"] is False and doc["data"]["verdict"].startswith("sim: ")
    assert (doc["ok"], doc["exit_code"]) == (False, 6)  # the JSON's verdict is the exit code's


def test_logs_config_versions_outbox_help(rig: Rig) -> None:
    code, out, doc = remote(rig.cable.laptop_path, "logs", "lines=5")
    assert code == 0 and 0 < len(doc["data"]["lines"]) <= 5
    code, out, doc = remote(rig.cable.laptop_path, "logs", "lines=100000")
    assert code == 2 and "lines" in doc["error"]
    code, out, doc = remote(rig.cable.laptop_path, "config", "show")
    assert code == 0
    assert doc["data"]["config"]["link"]["key_passphrase"] == "***"
    assert doc["data"]["config"]["console"]["county"] == COUNTY
    code, out, _ = remote(rig.cable.laptop_path, "config", "show", as_json=False)
    assert "link.key_passphrase" in out and "***" in out
    code, out, doc = remote(rig.cable.laptop_path, "versions")
    assert code == 0 and doc["data"]["agent"] and doc["data"]["peripherals"]["modem"]["profile"] == "generic-3gpp"
    code, out, doc = remote(rig.cable.laptop_path, "outbox")
    # the listing is bounded; the count is the whole backlog (console audit records are in it too)
    assert code == 0 and doc["data"]["count"] >= len(doc["data"]["entries"]) >= 1
    code, out, _ = remote(rig.cable.laptop_path, "help", as_json=False)
    assert "config set KEY VALUE" in out and "credential" in out
    code, out, _ = remote(rig.cable.laptop_path, "frobnicate")
    assert code == 2
    # a request that carries a card's ID number into the agent: its audit record is in the log,
    # and the log shows the number masked
    remote(rig.cable.laptop_path, "logs", f"grep={CARD.id_number}")
    code, out, doc = remote(rig.cable.laptop_path, "logs", "lines=500")
    assert mask_id(CARD.id_number) in "\n".join(doc["data"]["lines"])
    # every one of them, and the rest of this module's output: no secret, no card data
    assert_private(out)
    # bounded: at most half the reply budget of lines, however many are asked for
    assert len("\n".join(doc["data"]["lines"]).encode()) <= 65536 // 2


def test_shell_session(rig: Rig) -> None:
    script = io.StringIO("help\nstatus\nconfig\nlogs lines=3\nconfig set\nbogus command\njson\nversions\nquit\n")
    out = io.StringIO()
    with ConsoleClient(rig.cable.laptop_path) as client:
        runner = Runner(client)
        runner.connect()
        shell = ConsoleShell(runner, stdin=script, stdout=out, lang="en")
        shell.cmdloop()
        assert shell.completenames("sel") == ["selftest"]
        assert shell.completedefault("sh", "config sh", 7, 9) == ["show"]
        assert "link.host" in shell.completedefault("link.h", "config set link.h", 11, 17)
    text = out.getvalue()
    assert f"connected to terminal {rig.sn}, county {COUNTY}" in text
    zh = io.StringIO()
    with ConsoleClient(rig.cable.laptop_path) as client:
        runner = Runner(client)
        runner.connect()
        ConsoleShell(runner, stdin=io.StringIO("status\nbogus\nquit\n"), stdout=zh).cmdloop()  # Chinese by default
    assert f"已连接终端 {rig.sn}，县区 {COUNTY}" in zh.getvalue() and "链路" in zh.getvalue()
    assert "未知命令 'bogus'" in zh.getvalue()
    assert "netcheck" in text and "auth FILE" in text  # help
    assert "usage: config set KEY VALUE" in text
    assert "unknown command 'bogus command'" in text
    assert '"agent":' in text  # json toggled on for versions
    assert_private(text)


def test_noise_and_dropped_bytes_mid_frame_are_recovered(rig: Rig) -> None:
    with rig.client(ack_timeout=0.5) as c:
        c.hello()
        for damage in (lambda: rig.cable.inject_to_terminal(os.urandom(40)),
                       lambda: rig.cable.inject_to_terminal(b"\xa5\x5a\x01\x00\x07\x00\x01\x08\x00"),  # fake header
                       lambda: rig.cable.drop_to_terminal(),
                       lambda: rig.cable.drop_to_laptop(),
                       lambda: rig.cable.flip_to_laptop()):
            before = rig.cable.damaged
            damage()
            data = c.call("status")
            assert data["sn"] == rig.sn
            assert rig.cable.damaged == before + 1
        # a long reply (many parts) with a part damaged on the way back
        rig.cable.flip_to_laptop()
        lines = c.call("logs", {"lines": 300})["lines"]
        assert lines
        assert c.retransmissions >= 4
        # the ACK gets through, then the whole one-part reply of a command that takes a while is
        # damaged: the laptop asks again within seconds, not after the command's time limit
        # (120 s for selftest)
        import time

        rig.cable.drop_to_laptop()
        t0 = time.monotonic()
        result = c.call("selftest", {"print": "no", "card": "no"})
        assert result["verdict"] == "all ok"
        assert time.monotonic() - t0 < 10


def test_one_session_at_a_time(rig: Rig) -> None:
    with rig.client() as first:
        first.hello()
        with rig.client() as second:
            second.hello()
            assert second.call("status")["sn"] == rig.sn
        with pytest.raises(SessionClosed):
            first.call("status")
    ends = [r for r in rig.audit() if r["event"] == "session_end"]
    assert any(r["reason"] == "replaced by a new connection" for r in ends)


def test_port_missing_and_no_console(rig: Rig, tmp_path: object) -> None:
    code, _out, doc = remote("/dev/ttyUSB-not-there", "status")
    assert code == 3 and "cannot open" in doc["error"]
    import tty

    master, slave = os.openpty()
    tty.setraw(master)
    try:
        with ConsoleClient(os.ttyname(slave), ack_timeout=0.2, retries=2) as c, pytest.raises(NoAnswer):
            c.hello()
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(PortError):
        ConsoleClient("/dev/ttyUSB-not-there").open()


def test_connect_on_a_terminal_keeps_history_completes_and_colours(rig: Rig, tmp_path: object) -> None:
    """`posfleet diag connect` as the engineer runs it: a real process on a terminal (pty), so
    readline, its history file and colours are the real ones."""
    import pty
    import select
    import subprocess
    import sys
    import time
    from pathlib import Path

    home = Path(str(tmp_path))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "posfleet", "diag", "connect", "--port", rig.cable.laptop_path],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "HOME": str(home), "TERM": "xterm", "PYTHONUNBUFFERED": "1"})
    os.close(slave)
    seen = b""

    def until(text: str, timeout: float = 30) -> str:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text.encode() not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, f"no {text!r} in {seen[-2000:]!r}"
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    pass
        return seen.decode(errors="replace")

    try:
        until(f"{rig.sn}> ")
        os.write(master, b"netcheck\r")
        out = until("网络正常")  # Chinese by default
        assert "\x1b[32m" in out  # on a terminal the verdict and the ok column are green
        os.write(master, b"vers\t")  # Tab completes the command name
        until("versions")
        os.write(master, b"\r")
        until("peripherals.modem.profile")
        os.write(master, b"config set link.key_passphrase Hidden-99\r")  # refused (no credential), never kept
        until("needs an engineer credential")
        os.write(master, b"quit\r")
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    kept = (home / ".posfleet_console_history").read_text()
    assert kept.split()[-3:] == ["netcheck", "versions", "quit"]
    assert "Hidden-99" not in kept
    assert_private(seen.decode(errors="replace"))


def test_console_use_does_not_disturb_the_agents_sampling(rig: Rig) -> None:
    """Busy console (line noise, self-tests holding the peripherals, long log replies) for over two
    sample intervals: every sample slot is still taken, none skipped."""
    import sqlite3
    import time

    from tests.console.conftest import SAMPLING_S

    start = time.time()
    with rig.client(ack_timeout=0.5) as c:
        c.hello()
        while time.time() < start + 2.2 * SAMPLING_S:  # at least two slot boundaries
            rig.cable.inject_to_terminal(os.urandom(200))
            c.call("selftest", {"print": "no"})
            c.call("logs", {"lines": 300})
    end = time.time()
    db = sqlite3.connect(f"file:{rig.data_dir / 'outbox.sqlite'}?mode=ro", uri=True, timeout=5)
    try:  # no server in this rig: every sample is still in the outbox
        slots = [t for (t,) in db.execute("SELECT ts FROM outbox WHERE kind='s' AND ts >= ? ORDER BY ts",
                                          (int(start) - SAMPLING_S,))]
    finally:
        db.close()
    assert len([t for t in slots if start <= t <= end]) >= 2, slots
    assert all(b - a == SAMPLING_S for a, b in zip(slots, slots[1:], strict=False)), f"a slot was skipped: {slots}"
