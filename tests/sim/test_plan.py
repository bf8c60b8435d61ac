"""The player's plan, apart from any process: which state each unit's emulation is in when, how fast a
scenario can be played faithfully, what it refuses. Literal scenarios, hand-checked."""

from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

import pytest
from click.testing import CliRunner

from posfleet.cli_sim_run import command
from simulator.run import (
    FAULT_CHECK_REAL_S,
    MIN_SLOT_REAL_S,
    Player,
    UnitState,
    boundaries,
    collapse_nights,
    load,
    max_speed,
    report_period,
    speed_schedule,
    timeline,
    unit_state,
)
from simulator.scenario import ScenarioError
from wire.clock import Clock

T = "2026-06-01T{}:00+08:00"


def scenario(events: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    data = {
        "name": "plan", "start": T.format("10:00"), "end": T.format("11:00"),
        "institutions": [{"code": "I1", "name": "卫生室", "county": "琼中"}],
        "units": [
            {"sn": "HN1", "institution": "I1", "model": "m", "modem": "quectel-ec20", "printer": "generic-58mm",
             "idcard": "generic-sam", "status": [{"from": T.format("10:40"), "status": "in_repair"}]},
            {"sn": "HN2", "institution": "I1", "model": "m", "modem": "quectel-ec20", "printer": "generic-58mm",
             "idcard": "generic-sam"},
        ],
        "events": events,
    }
    data.update(top)
    return data


def ev(unit: str, fault: str, a: str, b: str, **kw: Any) -> dict[str, Any]:
    return {"unit": unit, "fault": fault, "start": T.format(a), "end": T.format(b), **kw}


def at(hhmm: str) -> datetime:
    return datetime.fromisoformat(T.format(hhmm))


def test_overlapping_faults_combine_and_end_excluded() -> None:
    sc, _ = load(scenario([
        ev("HN1", "network_down", "10:05", "10:20"),
        ev("HN1", "sim_missing", "10:10", "10:30"),
        ev("HN1", "high_latency", "10:15", "10:25", rtt_ms=300),
        ev("HN1", "high_latency", "10:18", "10:22", rtt_ms=900),
        ev("*", "printer_paper_out", "10:12", "10:13"),
    ]))
    u = sc.unit("HN1")
    assert unit_state(sc, u, at("10:04")) == UnitState()
    s = unit_state(sc, u, at("10:19"))
    assert not s.link_up and s.rtt_ms == 900  # the worst delay wins
    assert s.faults == {"sim_missing"}  # the modem switch; the link cut comes from both faults
    assert not unit_state(sc, u, at("10:20")).link_up  # network_down over, sim_missing still cuts
    assert unit_state(sc, u, at("10:22")).rtt_ms == 300
    assert unit_state(sc, u, at("10:30")).link_up  # end excluded
    assert unit_state(sc, sc.unit("HN2"), at("10:12")).faults == {"printer_paper_out"}
    assert unit_state(sc, sc.unit("HN2"), at("10:13")).faults == frozenset()


def test_power_off_wins_over_agent_down_and_status_follows_history() -> None:
    sc, _ = load(scenario([ev("HN1", "agent_down", "10:05", "10:20"), ev("HN1", "power_off", "10:10", "10:15")]))
    u = sc.unit("HN1")
    assert unit_state(sc, u, at("10:06")).stop_signal == signal.SIGTERM
    assert unit_state(sc, u, at("10:11")).stop_signal == signal.SIGKILL
    assert not unit_state(sc, u, at("10:19")).running
    assert unit_state(sc, u, at("10:20")).running
    assert unit_state(sc, u, at("10:39")).status == "in_service"
    assert unit_state(sc, u, at("10:40")).status == "in_repair"


def test_timeline_lists_only_changes_at_each_edge() -> None:
    sc, _ = load(scenario([ev("HN1", "printer_offline", "10:05", "10:20"), ev("HN2", "storage_readonly", "10:05", "12:00")]))
    assert boundaries(sc) == [at("10:00"), at("10:05"), at("10:20"), at("10:40")]  # 12:00 is after the end
    plan = dict(timeline(sc))
    assert set(plan[at("10:00")]) == {"HN1", "HN2"}  # everyone at the start
    assert set(plan[at("10:05")]) == {"HN1", "HN2"}
    assert plan[at("10:05")]["HN2"].storage_ro
    assert set(plan[at("10:20")]) == {"HN1"} and plan[at("10:20")]["HN1"].faults == frozenset()
    assert plan[at("10:40")]["HN1"].status == "in_repair"


def test_max_speed_is_bounded_by_the_slowest_fault_the_ok_latency_and_the_fleet_cpu() -> None:
    healthy, _ = load(scenario([]))
    assert max_speed(healthy, cores=2) == 60 / MIN_SLOT_REAL_S
    modem, _ = load(scenario([ev("HN1", "modem_unresponsive", "10:05", "10:20")]))
    assert max_speed(modem, cores=2) == int(60 / (MIN_SLOT_REAL_S + FAULT_CHECK_REAL_S["modem_unresponsive"]))
    ok_rtt, _ = load(scenario([ev("HN1", "high_latency", "10:05", "10:20", rtt_ms=380)]))
    assert max_speed(ok_rtt, cores=2) == int(0.8 * 60 / 0.48)  # the probe must come back within its wait
    bad_rtt, _ = load(scenario([ev("HN1", "high_latency", "10:05", "10:20", rtt_ms=3000)]))
    assert max_speed(bad_rtt, cores=2) == 60 / MIN_SLOT_REAL_S  # lost or late, it counts as not ok anyway
    units = [{"sn": f"HN{i:04d}", "institution": "I1", "model": "m", "modem": "quectel-ec20",
              "printer": "generic-58mm", "idcard": "generic-sam"} for i in range(1000)]
    fleet, _ = load(scenario([], units=units))
    assert max_speed(fleet, cores=2) < 5  # a thousand agents on two cores
    # a hundred: the measured faithful fleet rate (25 samples a real second on two cores), not the CPU, binds
    hundred, _ = load(scenario([], units=units[:100]))
    assert max_speed(hundred, cores=2) == 15 and max_speed(hundred, cores=4) == 30


def test_night_speed_covers_only_hours_no_institution_counts() -> None:
    two_days = scenario([], start="2026-06-01T00:00:00+08:00", end="2026-06-03T00:00:00+08:00",
                        service_hours="08:00-18:00",
                        institutions=[{"code": "I1", "name": "卫生室", "county": "琼中",
                                       "service_hours": {"mon": "07:00-12:00"}}])  # 1 June 2026 is a Monday
    sc, _ = load(two_days)
    ts = lambda text: datetime.fromisoformat(text).timestamp()  # noqa: E731
    assert speed_schedule(sc, 30, 3600) == [
        (ts("2026-06-01T00:02:00+08:00"), 3600), (ts("2026-06-01T06:58:00+08:00"), 30),  # Monday opens at 07:00
        (ts("2026-06-01T18:02:00+08:00"), 3600), (ts("2026-06-02T07:58:00+08:00"), 30),
        (ts("2026-06-02T18:02:00+08:00"), 3600), (ts("2026-06-02T23:58:00+08:00"), 30),  # the end at day speed
    ]
    assert speed_schedule(sc, 30, None) == [] and speed_schedule(sc, 30, 20) == []
    all_day, _ = load(scenario([], service_hours="00:00-23:59"))
    assert speed_schedule(all_day, 30, 3600) == []  # a one-minute gap is no night


def test_changes_at_night_are_applied_once_when_the_night_ends() -> None:
    night = scenario([ev("HN2", "power_off", "12:10", "12:20"), ev("HN2", "network_down", "12:30", "14:00"),
                      ev("HN1", "printer_paper_out", "10:30", "12:05")],
                     end="2026-06-01T15:00:00+08:00", service_hours="10:00-12:00")
    sc, _ = load(night)
    sched = speed_schedule(sc, 30, 3600)
    assert [datetime.fromtimestamp(t, sc.tz).strftime("%H:%M") for t, _ in sched] == ["12:02", "14:58"]
    plan = collapse_nights(timeline(sc), sched)
    when = [t.strftime("%H:%M") for t, _ in plan]
    assert when == ["10:00", "10:30", "10:40", "14:58"]  # 12:05 .. 14:00 all land on the night's end
    last = plan[-1][1]
    assert last["HN1"].faults == frozenset() and last["HN2"].running and last["HN2"].link_up
    assert set(last) == {"HN1", "HN2"} and plan[2][1]["HN1"].status == "in_repair"  # 10:40 is by day: as it was


def test_piecewise_clock_agrees_across_processes_and_inverts() -> None:
    sched = [(2000.0, 100.0), (5000.0, 10.0)]
    a = Clock(10, 1000.0, 50.0, sched)
    b = Clock(10, 1000.0, 50.0, sched)  # another process given the same settings
    assert a.real_at_sim(2000) == 100.0 and a.real_at_sim(5000) == 130.0
    assert a.sim_at_real(110.0) == 3000.0 == b.sim_at_real(110.0)
    for t in (500.0, 1000.0, 1999.0, 2000.0, 4321.0, 5000.0, 9000.0):
        assert a.sim_at_real(a.real_at_sim(t)) == pytest.approx(t)
    assert abs(a.raw() - b.raw()) < 1.0 and a.speed == 10  # long after the anchor: the last segment
    with pytest.raises(ValueError):
        Clock(10, 1000.0, 50.0, [(2000.0, 0.0)])


def test_report_period_is_the_enclosing_whole_hours() -> None:
    sc, _ = load(scenario([], start=T.format("10:30"), end="2026-06-01T12:15:00+08:00"))
    a, b = report_period(sc)
    assert (a.isoformat(), b.isoformat()) == ("2026-06-01T10:00:00+08:00", "2026-06-01T13:00:00+08:00")


def test_player_refuses_an_interval_the_agent_cannot_sample() -> None:
    sc, raw = load(scenario([], sample_interval_s=7))
    with pytest.raises(ScenarioError) as err:
        Player(sc, raw)
    assert err.value.errors[0][0] == "sample_interval_s"


def test_cli_refuses_an_invalid_scenario_naming_the_field(tmp_path) -> None:
    bad = scenario([ev("HN9", "network_down", "10:05", "10:20"), ev("HN1", "lightning", "10:05", "10:20")])
    bad["units"][1]["printer"] = "no-such-printer"
    path = tmp_path / "bad.json"
    import json

    path.write_text(json.dumps(bad))
    result = CliRunner().invoke(command, [str(path)])
    assert result.exit_code == 2
    assert "events[0].unit: unknown unit 'HN9'" in result.output
    assert "events[1].fault: unknown fault 'lightning'" in result.output
    assert "units[1].printer: unknown profile 'no-such-printer'" in result.output


def test_cli_refuses_a_bad_speed(tmp_path) -> None:
    path = tmp_path / "ok.json"
    import json

    path.write_text(json.dumps(scenario([])))
    result = CliRunner().invoke(command, [str(path), "--real-time", "--speed", "fast"])
    assert result.exit_code == 2
    assert "--speed" in result.output
