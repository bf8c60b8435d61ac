"""The availability counter and the registry on PostgreSQL, in every run (``pytest --storage postgresql`` runs
the whole server suite there): the same tests as on SQLite, collected again here with the app storing in a
database of the tests' own cluster. The availability figures are the hand-counted ones of
test_availability.py: a backend whose sums or slot codes differ fails them."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest

from simulator.postgres import Postgres
from tests import backend
from tests.server.test_availability import (  # noqa: F401  (collected here, on PostgreSQL)
    test_day_counted_by_hand,
    test_drill_down_reads_the_codes_stored_with_the_roll_ups_and_recounts_when_they_may_be_stale,
    test_drill_down_says_which_slot_failed_and_why,
    test_late_samples_recount_the_hours_they_cover,
    test_rollups_equal_the_direct_count,
)
from tests.server.test_registry import (  # noqa: F401
    test_csv_import_keeps_good_rows_and_names_each_bad_line_and_field,
    test_import_with_fewer_columns_changes_only_those_columns,
    test_institution_import_with_fewer_columns_keeps_the_others,
    test_swap_records_both_status_changes_at_one_instant,
    test_unit_heard_by_ingest_appears_in_service_without_institution,
)
from tests.server.test_unit_list_answers import (  # noqa: F401
    test_a_kept_list_is_never_handed_to_a_caller_of_another_scope,
    test_a_list_asked_again_is_the_answer_kept_and_a_registry_write_anywhere_shows_at_once,
)

_n = count(1)


@pytest.fixture(autouse=True)
def _on_postgresql(postgres: Postgres, _storage_backend: None) -> Iterator[None]:
    backend.NEW_DATABASE[0] = lambda: postgres.create(f"onpg{next(_n)}")
    yield
    backend.NEW_DATABASE[0] = None
