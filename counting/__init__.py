"""The contract's counting rule: service hours and the pure availability counter the contractor is paid on
(counter.py states the rule; docs/availability.md). Used by the server (roll-ups, answers, reports) and by the
simulator's oracle; imports nothing of either."""

from .counter import (
    DEFAULT_THRESHOLD,
    SLOT_S,
    STATUSES,
    Figures,
    RollupRow,
    Sample,
    Slot,
    Tier,
    UnitCount,
    as_fraction,
    combine,
    contract_tier,
    count_unit,
    figures_from_counts,
    figures_from_rollups,
    rollup,
)
from .hours import DEFAULT_HOURS, DEFAULT_TZ, WEEKDAYS, ServiceHours, parse_windows

__all__ = [
    "DEFAULT_HOURS",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TZ",
    "SLOT_S",
    "STATUSES",
    "WEEKDAYS",
    "Figures",
    "RollupRow",
    "Sample",
    "ServiceHours",
    "Slot",
    "Tier",
    "UnitCount",
    "as_fraction",
    "combine",
    "contract_tier",
    "count_unit",
    "figures_from_counts",
    "figures_from_rollups",
    "parse_windows",
    "rollup",
]
