"""Append-only audit: who did what, when, from where (commands, their state changes, every API write)."""

from .store import Audit

__all__ = ["Audit"]
