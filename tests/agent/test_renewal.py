"""The terminal's certificate renewal (agent/renew.py), step by step, and cut at each step.

Real parts: a fleet CA in a folder, the agent's key and request made by the real helper child process, the
certificate checked by it, the files on disk. A "kill" is what SIGKILL leaves: the Renewer object is dropped at
that point and a new one (a restarted agent) is made over the same folder; the end to end run with a real broker,
server and agent process is tests/e2e/test_cert_renewal.py.
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from agent.enroll import make_key_and_csr
from agent.renew import Renewer, certificate_dates
from pki.ca import FleetCA
from wire import codec
from wire.messages import Certificate

SN = "HN00800001"
PASS = "correct horse battery"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> FleetCA:
    return FleetCA.init(tmp_path_factory.mktemp("ca"), PASS)


def terminal(ca: FleetCA, tmp_path: Path, days: int = 30) -> Path:
    d = tmp_path / "etc"
    _key, csr = make_key_and_csr(SN, d)
    (d / "terminal.pem").write_bytes(ca.sign_csr(csr.read_bytes(), days))
    (d / "ca.pem").write_bytes((ca.dir / "ca.pem").read_bytes())
    return d


class Terminal:
    """A terminal's folder and what its agent stored / how its link behaved, across restarts."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connects = 0
        self.reconnects = 0
        self.context: ssl.SSLContext | None = None

    def agent(self, **kw: Any) -> Renewer:
        """A (re)started agent's renewer: recover() first, as Agent.__init__ does."""
        r = Renewer(SN, self.d / "ca.pem", self.d / "terminal.pem", self.d / "terminal.key",
                    store_event=lambda kind, data: self.events.append((kind, data)),
                    reconnect=self._reconnect, connects=lambda: self.connects, **kw)
        r.recover()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # the link's, made after recover()
        self.context.load_cert_chain(self.d / "terminal.pem", self.d / "terminal.key")
        r.context = self.context
        return r

    def _reconnect(self) -> None:
        self.reconnects += 1

    def pair_matches(self) -> bool:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_cert_chain(self.d / "terminal.pem", self.d / "terminal.key")
        except ssl.SSLError:
            return False
        return True


def serve(ca: FleetCA, t: Terminal, days: int = 825) -> bytes:
    """The server's side: the request the terminal stored, signed by the CA, as sent on pf/<sn>/x."""
    csr = [d["csr"] for k, d in t.events if k == "cert_request"][-1]
    return codec.encode(Certificate(cert=ca.sign_csr(csr.encode(), days, expect_sn=SN).decode()))


def test_a_certificate_far_from_its_end_is_left_alone(ca: FleetCA, tmp_path: Path) -> None:
    t = Terminal(terminal(ca, tmp_path, days=400))
    assert t.agent(days_before=60).tick(True) == ""
    assert t.events == [] and not (t.d / "renew").exists()


def test_no_renewal_while_the_clock_is_unchecked(ca: FleetCA, tmp_path: Path) -> None:
    """A terminal booted with a wrong clock (far ahead) would see every certificate near its end, again and again."""
    t = Terminal(terminal(ca, tmp_path, days=400))
    checked = [False]
    r = t.agent(now=lambda: time.time() + 380 * 86400, clock_checked=lambda: checked[0])
    assert r.tick(True) == "" and t.events == []
    checked[0] = True  # the clock is right after all (NTP, or the server's time): 20 days left
    assert r.tick(True) == "sent"


def test_renewal_end_to_end_on_the_terminal(ca: FleetCA, tmp_path: Path) -> None:
    t = Terminal(terminal(ca, tmp_path))
    old_after, old_serial = certificate_dates(t.d / "terminal.pem")
    old_key = (t.d / "terminal.key").read_bytes()
    r = t.agent(days_before=60)
    assert r.tick(True) == "sent"
    assert [k for k, _ in t.events] == ["cert_request"]
    assert oct((t.d / "renew" / "terminal.key").stat().st_mode & 0o777) == "0o600"
    assert r.tick(True) == "sent" and len(t.events) == 1  # asked once; again only after resend_h
    snap = r.snapshot()  # what the engineers' console shows
    assert snap["serial"] == old_serial and snap["renewal"] == "sent" and 29 < snap["days_left"] <= 30

    assert r.on_certificate(serve(ca, t)) == "received"
    assert (t.d / "terminal.key").read_bytes() == old_key, "the old pair stays until a connection with the new"
    assert r.tick(True) == "switching" and t.reconnects == 1
    t.connects += 1
    r.on_connect()
    new_after, new_serial = certificate_dates(t.d / "terminal.pem")
    assert new_serial != old_serial and new_after - old_after > 700 * 86400 and t.pair_matches()
    assert (t.d / "terminal.key").read_bytes() != old_key
    assert t.events[-1] == ("cert_switched", {"serial": new_serial})
    assert r.on_certificate(codec.encode(Certificate(done=new_serial))) == "done"
    assert not (t.d / "renew").exists()
    assert r.tick(True) == ""  # 825 days left: nothing to do


