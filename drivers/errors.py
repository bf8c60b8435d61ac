"""Error tree shared by every driver.

Callers catch :class:`DriverError`; the subclasses carry the data a diagnostic needs
(the command that timed out, the raw bytes that did not parse, the missing feature).
"""

from __future__ import annotations

# Exit codes of ``posfleet diag`` and of the verdict a capture records (docs/console.md "Exit codes").
# One mapping from a driver error to its code: exit_code() below; the commands and drivers/capture.py use it.
EXIT_OK = 0
EXIT_NOT_FOUND = 3  # the port cannot be opened (missing, busy, no permission)
EXIT_TIMEOUT = 4  # the device does not answer
EXIT_PROTOCOL = 5  # it answers something that cannot be parsed, or the profile lacks what was asked (NotSupported)
EXIT_FAULT = 6  # it answers and reports a fault (no SIM, paper out, SAM error, ...)


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


def exit_code(err: DriverError) -> int:
    """The diag exit code for a driver error. NotSupported is 5 like a protocol error: the device's answers do not
    fit what its profile says it can do (the usual cure for both: the right --profile), not a fault it reports."""
    if isinstance(err, DeviceNotFound):
        return EXIT_NOT_FOUND
    if isinstance(err, Timeout):
        return EXIT_TIMEOUT
    if isinstance(err, DeviceFault):
        return EXIT_FAULT
    return EXIT_PROTOCOL  # ProtocolError, NotSupported, any other DriverError


def verdict_state(code: int) -> str:
    """The check state an exit code stands for: unknown when the device could not be reached at all."""
    return "ok" if code == EXIT_OK else "unknown" if code == EXIT_NOT_FOUND else "fault"
