"""What the laptop and the terminal share of the console lives in wire/ (issue 14, decision 015): the laptop's list
of commands is the terminal's catalogue, whatever the terminal registers. The credentials (wire/credentials.py) are
tested end to end by test_console_changes.py; tests/test_layering.py keeps posfleet/diagconsole/ off agent/."""

from __future__ import annotations

import pytest

from agent.console import service  # noqa: F401  (registers every command, as the agent does)
from agent.console.commands import REGISTRY, command
from posfleet.diagconsole.shell import parse
from wire.console import COMMANDS, SECRET_KEY


def test_the_laptops_command_list_is_the_terminals_catalogue() -> None:
    assert list(REGISTRY) == list(COMMANDS)
    assert parse(["outbox", "clear", "seq=3"], list(COMMANDS))[0] == "outbox clear"
    assert SECRET_KEY.search("broker_passphrase") and not SECRET_KEY.search("county")


def test_a_command_outside_the_shared_list_cannot_be_registered() -> None:
    with pytest.raises(ValueError, match="wire.console.COMMANDS"):
        command("format disk", "not one the laptop knows")(lambda *_: {})
    assert "format disk" not in REGISTRY