def test_a_certificate_that_is_not_for_this_terminal_is_refused(ca: FleetCA, tmp_path: Path) -> None:
    t = Terminal(terminal(ca, tmp_path))
    r = t.agent()
    r.tick(True)
    other = FleetCA.init(tmp_path / "other-ca", PASS)  # another CA signing our very request
    csr = t.events[-1][1]["csr"].encode()
    assert r.on_certificate(codec.encode(Certificate(cert=other.sign_csr(csr, 825).decode()))) == "refused"
    assert "not issued by the fleet CA" in r.last_error
    _k, stranger = make_key_and_csr(SN, tmp_path / "stranger")  # the right CA, another key
    assert r.on_certificate(codec.encode(Certificate(cert=ca.sign_csr(stranger.read_bytes(), 825).decode()))) == "refused"
    assert "another key" in r.last_error
    assert r.on_certificate(codec.encode(Certificate(cert=ca.sign_csr(csr, 10).decode()))) == "refused"
    assert "longer" in r.last_error
    assert r.state()["step"] == "sent" and t.pair_matches()


@pytest.mark.parametrize("killed", ["after_key", "after_csr_sent", "after_cert_received", "before_switch",
                                    "between_renames"])
def test_a_renewal_cut_at_each_step_completes_after_a_restart(ca: FleetCA, tmp_path: Path, killed: str) -> None:
    t = Terminal(terminal(ca, tmp_path))
    old_serial = certificate_dates(t.d / "terminal.pem")[1]
    r = t.agent()
    if killed == "after_key":
        # the key and request are made, the state says so, and the agent dies before the event is stored
        real = r.store_event
        r.store_event = lambda kind, data: (_ for _ in ()).throw(SystemExit("SIGKILL"))  # type: ignore[assignment]
        with pytest.raises(SystemExit):
            r.tick(True)
        assert r.state()["step"] == "key" and t.events == []
        r.store_event = real
    else:
        r.tick(True)
        if killed != "after_csr_sent":
            r.on_certificate(serve(ca, t))
            if killed in ("before_switch", "between_renames"):
                r.tick(True)  # switching: the new pair in the TLS context, the files untouched
                assert r.state()["step"] == "switching"
            if killed == "between_renames":
                t.connects += 1
                st = r.state()
                r._set(**{**st, "step": "committing"})
                os.replace(r.new_key, r.key_file)  # the first rename done, then the power goes
                assert not t.pair_matches()
    assert t.pair_matches() or killed == "between_renames"

    r = t.agent()  # the restarted agent
    assert t.pair_matches(), "whatever the cut, the agent starts with a key and certificate that go together"
    step = r.state().get("step")
    if step in ("key", "sent"):
        r.tick(True)
        assert [k for k, _ in t.events].count("cert_request") >= 1
        if not r.state()["step"] == "received":
            r.on_certificate(serve(ca, t))
    if r.state()["step"] == "received":
        r.tick(True)
    if r.state()["step"] == "switching":
        t.connects += 1
        r.on_connect()
    st = r.state()
    assert st["step"] == "confirm"
    new_serial = certificate_dates(t.d / "terminal.pem")[1]
    assert new_serial != old_serial and st["serial"] == new_serial and t.pair_matches()
    assert ("cert_switched", {"serial": new_serial}) in t.events
    assert r.on_certificate(codec.encode(Certificate(done=new_serial))) == "done"


def test_a_switch_that_never_connects_puts_the_old_pair_back(ca: FleetCA, tmp_path: Path) -> None:
    t = Terminal(terminal(ca, tmp_path))
    clock = [time.time()]
    r = t.agent(switch_timeout_s=60, resend_s=3600, now=lambda: clock[0])
    r.tick(True)
    r.on_certificate(serve(ca, t))
    assert r.tick(True) == "switching"
    clock[0] += 61  # no connection came up with the new pair
    assert r.tick(False) == "received" and t.reconnects == 2
    assert "old one is back" in r.last_error and t.pair_matches()
    assert r.tick(True) == "received"  # not again before resend_s
    clock[0] += 3600
    assert r.tick(True) == "switching"
