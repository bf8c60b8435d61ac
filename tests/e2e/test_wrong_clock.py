"""A terminal whose clock is 18 months wrong (a dead RTC battery, no NTP yet) still connects, gets its time from the
server and has its samples stored dated right (issue 13, item 4; catalogue T1/T2 in part).

Real parts: Mosquitto, the server and the agent as processes; the agent's clock is moved by Debian's libfaketime
(LD_PRELOAD), which moves what ``time.time()`` and OpenSSL's certificate date checks see in that process only.
``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves CLOCK_MONOTONIC and CLOCK_BOOTTIME alone, as a dead RTC does (the kernel
counts them from boot); with them faked, libfaketime 0.9.10 makes Python's timed lock waits (``sem_clockwait``, not
intercepted) sleep for the offset, and with them real it makes ``time.sleep`` fail with EINVAL (its
``clock_nanosleep`` wrapper), which is why the link no longer sleeps in ``stop()``.

The broker certificate here is issued for 365 days, so the clock 540 days behind finds it "not yet valid" and the one
540 days ahead finds it "expired": without the change the agent never connects in either case (OpenSSL refuses
every handshake) and nothing reaches the server.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulator.local import ENV, _popen
from tests.fleet import AgentProc, Broker, Pki, Server, agent_config, wait_for

LIBFAKETIME = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                                "/usr/lib/faketime/libfaketime.so.1") if Path(p).exists()), "")
pytestmark = pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is not installed (Debian package faketime; "
                                                        "./dev installs it)")
DAY = 86400
INTERVAL = 5
FAST = "batch_interval_s = 0\nbacklog_rate = 20.0"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("pki-clock"))
    p.ca.issue_broker(["localhost", "127.0.0.1"], days=365)  # expired 540 days from now, not yet valid 540 days ago
    return p


def faked(days: int) -> dict[str, str]:
    return dict(ENV, LD_PRELOAD=LIBFAKETIME, FAKETIME=f"{days:+d}d", FAKETIME_DONT_FAKE_MONOTONIC="1")


def child(env: dict[str, str], code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def start_agent(cfg: Path, log: Path, env: dict[str, str]) -> AgentProc:
    a = AgentProc(cfg, log)
    a.proc = _popen([sys.executable, "-m", "posfleet", "agent", "run", "--config", str(cfg)], log, env)
    return a


def stored(db: Path, sn: str, table: str = "samples") -> list[tuple[int, int | None, float]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        clock = "clock" if table == "samples" else "NULL"
        return con.execute(f"SELECT ts, {clock}, received_at FROM {table} WHERE sn=? ORDER BY ts", (sn,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def the_fake_reaches_python_and_openssl(env: dict[str, str], days: int, pki: Pki, broker: Broker) -> None:
    """In a child started like the agent: time.time() is moved, the boot clock is not, and OpenSSL's own check of
    the broker certificate refuses it by the moved clock (what the agent meets at its first handshake)."""
    wall, boot = map(float, child(env, "import time; print(time.time()); print(time.clock_gettime(time.CLOCK_BOOTTIME))")
                     .split())
    assert abs(wall - (time.time() + days * DAY)) < 60, "libfaketime did not move time.time() in the child"
    assert abs(boot - time.clock_gettime(time.CLOCK_BOOTTIME)) < 60, "the boot-time clock must stay real"
    t = pki.terminal("HN00130001")
    verdict = child(env, f"""
import socket, ssl
ctx = ssl.create_default_context(cafile="{t}/ca.pem")
ctx.load_cert_chain("{t}/terminal.pem", "{t}/terminal.key")
try:
    ctx.wrap_socket(socket.create_connection(("localhost", {broker.port})), server_hostname="localhost").close()
    print("accepted")
except ssl.SSLCertVerificationError as err:
    print(err.verify_message)
