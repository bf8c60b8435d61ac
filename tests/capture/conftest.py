from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from simulator.emulators.pty import PtyDevice


@pytest.fixture
def started() -> Iterator[Callable[[PtyDevice], PtyDevice]]:
    """``started(dev)`` registers a running PtyDevice to be stopped at teardown and returns it."""
    devices: list[PtyDevice] = []

    def keep(dev: PtyDevice) -> PtyDevice:
        devices.append(dev)
        return dev

    yield keep
    for dev in devices:
        dev.stop()
