"""The one result type every peripheral check returns.

ok / fault / unknown maps onto the availability rule's intact / not intact / no data:
``unknown`` means the check could not be made (not configured, port busy), which is
distinct from the device answering that it is broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["ok", "fault", "unknown"]


@dataclass(frozen=True)
class CheckResult:
    state: State
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, **detail: Any) -> CheckResult:
        return cls("ok", "", detail)

    @classmethod
    def fault(cls, reason: str, **detail: Any) -> CheckResult:
        return cls("fault", reason, detail)

    @classmethod
    def unknown(cls, reason: str, **detail: Any) -> CheckResult:
        return cls("unknown", reason, detail)
