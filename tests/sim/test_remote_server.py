"""`posfleet sim run --server URL`: a running server keeps its own clock, so the scenario is played in real time
(speed 1, no night speed) and only against a server whose clock is real time in the scenario's zone; anything
else is refused before a terminal is made. (A whole real-time run takes the scenario's length in minutes: it
is not in the suite; docs/simulator.md.)"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from posfleet.cli_sim_run import command
from simulator.run import Options, Player, RunError, load
from tests.fleet import PASS, Server

pytestmark = pytest.mark.timeout(60)


def _scenario(start: datetime, minutes: int = 2) -> dict:
    return {
        "name": "remote", "timezone": "Asia/Shanghai", "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(), "service_hours": "00:00-23:59",
        "institutions": [{"code": "460100-301", "name": "卫生室", "county": "美兰"}],
        "units": [{"sn": "HN00073001", "institution": "460100-301", "model": "generic-pos", "modem": "quectel-ec20",
                   "printer": "generic-58mm", "idcard": "generic-sam"}],
        "events": [],
    }


def _minute_after(seconds: float) -> datetime:
    t = datetime.fromtimestamp(time.time() + seconds).astimezone()
    return t.replace(second=0, microsecond=0) + timedelta(minutes=1)


def test_cli_refuses_server_at_an_accelerated_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSFLEET_TOKEN", "t")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_scenario(_minute_after(600)), ensure_ascii=False), encoding="utf-8")
    args = [str(path), "--server", "http://127.0.0.1:9", "--broker", "mqtts://127.0.0.1:9", "--ca-dir", str(tmp_path)]
    result = CliRunner().invoke(command, args + ["--real-time", "--speed", "30"])
    assert result.exit_code == 2 and "real time (--speed 1)" in result.output, result.output
    result = CliRunner().invoke(command, [str(path), "--real-time", "--server", "http://127.0.0.1:9", "--speed", "1"])
    assert result.exit_code == 2 and "--broker" in result.output, result.output
    # in virtual time (the default) a running server is refused outright: its clock is its own
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2 and "only with --real-time" in result.output, result.output


def test_server_refused_unless_its_clock_is_real_time_and_the_start_ahead(
        pki, broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accelerated = Server(pki, broker, tmp_path / "server",
                         clock={"speed": 60, "start": "2026-03-09T08:00:00+08:00", "anchor": time.time()}).start()
    try:
        monkeypatch.setenv("POSFLEET_TOKEN", accelerated.token("admin"))
        monkeypatch.setenv("POSFLEET_CA_PASSPHRASE", PASS)
        opts = Options(speed=1, server_url=accelerated.url, broker_url=f"mqtts://localhost:{broker.port}",
                       ca_dir=pki.dir, workdir=tmp_path / "work")
        sc, raw = load(_scenario(_minute_after(600)))
        with Player(sc, raw, opts) as player:
            assert player.schedule == []  # no night speed against a real-time server
            with pytest.raises(RunError, match="speed 60"):
                player.run()
        soon, raw = load(_scenario(datetime.now().astimezone().replace(second=0, microsecond=0)))
        with Player(soon, raw, opts) as player, pytest.raises(RunError, match="must start at least"):
            player.run()
    finally:
        accelerated.stop()
