"""The whole chain against the oracle: real agents, emulated peripherals, Mosquitto and the fleet server play
a scenario in virtual time (simulator/vplayer.py); the server's figures must equal the count made straight
from the scenario, slot for slot, with no difference but the named agent behaviours at fault edges
(``simulator.vplayer.unexplained``: the slot at which a high latency above the threshold ends).

The scenarios are small variants of simulator/scenarios/*.json (tests/sim/scenarios/). In virtual time each
plays in seconds, and nothing in it depends on how busy the machine is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.oracle import count_scenario, oracle
from simulator.run import Options, Result, compare_slots, load
from simulator.vplayer import VirtualPlayer, unexplained

HERE = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.timeout(170)

Player = VirtualPlayer


def _play(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[VirtualPlayer, Result]]:
    scenario, raw = load(HERE / name)
    with contextlib.ExitStack() as stack:
        player = stack.enter_context(VirtualPlayer(scenario, raw, Options(workdir=tmp_path_factory.mktemp("sim"))))
        yield player, player.run()


@pytest.fixture(scope="module")
def every_fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VirtualPlayer, Result]]:
    yield from _play(tmp_path_factory, "every-fault-half-hour.json")


@pytest.fixture(scope="module")
def modem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VirtualPlayer, Result]]:
    yield from _play(tmp_path_factory, "modem-quarter-hour.json")


def _slot_mismatches(player: Player) -> dict[str, list]:
    counts = count_scenario(player.sc)
    return {u.sn: compare_slots(player.sc, u.sn, player.slots(u.sn), counts[u.sn]) for u in player.sc.units}


def _check_against_oracle(player: Player, result: Result) -> None:
    mismatches = _slot_mismatches(player)
    bad = [m for ms in mismatches.values() for m in unexplained(player.sc, ms)]
    assert not bad, "server and oracle disagree:\n" + "\n".join(map(str, bad))
    # the player's own checks during the run
    run = result.report["run"]
    assert run["late_wakes"] == 0 and run["ack_timeouts"] == 0 and run["max_offset_s"] < 1.0, run
    assert run["answer_read_twice_equal"] is True, run
    # the report (the API's roll-ups) agrees with the oracle's figures up to the tolerated slots
    want = {g["unit"]: g for g in oracle(player.sc, group_by="unit")["groups"]}
    got = {i["sn"]: i for i in result.report["availability"]["unit"]["items"]}
    assert set(got) == set(want)
    for sn, w in want.items():
        slack = len(mismatches[sn])
        g = got[sn]
        assert g["service_slots"] == w["service_slots"], sn  # hours and status: no timing involved
        for key in ("intact_slots", "network_ok_slots", "no_data_slots"):
            assert abs(g[key] - w[key]) <= slack, (sn, key, g[key], w[key], mismatches[sn])
    fleet_want = oracle(player.sc, group_by="fleet")["fleet"]
    fleet_got = result.report["availability"]["fleet"]["fleet"]
    assert fleet_got["service_slots"] == fleet_want["service_slots"]
    assert fleet_got["units"] == len(player.sc.units)
    # the player's own check (report and incidents) reaches the same verdict as this slot-by-slot one
    assert result.report["oracle_check"]["units_outside_tolerance"] == 0, result.report["oracle_check"]
    assert not [i for i in result.incidents if "differ from the oracle" in i]


def test_every_fault_server_equals_oracle(every_fault: tuple[Player, Result]) -> None:
    _check_against_oracle(*every_fault)


def test_every_fault_each_fault_was_really_produced(every_fault: tuple[Player, Result]) -> None:
    """Not vacuous: the server's drill-down shows each fault for the reason the emulation gave it."""
    player, _ = every_fault
    by_minute = {sn: {s["start"][11:16]: s for s in player.slots(sn)}
                 for sn in ("HN00070001", "HN00070002", "HN00070003", "HN00070004")}

    def reasons(sn: str, hhmm: str) -> str:
        s = by_minute[sn][hhmm]
        return " ".join(s.get("device_reasons", []) + s.get("network_reasons", []))

    assert by_minute["HN00070001"]["10:35"]["network"] == "not_ok"  # link cut, sampled and delivered later
    assert by_minute["HN00070001"]["10:35"]["device"] == "intact"
    assert "paper" in reasons("HN00070001", "10:46")
    assert by_minute["HN00070001"]["10:53"]["network"] == "ok"  # 250 ms is under the threshold
    assert by_minute["HN00070002"]["10:35"]["device"] == "no_data"  # powered off
    assert "rtt=650ms" in reasons("HN00070002", "10:46")  # 650 ms measured by the agent itself, exactly
    assert "cover" in reasons("HN00070002", "10:52")
    assert "read-only" in reasons("HN00070003", "10:35").lower()
    assert by_minute["HN00070003"]["10:46"]["device"] == "no_data"  # agent stopped
    assert "printer" in reasons("HN00070003", "10:53")
    assert "SIM" in reasons("HN00070004", "10:35")
    assert by_minute["HN00070004"]["10:35"]["network"] == "not_ok"
    assert by_minute["HN00070004"]["10:52"]["counted"] is False  # in repair
    assert "SAM" in reasons("HN00070002", "10:41")  # the fleet-wide reader fault


def test_every_fault_no_agent_crashed(every_fault: tuple[Player, Result]) -> None:
    _, result = every_fault
    assert not result.incidents, result.incidents
    assert result.report["run"]["link_cuts"] == 3  # network_down twice, sim_missing once


def test_modem_unresponsive_and_power_off_during_outage_equal_oracle(modem: tuple[Player, Result]) -> None:
    player, _ = modem
    _check_against_oracle(*modem)
    slots = {s["start"][11:16]: s for s in player.slots("HN00071002")}
    # sampled while the link was down, then the terminal lost power: delivered after it came back
    assert slots["15:51"]["device"] == "intact" and slots["15:51"]["network"] == "not_ok"
