"""An alert's life: what raising it does, given what is stored of its key.

Every rule of the server (``service.py``'s, the inspection's, security's, the access checks') raises alerts through
:func:`raise_alert`; the store (``server/storage/alerts.py``) reads the key's state and does what :func:`on_raise`
answers, in one transaction:

* nothing stored under the key: **open** a new alert;
* an open alert: **refresh** it (its time, message and data; it keeps its opening time, its acknowledgement and its
  webhook state: a standing condition is one alert, sent once);
* a closed alert: **reopen** it as a new occurrence that keeps its id (opened now, no longer acknowledged, sent to
  the webhook again): the condition came back, which someone has to look at again.

Kept light (no import beyond the storage's row types): ingest, sign-in and the inspection import it.
"""

from __future__ import annotations

from typing import Any

from ..storage.alerts import AlertAction, AlertState, RaisedAlert


def on_raise(stored: AlertState | None) -> AlertAction:
    """What raising an alert does, given what is stored of its key (None: nothing)."""
    if stored is None:
        return "open"
    if stored.closed_ts is None:
        return "refresh"
    return "reopen"


async def raise_alert(storage: Any, key: str, kind: str, sn: str | None, county: str | None, ts: int, message: str,
                      data: dict[str, Any], webhook: bool) -> bool:
    """Open an alert, refresh the open one with this key, or reopen the closed one (:func:`on_raise`). True when
    it (re)opened: a new occurrence, for the webhook sender to wake up for."""
    action = await storage.apply_alert(RaisedAlert(key, kind, sn, county, ts, message, data, webhook), on_raise)
    return bool(action != "refresh")
