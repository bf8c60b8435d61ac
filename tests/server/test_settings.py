"""Typed server settings: defaults, and bad input refused with the dotted path of the field, at the command line too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import SettingsError, parse


def test_defaults() -> None:
    s = parse({})
    assert s.retention_days == 14 and s.mqtt.share_group == "" and s.timezone == "Asia/Shanghai"


def test_share_group_is_a_secret_derived_from_the_key(tmp_path: Path) -> None:
    """Decision 011: the shared subscription's group must be unknown to terminals (the broker's ACL cannot refuse
    a terminal's subscription to it); by default it comes from the server's private key, stable across restarts."""
    (tmp_path / "server-client.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nkey one\n")
    s = parse({}, str(tmp_path))
    group = s.share_group()
    assert group == parse({}, str(tmp_path)).share_group() and len(group) >= 32 and "posfleet" not in group
    (tmp_path / "other.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nkey two\n")
    assert parse({"mqtt": {"key_file": "other.key"}}, str(tmp_path)).share_group() != group
    assert parse({"mqtt": {"share_group": "k3Jx9qLw2mVt8ZrB"}}).share_group() == "k3Jx9qLw2mVt8ZrB"
    for public in ("posfleet", "short", "has/slash-0123456789"):
        with pytest.raises(SettingsError, match="mqtt.share_group"):
            parse({"mqtt": {"share_group": public}})


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
