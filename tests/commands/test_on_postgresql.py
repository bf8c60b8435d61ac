"""Commands and jobs with the server storing in PostgreSQL (issue 15): the same tests as on SQLite, collected again
here with a server whose ``[storage] url`` is a database of the tests' own cluster. Jobs released no wave there
before the command store (the dispatcher's pass summed booleans, which PostgreSQL refuses, and with a job running
no command went out at all)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.conftest import Fleet
from tests.commands.test_abort_filters import (  # noqa: F401  (collected here, on PostgreSQL)
    test_admin_aborts_a_running_job_and_the_remaining_units_never_get_it,
)
from tests.commands.test_api import test_pending_commands_per_unit_are_bounded  # noqa: F401
from tests.commands.test_command_guards import test_server_refuses_the_fourth_reboot_within_an_hour  # noqa: F401
from tests.commands.test_jobs import (  # noqa: F401
    test_abort_threshold_stops_a_failing_job,
    test_offline_unit_gets_its_queued_command_when_it_reconnects_and_an_expired_one_never,
    test_staged_rollout_canary_first_then_waves,
)
from tests.fleet import Broker, Pki


@pytest.fixture
def fleet(pki: Pki, broker: Broker, keys: dict[str, Path], tmp_path: Path, pg_url: str) -> Iterator[Fleet]:
    f = Fleet(pki, broker, keys, tmp_path, storage=pg_url)
    yield f
    f.stop()
