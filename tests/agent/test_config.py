"""Agent configuration: bad input names its dotted field; secrets never show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load, parse


def test_defaults_are_sane() -> None:
    cfg = parse("")
    assert cfg.sampling.interval_s == 60
    assert cfg.outbox.max_mb == 50
    assert cfg.link.tls_min_version == "1.2"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[link]\nport = \"8883\"", "link.port"),
        ("[link]\nport = 70000", "link.port"),
        ("[link]\nprot = 8883", "link"),  # unknown key
        ("colour = 1", "colour"),
        ("[sampling]\ninterval_s = 7", "sampling.interval_s"),
        ("[peripherals.modem]\nport = \"/dev/ttyUSB2\"", "peripherals.modem"),  # profile missing
        ("[peripherals.printer]\nport = \"/dev/x\"\nprofile = \"generic-58mm\"\nbaud = 12345", "peripherals.printer.baud"),
        ("sn = \"HN/0001\"", "sn"),
        ("[components.app]\nfile = \"/a\"\ncommand = [\"b\"]", "components.app"),
        ("[log]\nlevel = \"LOUD\"", "log.level"),
    ],
)
def test_bad_values_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert str(err.value).startswith(field) or f"`{field.split('.')[-1]}`" in str(err.value) or field in str(err.value)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="prot"):
        parse("[link]\nprot = 8883")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text("[link\n")
    with pytest.raises(ConfigError, match="agent.toml: not valid TOML"):
        load(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_passphrase_is_never_shown(tmp_path: Path) -> None:
    cfg = parse('[link]\nkey_passphrase = "hunter2-secret"')
    assert "hunter2-secret" not in repr(cfg)
    assert cfg.redacted()["link"]["key_passphrase"] == "***"
    p = tmp_path / "a.toml"
    p.write_text('[link]\nkey_passphrase = "hunter2-secret"')
    out = subprocess.run([sys.executable, "-m", "posfleet", "agent", "check-config", "--config", str(p)],
                         capture_output=True, text=True)
    assert "hunter2-secret" not in out.stdout + out.stderr and '"key_passphrase": "***"' in out.stdout
    # the certificate files it names do not exist here: listed, exit 2 (tests/agent/test_fail_fast.py)
    assert out.returncode == 2 and "link.ca_file" in out.stderr, out.stderr


def test_bad_config_exits_2_with_the_field(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text("[link]\nport = \"x\"")
    out = subprocess.run([sys.executable, "-m", "posfleet", "agent", "run", "--config", str(p)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "link.port" in out.stderr


def test_example_config_is_valid() -> None:
    cfg = load(Path(__file__).parents[2] / "deploy" / "agent.example.toml")
    assert cfg.peripherals.modem is not None and cfg.peripherals.modem.profile == "quectel-ec25"
