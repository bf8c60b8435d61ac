from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from simulator.emulators.pty import PtyDevice


@pytest.fixture
def modem_pty() -> Iterator[Callable[..., PtyDevice]]:
    """Factory: ``modem_pty(profile, chunk=0, chunk_delay=0.0, **emulator_kwargs)`` starts a
    ModemEmulator on a pty and returns the running PtyDevice (``.path``, ``.emulator``);
    every device started is stopped at teardown."""
    from simulator.emulators.modem import ModemEmulator

    started: list[PtyDevice] = []

    def start(profile: str = "generic-3gpp", *, chunk: int = 0, chunk_delay: float = 0.0, **kwargs: object) -> PtyDevice:
        dev = PtyDevice(ModemEmulator(profile, **kwargs), chunk=chunk, chunk_delay=chunk_delay).start()  # type: ignore[arg-type]
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()
