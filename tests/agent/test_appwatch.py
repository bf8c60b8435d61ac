"""The agent's reading of the terminal application's files (agent/appwatch.py, issue 18): counts per hour from the
service events file (appended, rotated, cut mid-line, late lines), a restart counting nothing twice, interface
reach sent when it changes, and nothing of a line but the counted fields kept."""

from __future__ import annotations

import json
from pathlib import Path

from agent.appwatch import AppWatch
from agent.config import TerminalAppConfig

H = 1_741_000_000 // 3600 * 3600  # an hour start


def _cfg(tmp_path: Path, **kw: object) -> TerminalAppConfig:
    return TerminalAppConfig(events_file=str(tmp_path / "events.jsonl"), **kw)  # type: ignore[arg-type]


def _append(tmp_path: Path, *lines: object) -> None:
    with (tmp_path / "events.jsonl").open("a") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")


def _svc(events: list) -> list[dict]:
    return [e.data for e in events if e.kind == "svc"]


def test_counts_per_hour_sent_when_the_hour_is_over_and_again_when_late_lines_change_it(tmp_path: Path) -> None:
    w = AppWatch(_cfg(tmp_path), tmp_path)
    _append(tmp_path, {"ts": H + 10, "event": "service", "method": "face", "business": "settle", "name": "王小明"},
            {"ts": H + 20, "event": "service", "method": "evoucher", "business": "settle"},
            {"ts": H + 30, "event": "check", "method": "idcard"},
            {"ts": H + 3700, "event": "service", "method": "idcard"})
    assert _svc(w.poll(H + 3599, {})) == []  # the hour is still open
    sent = _svc(w.poll(H + 3600, {}))
    assert sent == [{"hour": H, "services": 2, "face": 1, "idcard": 1, "evoucher": 1, "other": 0,
                     "business": {"settle": 2}}]
    assert _svc(w.poll(H + 3660, {})) == []  # nothing new: nothing sent
    _append(tmp_path, {"ts": H + 50, "event": "service", "method": "face"})  # a late line for the closed hour
    assert [d["services"] for d in _svc(w.poll(H + 3720, {}))] == [3]
    # the next hour, once over
    assert [(d["hour"], d["services"]) for d in _svc(w.poll(H + 7200, {}))] == [(H + 3600, 1)]
    assert "王小明" not in (tmp_path / "appwatch.json").read_text()


def test_a_restart_counts_nothing_twice_and_a_cut_line_waits_for_its_end(tmp_path: Path) -> None:
    w = AppWatch(_cfg(tmp_path), tmp_path)
    _append(tmp_path, {"ts": H + 1, "event": "service", "method": "face"})
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write('{"ts": ' + str(H + 2) + ', "event": "serv')  # the application is writing this line now
    w.poll(H + 60, {})
    w2 = AppWatch(_cfg(tmp_path), tmp_path)  # the agent restarted
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write('ice", "method": "idcard"}\n')
    sent = _svc(w2.poll(H + 3600, {}))
    assert [(d["services"], d["face"], d["idcard"]) for d in sent] == [(2, 1, 1)]


def test_rotation_and_hostile_lines(tmp_path: Path) -> None:
    w = AppWatch(_cfg(tmp_path), tmp_path)
    _append(tmp_path, {"ts": H + 1, "event": "service"}, {"ts": H + 2, "event": "service"})
    w.poll(H + 60, {})
    (tmp_path / "events.jsonl").rename(tmp_path / "events.jsonl.1")  # rotated: a new file from its start
    _append(tmp_path, {"ts": H + 3, "event": "service", "method": "face"},
            "not json", "[1, 2]", {"ts": "yesterday", "event": "service"}, {"ts": H + 4, "event": "payment"},
            {"ts": H + 5, "event": "service", "business": "x" * 100}, "x" * 10_000,
            {"ts": "2025-03-03T09:00:00", "event": "service"})  # no offset: which zone? skipped
    sent = _svc(w.poll(H + 3600, {}))
    assert [(d["services"], d["face"], d["business"]) for d in sent] == [(4, 1, {})]
    assert w.skipped == 6


def test_interface_reach_reported_when_it_changes_with_a_reason_word_only(tmp_path: Path) -> None:
    status = tmp_path / "interfaces.json"
    w = AppWatch(TerminalAppConfig(status_file=str(status), interfaces=["settle", "catalogue"]), tmp_path)
    status.write_text(json.dumps({"interfaces": {"settle": {"ok": True, "last_ok": H}, "catalogue": {
        "ok": False, "reason": "HTTP 500 身份证 460100198703150021"}, "other": {"ok": False}}}))
    first = [e.data for e in w.poll(H + 10, {}) if e.kind == "iface"]
    assert first == [{"interface": "settle", "ok": True, "last_ok": H},
                     {"interface": "catalogue", "ok": False, "reason": "other"}]
    assert [e for e in w.poll(H + 20, {}) if e.kind == "iface"] == []  # unchanged: nothing
    status.write_text(json.dumps({"interfaces": {"settle": {"ok": False, "reason": "timeout"},
                                                 "catalogue": {"ok": False, "reason": "other"}}}))
    assert [e.data for e in w.poll(H + 30, {}) if e.kind == "iface"] == [
        {"interface": "settle", "ok": False, "reason": "timeout"}]


def test_the_address_goes_with_the_identity_only_when_it_changes(tmp_path: Path) -> None:
    w = AppWatch(TerminalAppConfig(cellular_interface="lo", wired_interface="no-such-nic0"), tmp_path)
    ev = w.poll(H, {"iccid": "8986001"})
    assert [(e.kind, e.data) for e in ev] == [("identity", {"iccid": "8986001", "ip": "127.0.0.1", "link": "cellular"})]
    assert w.poll(H + 60, {"iccid": "8986001"}) == []
    assert AppWatch(TerminalAppConfig(cellular_interface="lo"), tmp_path).poll(H + 120, {}) == []  # restart: known
