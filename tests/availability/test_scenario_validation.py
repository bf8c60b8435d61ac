"""Scenario parsing: the example of scenario-format.md loads; invalid scenarios are refused naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.scenario import FAULTS, ScenarioError, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"
EXAMPLE = SCENARIOS / "two-clinics-bad-week.json"


def example() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_the_documented_example_loads():
    sc = load_scenario(EXAMPLE)
    assert sc.name == "two clinics, one bad week"
    assert [u.sn for u in sc.units] == ["HN00010001", "HN00010002"]
    assert [(e.fault, e.unit) for e in sc.events] == [
        ("network_down", "HN00010001"),
        ("high_latency", "HN00010002"),
        ("printer_paper_out", "*"),
    ]
    assert sc.events[1].rtt_ms == 650
    clinic = sc.unit("HN00010002")
    assert [c.status for c in clinic.status] == ["in_repair"]
    assert sc.hours_for(clinic).days[6] == ()  # Sunday not named: no hours
    assert [e.fault for e in sc.events_for("HN00010001")] == ["network_down", "printer_paper_out"]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_scenario_is_valid(path):
    sc = load_scenario(path)
    assert sc.units and sc.end > sc.start


def test_the_fault_table_is_exactly_the_documented_one():
    assert set(FAULTS) == {
        "power_off",
        "agent_down",
        "network_down",
        "high_latency",
        "printer_paper_out",
        "printer_cover_open",
        "printer_offline",
        "idcard_reader_fault",
        "modem_unresponsive",
        "sim_missing",
        "storage_readonly",
    }


def _set(doc: dict, path: list, value) -> None:
    *head, last = path
    for key in head:
        doc = doc[key]
    if value is _DELETE:
        del doc[last]
    else:
        doc[last] = value


_DELETE = object()

CASES = [
    (["units", 1, "modem"], "foo", "units[1].modem: unknown profile 'foo'"),
    (["units", 0, "idcard"], "generic-58mm", "units[0].idcard: unknown profile 'generic-58mm'"),
    (["events", 1, "end"], "2026-11-04T09:00:00+08:00", "events[1].end: not after start"),
    (["events", 1, "rtt_ms"], _DELETE, "events[1].rtt_ms: missing (required for high_latency)"),
    (["events", 1, "rtt_ms"], "650", "events[1].rtt_ms: expected a whole number"),
    (["events", 0, "rtt_ms"], 500, "events[0].rtt_ms: only for high_latency, not network_down"),
    (["events", 2, "fault"], "printer_on_fire", "events[2].fault: unknown fault 'printer_on_fire'"),
    (["events", 0, "unit"], "HN99999999", "events[0].unit: unknown unit 'HN99999999'"),
    (
        ["events", 0, "start"],
        "2026-11-03T09:00:30+08:00",
        "events[0].start: '2026-11-03T09:00:30+08:00' is not on a minute",
    ),
    (
        ["events", 0, "start"],
        "2026-11-03T09:00:00",
        "events[0].start: '2026-11-03T09:00:00' has no UTC offset",
    ),
    (["events", 0, "end"], "tomorrow", "events[0].end: 'tomorrow' is not an ISO 8601 time"),
    (["events", 0, "start"], "2026-12-03T09:00:00+08:00", "events[0].end: not after start"),
    (
        ["events", 0],
        {
            "unit": "*",
            "fault": "agent_down",
            "start": "2026-12-01T00:00:00+08:00",
            "end": "2026-12-02T00:00:00+08:00",
        },
        "events[0]: entirely outside the scenario period",
    ),
    (["units", 0, "institution"], "469030-999", "units[0].institution: unknown institution '469030-999'"),
    (["units", 0, "colour"], "red", "units[0].colour: unknown field"),
    (["units", 1, "sn"], "HN00010001", "units[1].sn: duplicate unit 'HN00010001'"),
    (["units", 1, "sn"], "*", "units[1].sn: expected a serial number"),
    (["units", 1, "status", 0, "status"], "broken", "units[1].status[0].status: unknown status 'broken'"),
    (
        ["units", 1, "status"],
        [
            {"from": "2026-11-05T00:00:00+08:00", "status": "in_repair"},
            {"from": "2026-11-04T00:00:00+08:00", "status": "in_service"},
        ],
        "units[1].status[1].from: not after the previous status change",
    ),
    (
        ["institutions", 1, "service_hours", "sat"],
        "8-12",
        "institutions[1].service_hours: sat: start '8' is not HH:MM",
    ),
    (
        ["institutions", 1, "service_hours"],
        {"weekend": "08:00-12:00"},
        "institutions[1].service_hours: unknown day",
    ),
    (["institutions", 0, "type"], "spaceport", "institutions[0].type: unknown institution type 'spaceport'"),
    (["institutions", 1, "code"], "469030-001", "institutions[1].code: duplicate institution code"),
    (["service_hours"], "18:00-08:00", "service_hours: '18:00-08:00': end is not after start"),
    (["timezone"], "Mars/Olympus_Mons", "timezone: unknown time zone 'Mars/Olympus_Mons'"),
    (["end"], _DELETE, "end: missing"),
    (["end"], "2026-11-01T00:00:00+08:00", "end: not after start"),
    (["colour"], "red", "colour: unknown field"),
    (["sample_interval_s"], 0, "sample_interval_s: 0 is out of range"),
    (["sample_interval_s"], True, "sample_interval_s: expected a whole number, got a boolean"),
    (["units"], [], "units: no units"),
    (["events"], {"unit": "*"}, "events: expected a list, got an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[c[2].split(":")[0] for c in CASES])
def test_invalid_scenarios_name_the_field(path, value, message):
    doc = example()
    _set(doc, path, value)
    with pytest.raises(ScenarioError) as info:
        load_scenario(doc)
    assert message in str(info.value), str(info.value)


def test_every_problem_is_reported_at_once():
    doc = example()
    doc["units"][1]["modem"] = "foo"
    doc["events"][2]["fault"] = "printer_on_fire"
    doc["events"][1]["end"] = doc["events"][1]["start"]
    with pytest.raises(ScenarioError) as info:
        load_scenario(doc)
    paths = [p for p, _ in info.value.errors]
    assert paths == ["units[1].modem", "events[1].end", "events[2].fault"]


def test_profile_check_skips_a_kind_with_no_profiles_yet(tmp_path):
    for kind in ("modems", "printers", "readers"):
        (tmp_path / kind).mkdir()
    (tmp_path / "modems" / "quectel-ec20.toml").write_text('dialect = "quectel"\n')
    doc = example()
    doc["units"][0]["printer"] = "any-printer-at-all"
    with pytest.raises(ScenarioError) as info:
        load_scenario(doc, profiles_root=tmp_path)
    # only the modem folder has profiles: simcom-sim7600 is unknown there, printers are not checked
    assert [p for p, _ in info.value.errors] == ["units[1].modem"]
    assert "known: quectel-ec20" in str(info.value)


def test_bad_json_file_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "start": }', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"not valid JSON: .*line 2, column 11"):
        load_scenario(bad)
    dup = tmp_path / "dup.json"
    dup.write_text('{"name": "x", "name": "y"}', encoding="utf-8")
    with pytest.raises(ScenarioError, match="key 'name' given twice"):
        load_scenario(dup)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [c[0] for c in CASES if c[1] is not _DELETE]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELDS), json_values)
def test_garbage_in_any_field_raises_only_scenario_error(path, value):
    doc = example()
    try:
        _set(doc, path, value)
    except (KeyError, IndexError, TypeError):
        return
    try:
        load_scenario(copy.deepcopy(doc))
    except ScenarioError as err:
        assert err.errors and all(isinstance(p, str) and m for p, m in err.errors)


@given(json_values.filter(lambda v: not isinstance(v, str)))  # a string is a path
def test_garbage_documents_raise_only_scenario_error(value):
    with pytest.raises(ScenarioError):
        load_scenario(value)
