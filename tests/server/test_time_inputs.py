"""Times people type (issue 14): one parser (wire/times.py) for the API and the CLI; plain dates and local times
in the fleet's zone are accepted, and every hint a refusal gives is accepted when fed back (it used to suggest
``2026-10-01+08:00``, which was then refused as ``...+08:00+08:00``)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.server.conftest import make_api
from wire.times import TimeInputError, parse_day, parse_time

SH = ZoneInfo("Asia/Shanghai")


def ts(text: str, tz: ZoneInfo = SH) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp())


def test_days_local_times_and_offsets_are_read_in_the_fleets_zone() -> None:
    assert parse_time("2026-10-01", "from") == ts("2026-10-01T00:00")
    assert parse_time("2026-10-31", "to", end=True) == ts("2026-11-01T00:00")  # the last day is included
    assert parse_time("2026-10-01T08:00", "from") == ts("2026-10-01T08:00")
    assert parse_time("2026-10-01 08:00:30", "from") == ts("2026-10-01T08:00:30")
    assert parse_time("2026-10-01T08:00:00+08:00", "from") == ts("2026-10-01T08:00")
    assert parse_time("2026-10-01T00:00:00Z", "from") == ts("2026-10-01T08:00")
    assert parse_time("2026-10-01T08:00+0800", "from") == ts("2026-10-01T08:00")
    assert parse_time("2026-10-01+08:00", "from") == ts("2026-10-01T00:00")  # what the old hint said to write
    # another configured zone
    assert parse_time("2026-10-01", "from", "Europe/Berlin") == ts("2026-10-01T00:00", ZoneInfo("Europe/Berlin"))


@pytest.mark.parametrize("text, first_hint", [
    ("2026-10-1", "2026-10-01"),
    ("2026/10/01 8:00", "2026-10-01T08:00"),
    ("2026年10月1日", "2026-10-01"),
    ("2026-10-01T08:00:00.5+08:00", "2026-10-01T08:00:00+08:00"),
    ("2026-10-01+08:00+08:00", "2026-10-01"),
    ("tomorrow", "2026-10-01"),
    ("1999-12-31", "2026-10-01"),
    ("2026-02-30", "2026-10-01"),
])
def test_a_refusal_names_the_closest_accepted_form(text: str, first_hint: str) -> None:
    with pytest.raises(TimeInputError) as err:
        parse_time(text, "from")
    assert err.value.field == "from" and err.value.hints[0] == first_hint, err.value.hints
    assert first_hint in str(err.value)


_PIECES = st.sampled_from(["2026", "2026-10", "-", "/", "10", "1", "01", "T", " ", "8", "08:00", ":", ":30", ".5",
                           "+08:00", "+8:00", "Z", "+0800", "年", "月", "日", "时", "分", "99", "2100", "x", "-13"])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(text=st.one_of(st.lists(_PIECES, max_size=8).map("".join), st.text(max_size=30)), end=st.booleans())
def test_every_hint_is_accepted_when_fed_back(text: str, end: bool) -> None:
    try:
        parse_time(text, "to" if end else "from", end=end)
    except TimeInputError as err:
        assert err.hints, text
        for hint in err.hints:
            parse_time(hint, "to" if end else "from", end=end)  # raises if a hint is refused


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.one_of(st.lists(_PIECES, max_size=8).map("".join), st.text(max_size=20)))
def test_every_day_hint_is_accepted_when_fed_back(text: str) -> None:
    try:
        parse_day(text)
    except TimeInputError as err:
        assert len(err.hints) == 1 and err.hints[0] in err.message, err.message
        parse_day(err.hints[0])


async def test_the_api_takes_plain_dates_and_its_hints_work(tmp_path: Path) -> None:
    async with make_api(tmp_path, now="2025-03-04 07:00") as api:
        r = await api.get("/api/v1/availability", **{"from": "2025-03-01", "to": "2025-03-03"})
        assert r.status_code == 200, r.text
        assert (r.json()["from"], r.json()["to"]) == ("2025-03-01T00:00:00+08:00", "2025-03-04T00:00:00+08:00")
        for bad in ("2025-03-3", "2025-03-03T08:30", "2025-03-03T08:30:00+08:00"):
            r = await api.get("/api/v1/availability", **{"from": bad, "to": "2025-03-04"})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from", r.text
            hints = re.search(r"write e\.g\. (.+)$", r.json()["errors"][0]["error"]).group(1).split(" or ")
            for hint in hints:
                ok = await api.get("/api/v1/availability", **{"from": hint, "to": "2025-03-04"})
                assert ok.status_code == 200, (bad, hint, ok.text)
        # the drill-down's day: the hint names the day meant
        r = await api.get("/api/v1/units/HN00060001/slots", date="2025-3-3")
        assert r.status_code == 422 and r.json()["errors"][0]["error"].endswith("write e.g. 2025-03-03"), r.text
        # the status change's time too
        await api.req("PUT", "/api/v1/registry/units/HN00060001", json={})
        r = await api.req("POST", "/api/v1/registry/units/HN00060001/status", json={"status": "spare", "at": "2025-03-03T09:15"})
        assert r.status_code == 200 and r.json()["from_ts"] == "2025-03-03T09:15:00+08:00", r.text


def test_the_cli_takes_plain_dates_and_its_hints_work(tmp_path: Path) -> None:
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "fleet.sqlite"}"\n', encoding="utf-8")

    def report(start: str, end: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "posfleet", "report", "ops", "--config", str(cfg),
                               "--from", start, "--to", end, "--format", "csv"],
                              capture_output=True, text=True, timeout=120)

    ok = report("2025-03-01", "2025-03-31")
    assert ok.returncode == 0, ok.stderr
    bad = report("2025-3-1", "2025-03-31")
    assert bad.returncode == 2 and "--from" in bad.stderr, bad.stderr
    text = " ".join(bad.stderr.split())
    hints = re.search(r"write e\.g\. (.+?)(?:$|\s*$)", text).group(1).split(" or ")
    assert hints[0] == "2025-03-01", hints
    for hint in hints:
        again = report(hint.strip(), "2025-03-31")
        assert again.returncode == 0, (hint, again.stderr)