""")
    assert verdict == ("certificate is not yet valid" if days < 0 else "certificate has expired"), verdict


@pytest.mark.parametrize("days", [-540, 540], ids=["18-months-behind", "18-months-ahead"])
def test_a_wrong_clock_connects_and_its_samples_are_dated_right(pki: Pki, broker: Broker, tmp_path: Path,
                                                                days: int) -> None:
    env = faked(days)
    the_fake_reaches_python_and_openssl(env, days, pki, broker)
    sn = "HN00130001"
    # NTP not trusted: the kernel's NTP state cannot be faked per process, and a terminal with a dead RTC and no NTP
    # yet is what is simulated (the host may well be NTP-synchronised)
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=INTERVAL, link=FAST,
                       extra="[clock]\ntrust_ntp = false\n")
    agent = start_agent(cfg, tmp_path / "agent.log", env)
    server = Server(pki, broker, tmp_path / "server")
    try:
        # the server is not up yet: the agent connects (the dates deferred), waits for the server's time and takes
        # samples meanwhile, held on its wrong clock
        wait_for(lambda: "starting as" in (tmp_path / "agent.log").read_text(), 30, "the agent to start")
        time.sleep(2 * INTERVAL + 1)
        assert agent.alive()
        server.start()
        rows = wait_for(lambda: (r := stored(server.db, sn)) and len(r) >= 5 and any(c == 0 for _, c, _ in r) and r,
                        60, "samples taken before and after the clock was checked")
        true_now = time.time()
        for ts, clock, received in rows:
            # a slot's sample is stored at most a few seconds after its slot ends (re-dated ones a little later)
            assert -2 <= received - ts <= 2 * INTERVAL + 30, (ts, clock, received, rows)
            assert abs(ts - true_now) < 300
        assert {c for _, c, _ in rows} == {0, 1}, "re-dated samples marked corrected (1), later ones checked (0)"
        corrected = [ts for ts, c, _ in rows if c == 1]
        assert len(corrected) >= 2 and max(corrected) < min(ts for ts, c, _ in rows if c == 0)
        assert all(ts % INTERVAL == 0 for ts, _, _ in rows), "kept on the interval grid"
        # the agent's first inventory, stored on its wrong clock, is re-dated too
        events = stored(server.db, sn, "events")
        assert events and all(abs(received - ts) < 60 for ts, _, received in events), events
        # sampling goes on at the right time after the clock moved (18 months back for the clock ahead)
        n = len(rows)
        wait_for(lambda: len(stored(server.db, sn)) >= n + 2, 4 * INTERVAL, "two more samples")
        log = (tmp_path / "agent.log").read_text()
        assert "not valid by this terminal's unchecked clock" in log and "waiting for the server's time" in log
        assert "broker certificate valid at the server's time" in log
        assert "re-dated" in log and "Traceback" not in log
    finally:
        agent.stop()
        server.stop()
    assert "Traceback" not in (tmp_path / "agent.log").read_text()


def test_a_server_time_at_which_the_broker_certificate_is_invalid_is_refused(pki: Pki, broker: Broker,
                                                                            tmp_path: Path) -> None:
    """The deferred check is done: a vouched time 800 days ahead, after the broker certificate's end, disconnects
    loudly, the time is not adopted, nothing is sent."""
    sn = "HN00130002"
    start = datetime.fromtimestamp(time.time() + 800 * DAY, UTC).isoformat()
    server = Server(pki, broker, tmp_path / "server", clock={"speed": 1.0, "start": start, "anchor": time.time()})
    server.start()
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=INTERVAL, link=FAST,
                       extra="[clock]\ntrust_ntp = false\n")
    agent = start_agent(cfg, tmp_path / "agent.log", faked(-540))
    try:
        log = tmp_path / "agent.log"
        wait_for(lambda: log.read_text().count("by the server's time") >= 2, 60,
                 "the broker certificate refused at the server's time, twice (the agent keeps trying)")
        text = log.read_text()
        assert "broker certificate refused" not in text or "expired" in text
        assert "ERROR" in text and "the server's time is not adopted" in text
        assert "clock checked" not in text and "broker certificate valid" not in text
        time.sleep(INTERVAL)
        assert stored(server.db, sn) == [] and stored(server.db, sn, "events") == []
        assert agent.alive()
    finally:
        agent.stop()
        server.stop()

