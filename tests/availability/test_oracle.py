"""The oracle on the shipped scenarios, against figures counted by hand; the ``oracle`` CLI command."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from posfleet.cli_sim_oracle import command
from simulator.oracle import count_scenario, oracle, unit_samples
from simulator.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"
SH = ZoneInfo("Asia/Shanghai")


def by(groups: list[dict], key: str) -> dict[str, dict]:
    return {g[key]: g for g in groups}


def counts(g: dict) -> tuple[int, int, int, int]:
    return (g["service_slots"], g["intact_slots"], g["network_ok_slots"], g["no_data_slots"])


def test_two_clinics_bad_week_by_hand():
    sc = load_scenario(SCENARIOS / "two-clinics-bad-week.json")
    out = oracle(sc)
    units = by(out["groups"], "unit")
    # health centre, 08:00-18:00 x 7 days = 4200; network down 09:00-11:30 on the 3rd = 150;
    # paper out 14:00-14:05 on the 6th = 5
    assert counts(units["HN00010001"]) == (4200, 4195, 4050, 0)
    assert units["HN00010001"]["network_rate"] == round(4050 / 4200, 6) == 0.964286
    # village clinic mon-fri 08:00-17:30 (570), in repair from Thursday the 5th: Mon-Wed = 1710;
    # 650 ms latency 10:00-10:20 on the 4th = 20; its paper-out falls while it is in repair
    assert counts(units["HN00010002"]) == (1710, 1710, 1690, 0)
    fleet = out["fleet"]
    assert counts(fleet) == (5910, 5905, 5740, 0)
    assert (fleet["units"], fleet["flagged_units"], fleet["tier"], fleet["final_payment"]) == (2, 0, 1, 0.6)
    assert out["period"]["from"] == "2026-11-02T00:00:00+08:00" and out["period"]["threshold"] == 0.95


def test_drill_down_shows_why_a_slot_counts_as_it_does():
    sc = load_scenario(SCENARIOS / "two-clinics-bad-week.json")
    per_unit = count_scenario(sc)
    paper = per_unit["HN00010001"].slot_at(datetime(2026, 11, 6, 14, 2, tzinfo=SH))
    assert (paper.counted, paper.device, paper.network, paper.reason) == (
        True,
        "not_intact",
        "ok",
        "printer_paper_out",
    )
    repair = per_unit["HN00010002"].slot_at(datetime(2026, 11, 6, 14, 2, tzinfo=SH))
    assert (repair.counted, repair.excluded) == (False, "in_repair")
    lag = per_unit["HN00010002"].slot_at(datetime(2026, 11, 4, 10, 19, tzinfo=SH))
    assert (lag.network, lag.reason) == ("not_ok", "high_latency")
    assert per_unit["HN00010002"].slot_at(datetime(2026, 11, 4, 10, 20, tzinfo=SH)).network == "ok"


def test_all_faults_day_by_hand():
    out = oracle(load_scenario(SCENARIOS / "all-faults-day.json"))
    u = by(out["groups"], "unit")
    # every unit: 600 service slots; storage read-only 17:55-18:05 costs 5 intact slots before closing
    assert counts(u["HN00040001"]) == (600, 535, 540, 60)  # power_off 10-11: no data
    assert counts(u["HN00040002"]) == (600, 535, 540, 60)  # agent_down
    assert counts(u["HN00040003"]) == (600, 595, 540, 0)  # network_down
    assert counts(u["HN00040004"]) == (600, 595, 540, 0)  # high_latency 650 ms
    for sn in ("HN00040005", "HN00040006", "HN00040007", "HN00040008", "HN00040009", "HN00040011"):
        assert counts(u[sn]) == (600, 535, 600, 0), sn  # device faults
    assert counts(u["HN00040010"]) == (600, 535, 540, 0)  # sim_missing: both
    assert counts(u["HN00049001"]) == (600, 595, 600, 0)  # 400 ms is not above 400 ms
    # network_down 14:00-15:00, paper out 14:30-15:30, power off 14:50-15:10 (20 no data)
    assert counts(u["HN00049002"]) == (600, 600 - 20 - 40 - 5, 600 - 20 - 50, 20)
    assert out["fleet"]["tier"] == 2 and out["fleet"]["flagged_units"] == 12


def test_latency_threshold_is_configurable():
    sc = load_scenario(SCENARIOS / "all-faults-day.json")
    u = by(oracle(sc, latency_threshold_ms=399)["groups"], "unit")
    assert u["HN00049001"]["network_ok_slots"] == 540
    u = by(oracle(sc, latency_threshold_ms=650)["groups"], "unit")
    assert u["HN00040004"]["network_ok_slots"] == 600


def test_month_with_repair_and_swap_by_hand():
    out = oracle(load_scenario(SCENARIOS / "month-status-swap.json"))
    u = by(out["groups"], "unit")
    # March 2026 at the clinic (mon-fri 570, sat 240): 22 weekdays, 4 Saturdays = 13500 minutes, shared
    # between the original (until 10 Mar 10:00, again from 23 Mar) and the spare (in between)
    assert counts(u["HN00030001"]) == (
        8010,
        8010 - 330,
        8010,
        0,
    )  # printer offline 9 Mar 14:00 - 10 Mar 10:00
    assert counts(u["HN00039001"]) == (5490, 5490, 5490, 0)
    assert u["HN00030001"]["service_slots"] + u["HN00039001"]["service_slots"] == 22 * 570 + 4 * 240
    # health centre, 08:00-18:00 until retired on the 28th: 27 days; agent down 07:30-08:30 on the 16th
    assert counts(u["HN00030002"]) == (16200, 16170, 16170, 30)
    assert not any(g["flagged"] for g in out["groups"])


def test_carrier_outage_grouped_by_county_and_institution():
    sc = load_scenario(SCENARIOS / "carrier-outage-county.json")
    counties = by(oracle(sc, group_by="county")["groups"], "county")
    assert (counties["屯昌"]["units"], counties["屯昌"]["flagged_units"]) == (10, 10)
    assert (counties["琼中"]["units"], counties["琼中"]["flagged_units"], counties["琼中"]["flagged"]) == (
        2,
        0,
        False,
    )
    insts = by(oracle(sc, group_by="institution")["groups"], "institution")
    # lunch-break clinic: 240 + 210 a day x 3; the outage 09:00-13:00 costs 180 (closed 12:00-14:30)
    assert counts(insts["469026-102"]) == (3 * 1350, 3 * 1350, 3 * 1170, 0)
    fleet = oracle(sc, group_by="fleet")
    assert counts(fleet["groups"][0]) == counts(fleet["fleet"])
    assert sum(g["service_slots"] for g in counties.values()) == fleet["fleet"]["service_slots"]


def test_sample_interval_does_not_change_figures_when_faults_fall_on_it():
    sc = load_scenario(SCENARIOS / "two-clinics-bad-week.json")
    five = load_scenario(
        {**json.loads((SCENARIOS / "two-clinics-bad-week.json").read_text()), "sample_interval_s": 300}
    )
    assert len(unit_samples(five, five.units[0])) * 5 == len(unit_samples(sc, sc.units[0]))
    assert oracle(five)["groups"] == oracle(sc)["groups"]


def test_cli_prints_json_figures():
    result = CliRunner().invoke(
        command, [str(SCENARIOS / "two-clinics-bad-week.json"), "--group-by", "county"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["groups"][0]["county"] == "琼中" and out["groups"][0]["service_slots"] == 5910
    assert out["fleet"]["tier"] == 1


def test_cli_table():
    result = CliRunner().invoke(command, [str(SCENARIOS / "all-faults-day.json"), "--table"])
    assert result.exit_code == 0
    assert (
        "HN00049002" in result.stdout and "88.333%" in result.stdout and "contract tier: 2" in result.stdout
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["units"][1].update(modem="foo"), "units[1].modem: unknown profile 'foo'"),
        (lambda d: d["events"][0].update(end=d["events"][0]["start"]), "events[0].end: not after start"),
    ],
)
def test_cli_invalid_scenario_exits_2_naming_the_field(tmp_path, edit, message):
    doc = json.loads((SCENARIOS / "two-clinics-bad-week.json").read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = CliRunner().invoke(command, [str(path)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_cli_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(command, [str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "cannot read" in result.stderr
