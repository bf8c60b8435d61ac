"""Error tree shared by every driver.

Callers catch :class:`DriverError`; the subclasses carry the data a diagnostic needs
(the command that timed out, the raw bytes that did not parse, the missing feature).
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises."""


class DeviceNotFound(DriverError):
    """The port could not be opened (unplugged, wrong path, busy)."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(f"device not found at {port}: {reason}")
        self.port = port
        self.reason = reason


class Timeout(DriverError):
    """The device did not answer a command within the profile's timeout."""

    def __init__(self, command: str, seconds: float, partial: bytes = b"") -> None:
        super().__init__(f"no complete answer to {command!r} within {seconds:g} s (got {partial[:64]!r})")
        self.command = command
        self.seconds = seconds
        self.partial = partial


class ProtocolError(DriverError):
    """The device answered with bytes we cannot make sense of."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(f"{message} (raw {raw[:64]!r})" if raw else message)
        self.raw = raw


class NotSupported(DriverError):
    """The model (per its firmware profile) does not have this feature."""

    def __init__(self, feature: str, model: str = "") -> None:
        super().__init__(f"{feature} not supported" + (f" by {model}" if model else ""))
        self.feature = feature
        self.model = model


class DeviceFault(DriverError):
    """The device answered, and what it said is a fault (SIM missing, SAM error, paper out...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code
