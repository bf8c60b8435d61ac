"""The SIM-change rule on the identity reports any server process stored (server/alerts/simwatch.py)."""

from __future__ import annotations

from server.alerts.simwatch import SimChange, sim_changes
from server.storage.simwatch import IdentityReport


def rep(sn: str, ts: int, iccid: str, kind: str = "inventory", old: str = "") -> IdentityReport:
    return IdentityReport(sn, ts, kind, iccid, old, float(ts))


def test_a_unit_swapped_twice_between_passes_gives_two_alerts_and_its_first_report_none() -> None:
    changes, taken = sim_changes([rep("A", 10, "i1"), rep("A", 20, "i2"), rep("A", 30, "i3", "identity"),
                                  rep("B", 10, "j1")], {})
    assert changes == [SimChange("A", 20, "i1", "i2"), SimChange("A", 30, "i2", "i3")]
    assert taken == {"A": ("i3", 30), "B": ("j1", 10)}


def test_reports_read_again_resent_or_older_than_what_was_taken_change_nothing() -> None:
    known = {"A": ("i2", 20)}
    assert sim_changes([rep("A", 10, "i1"), rep("A", 20, "i2"), rep("A", 20, "i2")], known) == ([], {})
    late = [rep("A", 15, "i1"), rep("A", 25, "i2")]  # a backlog's older inventory arrives after the newer one
    assert sim_changes(late, known) == ([], {"A": ("i2", 25)})


def test_the_agents_own_sim_changed_event() -> None:
    # for a unit the rule knows nothing of: raised, from the ICCID the agent says it had
    assert sim_changes([rep("A", 10, "i2", "sim_changed", old="i1")], {})[0] == [SimChange("A", 10, "i1", "i2")]
    # and with an inventory of the same change: one alert, whichever comes first
    both = [rep("A", 30, "i3", "sim_changed", old="i2"), rep("A", 30, "i3")]
    assert sim_changes(both, {"A": ("i2", 20)})[0] == [SimChange("A", 30, "i2", "i3")]
    # a report without an ICCID is not a change
    assert sim_changes([rep("A", 40, "")], {"A": ("i2", 20)}) == ([], {})
