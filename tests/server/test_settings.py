"""Typed server settings: defaults, and bad input refused with the dotted path of the field, at the command line too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import SettingsError, parse


def test_defaults() -> None:
    s = parse({})
    assert s.retention_days == 14 and s.mqtt.share_group == "posfleet" and s.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(("data", "field"), [
    ({"mqtt": {"prot": 8883}}, "mqtt.prot"),
    ({"mqtt": {"port": "eighty"}}, "mqtt.port"),
    ({"retention_days": 0}, "retention_days"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_settings_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse(data)
    assert field in str(err.value)


def test_server_run_exits_2_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "server.toml"
    cfg.write_text("[mqtt]\nprot = 8883\n")
    out = subprocess.run([sys.executable, "-m", "posfleet", "server", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "mqtt.prot" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "posfleet", "server", "token", "create", "--config", str(cfg),
                          "--name", "x", "--role", "admin"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "mqtt.prot" in out.stderr, out.stderr
