"""The ``posfleet`` console script. ``posfleet.__version__`` is the code's version, kept in :mod:`wire` (the
lowest floor, where the agent and the server read it)."""

from wire import __version__

__all__ = ["__version__"]
