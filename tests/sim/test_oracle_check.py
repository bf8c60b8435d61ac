"""The player's own check of a run against the oracle (``simulator.run.oracle_check``): a run whose figures
differ from the scenario's beyond availability.md's one slot at each fault edge is called unfaithful in the
report and the incidents, so nobody takes a starved machine's figures for the scenario's. Literal server answers
built from the oracle and then bent; the whole chain's agreement is tests/sim/test_oracle_compare.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from simulator.oracle import oracle
from simulator.run import oracle_check
from simulator.scenario import load_scenario

SCENARIO = load_scenario(Path(__file__).parent / "scenarios" / "every-fault-half-hour.json")


def _server_items() -> list[dict[str, Any]]:
    """What a faithful server answers, grouped by unit (``items`` keyed by ``sn``)."""
    return [{"sn": g.pop("unit"), **g} for g in oracle(SCENARIO, group_by="unit")["groups"]]


def _edges(sn: str) -> int:
    return len({t for e in SCENARIO.events_for(sn) for t in (e.start, e.end)} | {c.at for c in SCENARIO.unit(sn).status})


def test_a_faithful_run_passes() -> None:
    summary, incidents = oracle_check(SCENARIO, _server_items(), speed=35)
    assert incidents == []
    assert summary["units"] == len(SCENARIO.units) and summary["units_outside_tolerance"] == 0
    assert set(summary["fleet_difference"].values()) == {0}


def test_one_slot_per_fault_edge_is_tolerated_and_one_more_is_not() -> None:
    items = _server_items()
    sn = items[0]["sn"]
    slack = _edges(sn)
    assert slack >= 2, "the test needs a unit with faults"
    items[0]["intact_slots"] -= slack
    items[0]["no_data_slots"] += slack
    assert oracle_check(SCENARIO, items)[1] == [], "within the edges' tolerance"

    items[0]["intact_slots"] -= 1
    summary, incidents = oracle_check(SCENARIO, items, speed=35)
    assert summary["units_outside_tolerance"] == 1 and summary["units_off"][0]["sn"] == sn
    assert summary["fleet_difference"]["intact_slots"] == -(slack + 1)
    assert len(incidents) == 1
    text = incidents[0]
    assert f"1 of {len(SCENARIO.units)} units" in text and sn in text and "speed 35" in text
    assert "intact -" in text and "--speed" in text, "says what was wrong and what to do"


def test_service_slots_must_agree_exactly() -> None:
    items = _server_items()
    items[-1]["service_slots"] += 1  # hours and status involve no timing: no tolerance at all
    summary, incidents = oracle_check(SCENARIO, items)
    assert summary["units_off"][0]["sn"] == items[-1]["sn"] and incidents


def test_a_unit_missing_from_the_answer_is_reported() -> None:
    items = _server_items()
    gone = items.pop(1)["sn"]
    summary, incidents = oracle_check(SCENARIO, copy.deepcopy(items))
    assert [u["sn"] for u in summary["units_off"]] == [gone] and incidents
