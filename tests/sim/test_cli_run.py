"""`posfleet sim run SCENARIO --report FILE` end to end: the report file holds the server's answer, and it
equals the oracle's figures (one unit, one cut link, six counted minutes between two nights: the cut starts at
night, so the samples it holds span the night). In virtual time (the default) exactly; with ``--real-time`` at
speed 60 between two nights the clock runs through at 20,000, within the tolerance at fault edges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from posfleet.cli_sim_run import command
from simulator.oracle import oracle
from simulator.scenario import load_scenario

pytestmark = pytest.mark.timeout(90)

SCENARIO = {
    "name": "one clinic, cable cut",
    "start": "2026-03-09T22:00:00+08:00",
    "end": "2026-03-10T02:00:00+08:00",
    "service_hours": "00:00-00:06",
    "institutions": [{"code": "460100-201", "name": "海口市某社区卫生服务站", "county": "美兰",
                      "type": "community_health_station"}],
    "units": [{"sn": "HN00072001", "institution": "460100-201", "model": "generic-pos",
               "modem": "quectel-ec20", "printer": "generic-58mm", "idcard": "generic-sam"}],
    "events": [{"unit": "HN00072001", "fault": "network_down",
                "start": "2026-03-09T23:00:00+08:00", "end": "2026-03-10T00:03:00+08:00"}],
}


def test_sim_run_in_virtual_time_equals_the_oracle(tmp_path: Path) -> None:
    scenario = tmp_path / "cut.json"
    scenario.write_text(json.dumps(SCENARIO, ensure_ascii=False), encoding="utf-8")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(command, [str(scenario), "--report", str(report), "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    out = json.loads(report.read_text(encoding="utf-8"))
    assert out["run"]["mode"] == "virtual" and out["run"]["night_jumps"] >= 1
    unit = out["availability"]["unit"]["items"][0]
    want = oracle(load_scenario(scenario), group_by="unit")["groups"][0]
    for k in ("service_slots", "intact_slots", "network_ok_slots", "no_data_slots"):
        assert unit[k] == want[k], (k, unit, want)  # exactly: no timing in virtual time
    assert want["network_ok_slots"] == 3
    # the player's own checks
    assert out["run"]["late_wakes"] == 0 and out["run"]["ack_timeouts"] == 0 and out["run"]["max_offset_s"] < 1
    assert out["run"]["answer_read_twice_equal"] is True and out["run"]["incidents"] == []
    assert "oracle check: all 1 units agree" in result.output


def test_sim_run_options_of_the_real_time_mode_need_it(tmp_path: Path) -> None:
    scenario = tmp_path / "cut.json"
    scenario.write_text(json.dumps(SCENARIO, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(command, [str(scenario), "--speed", "60"])
    assert result.exit_code == 2 and "--speed: only with --real-time" in result.output


def test_sim_run_writes_the_servers_report(tmp_path: Path) -> None:
    scenario = tmp_path / "cut.json"
    scenario.write_text(json.dumps(SCENARIO, ensure_ascii=False), encoding="utf-8")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(command, [str(scenario), "--real-time", "--speed", "60", "--night-speed", "20000",
                                          "--report", str(report),
                                          "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    out = json.loads(report.read_text(encoding="utf-8"))
    assert out["period"]["from"] == "2026-03-09T22:00:00+08:00" and out["period"]["to"] == "2026-03-10T02:00:00+08:00"
    assert out["run"]["night_speed"] == 20000
    unit = out["availability"]["unit"]["items"][0]
    want = oracle(load_scenario(scenario), group_by="unit")["groups"][0]
    assert unit["sn"] == "HN00072001" and unit["service_slots"] == want["service_slots"] == 6
    assert unit["intact_slots"] == want["intact_slots"] == 6
    # three counted slots cut (00:00-00:02, sampled and delivered after the link came back): one slot of slack
    # at the counted edge (00:03); the other edge is at night
    assert want["network_ok_slots"] == 3
    assert abs(unit["network_ok_slots"] - want["network_ok_slots"]) <= 1, (unit, want)
    assert unit["no_data_slots"] == 0
    assert out["availability"]["fleet"]["fleet"]["units"] == 1
    assert out["run"]["link_cuts"] == 1
    assert "fleet: device" in result.output  # the one-line summary on stderr
    # the player's own check against the oracle, in the report and on stderr
    assert out["oracle_check"]["units"] == 1 and out["oracle_check"]["units_outside_tolerance"] == 0
    assert "oracle check: all 1 units agree" in result.output


def test_sim_run_against_postgresql_answers_as_on_sqlite(tmp_path: Path, pg_url: str) -> None:
    """``--storage postgresql://...``: the same scenario, the server storing in PostgreSQL, the same answer."""
    scenario = tmp_path / "cut.json"
    scenario.write_text(json.dumps(SCENARIO, ensure_ascii=False), encoding="utf-8")
    answers = []
    for name, extra in (("sqlite", []), ("pg", ["--storage", pg_url])):
        report = tmp_path / f"{name}.json"
        result = CliRunner().invoke(command, [str(scenario), "--report", str(report), "--workdir",
                                              str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        answers.append(json.loads(report.read_text(encoding="utf-8"))["availability"])
    assert answers[0] == answers[1]
    assert answers[1]["unit"]["items"][0]["network_ok_slots"] == 3
    from tests.backend import db_count

    assert db_count(pg_url, "select count(*) from samples") > 0, "the second run stored in PostgreSQL"
