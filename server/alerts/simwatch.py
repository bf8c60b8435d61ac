"""The SIM-change rule: which identity reports are a change of SIM (decision 030).

Any server process stores a terminal's identity reports (``inventory``, the modem's ``identity``, the agent's own
``sim_changed``); the alert pass, which runs where the leadership is, reads those stored since it last looked
(``server/storage/simwatch.py``) and compares each with the ICCID it last took for that unit, kept in the database
with the agent's time of its report. So the change is raised whichever process received it, once: a report read
again (the reads overlap, see :data:`OVERLAP_S`), a resent one, or one older than what was taken changes nothing,
and a new leader goes on from the same memory.

* a report no newer (agent time) than the one taken for its unit is passed over: a backlog's older inventory
  arriving late does not swap the SIM back and forth;
* ``inventory`` / ``identity`` with another ICCID than the one taken: a change (from that one);
* ``sim_changed`` with another ICCID than the one taken, or for a unit with none taken yet: a change (from the
  ICCID the agent says it had, else the one taken);
* a unit's first report otherwise: taken, no alert.

Changes between two passes are each raised (a unit swapped twice: two alerts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

OVERLAP_S = 3600.0  # each pass reads again the reports received this long before the newest it saw: a commit that
# lands late (a process's commit retried while its database connection was failing) or a host whose clock runs
# behind the others' up to that much is still read; a report read twice changes nothing


class Report(Protocol):
    sn: str
    ts: int
    kind: str
    iccid: str
    old_iccid: str


@dataclass(frozen=True)
class SimChange:
    sn: str
    ts: int  # the agent's time of the report that showed it
    old: str  # "" when not known
    new: str


def sim_changes(reports: Iterable[Report], known: dict[str, tuple[str, int]]
                ) -> tuple[list[SimChange], dict[str, tuple[str, int]]]:
    """The changes ``reports`` show (each unit's in agent-time order) against ``known`` (sn -> ICCID taken, agent
    time of its report), and what to take for each unit they touch."""
    changes: list[SimChange] = []
    taken: dict[str, tuple[str, int]] = {}
    for r in sorted(reports, key=lambda r: (r.sn, r.ts)):
        if not r.iccid:
            continue
        k = taken.get(r.sn) or known.get(r.sn)
        if k is not None and r.ts <= k[1]:
            continue
        if r.kind == "sim_changed":
            if k is None or k[0] != r.iccid:
                changes.append(SimChange(r.sn, r.ts, r.old_iccid or (k[0] if k else ""), r.iccid))
        elif k is not None and k[0] != r.iccid:
            changes.append(SimChange(r.sn, r.ts, k[0], r.iccid))
        taken[r.sn] = (r.iccid, r.ts)
    return changes, taken
