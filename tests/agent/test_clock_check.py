"""The agent does not trust its clock until it is checked: the kernel's NTP state (unless ``clock.trust_ntp`` is off)
or, later, the server's time. Before that, samples are marked unverified and held (the real Agent class; the kernel's
answer is the one thing replaced, since a test cannot set the machine's NTP state)."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.main
from agent.clock import ntp_synchronised
from agent.config import parse
from agent.main import Agent
from simulator.local import Pki
from wire.messages import CLOCK_CHECKED, CLOCK_UNVERIFIED


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def make_agent(pki: Pki, data: Path, trust_ntp: bool = True) -> Agent:
    t = pki.terminal("HN00180001")
    return Agent(parse(f"""
sn = "HN00180001"
data_dir = "{data}"
[link]
ca_file = "{t}/ca.pem"
cert_file = "{t}/terminal.pem"
key_file = "{t}/terminal.key"
[clock]
trust_ntp = {str(trust_ntp).lower()}
[commands]
enabled = false
"""))


def test_the_kernel_answers_the_ntp_question() -> None:
    assert ntp_synchronised() in (True, False), "adjtimex gave no answer on Linux"


@pytest.mark.parametrize(("ntp", "trust", "checked"), [(False, True, False), (True, True, True), (True, False, False)])
def test_samples_before_the_check_are_unverified_and_held(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          ntp: bool, trust: bool, checked: bool) -> None:
    monkeypatch.setattr(agent.main, "ntp_synchronised", lambda: ntp)
    a = make_agent(pki, tmp_path / "data", trust)
    try:
        assert a.clock_ok is checked
        s = a.take_sample(1_800_000_000)
        assert s.clock == (CLOCK_CHECKED if checked else CLOCK_UNVERIFIED)
        a._store(s)
        assert a.outbox is not None
        assert len(a.outbox.pending(10)) == (1 if checked else 0), "an unverified sample waits to be re-dated"
    finally:
        a.outbox.close()
