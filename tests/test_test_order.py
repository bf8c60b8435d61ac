"""The suite's own order (tests/conftest.py ``LONG_FIRST``): a renamed or removed long file is named here, not
silently sent to the workers late again."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LONG_FIRST

REPO = Path(__file__).resolve().parents[1]


def test_every_long_file_named_first_exists_once() -> None:
    assert [name for name in LONG_FIRST if not (REPO / name).is_file()] == []
    assert len(set(LONG_FIRST)) == len(LONG_FIRST)
