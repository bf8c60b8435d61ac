"""Terminals' certificate renewals (server/renewal.py), one record per unit in ``meta`` under ``renewal:<sn>``.

A record (JSON) moves ``requested`` (the terminal's CSR) -> ``signed`` (``posfleet ca sign-renewals`` on the CA's
host put the certificate in) -> ``switched`` (the terminal connects with it) -> ``done`` (the CA revoked the older
certificates of that SN). A newer request replaces a record not yet switched. Kept in ``meta`` (both backends have
it, no schema change): at most one small row per unit, a few hundred at a time in a fleet renewing over 825 days.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "renewal:"


async def get(storage: Any, sn: str) -> dict[str, Any] | None:
    text = await storage.meta_get(PREFIX + sn)
    return json.loads(text) if text else None


async def put(storage: Any, sn: str, record: dict[str, Any]) -> None:
    await storage.meta_set(PREFIX + sn, json.dumps({**record, "sn": sn}, sort_keys=True))


async def every(storage: Any, state: str | None = None) -> list[dict[str, Any]]:
    """Every renewal record (``state``: only those in it), by SN."""
    rows = await storage._all("SELECT key, value FROM meta WHERE key LIKE ? ORDER BY key", (PREFIX + "%",))
    out = [json.loads(r[1]) for r in rows]
    return [r for r in out if state is None or r.get("state") == state]
