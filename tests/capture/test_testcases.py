"""Every committed capture under tests/drivers/testcases/<model>/<case>/ replayed into the real
driver gives the verdict recorded in its meta.json, and the driver asks exactly what was recorded.

Source: the folders themselves (emulator captures from tests/capture/make_testcases.py, and any
field capture copied in).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.capture import diagnose, load
from simulator.emulators.replay import serve

TESTCASES = Path(__file__).resolve().parent.parent / "drivers" / "testcases"
FOLDERS = sorted(p.parent for p in TESTCASES.glob("*/*/meta.json"))


def test_there_are_captures_of_every_kind():
    kinds = {load(f).meta.kind for f in FOLDERS}
    assert kinds == {"modem", "printer", "idcard"}


@pytest.mark.timeout(15)
@pytest.mark.parametrize("folder", FOLDERS, ids=[f"{f.parent.name}/{f.name}" for f in FOLDERS])
def test_replayed_capture_gives_the_recorded_verdict(folder: Path):
    cap = load(folder)
    assert folder.parent.name == cap.meta.profile, "a case lives under its firmware profile's folder"
    dev = serve(cap)
    try:
        outcome = diagnose(cap.meta.kind, dev.path, cap.meta.profile, read_card=cap.meta.read_card,
                           baudrate=cap.meta.baudrate)
    finally:
        dev.stop()
    dev.emulator.verify()  # type: ignore[attr-defined]
    want = cap.meta.outcome
    assert (outcome.state, outcome.reason, outcome.exit_code) == (want.state, want.reason, want.exit_code)
    assert json.loads(json.dumps(outcome.detail)) == want.detail
