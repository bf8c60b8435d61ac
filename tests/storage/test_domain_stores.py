"""The domain stores of issue 15's split, on both backends: the rows they hand out are the types they declare, a
page of institutions is the same page of the whole list, and the rules that moved out of the stores into their
domains (which cell a link-down minute is put on and which county a cell's outage is shown in: availability;
whether a raised alert opens, refreshes or reopens: alerts) give the same answer on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from server.alerts.lifecycle import raise_alert
from server.availability import outages
from server.storage import EventRow, SampleRow, UnitQuery
from server.storage.alerts import AlertRow, RaisedAlert
from server.storage.outages import CellOutage, Outage
from server.storage.registry import (
    IndexedUnit,
    Institution,
    LiveUnit,
    RegistryUnit,
    StatusChange,
    UnitState,
    UnitStatusChange,
)
from server.storage.samples import DeadLetter, DownSample, StoredEvent, UnitEvent
from tests.storage.test_contract import T0

S = T0 + 8 * 3600  # the hour recounted below (08:00 UTC)
H = 3600


def smp(sn: str, seq: int, ts: int, connected: bool, **body: Any) -> SampleRow:
    return SampleRow(sn, 1, seq, ts, 60, 0, connected, 80 if connected else None, {}, {"ts": ts, **body}, float(ts))


def keys(t: Any) -> set[str]:
    return set(t.__required_keys__ | t.__optional_keys__)


async def test_a_page_of_institutions_is_that_page_of_the_whole_list(store: Any) -> None:
    await store.upsert_institutions([{"code": f"I{k:03d}", "name": f"卫生室{k}", "county": f"县{k % 3}",
                                      "region": f"市{k % 2}"} for k in range(30)])
    for county, within in [(None, None), ("县1", None), (None, (("市0",), ())), (None, ((), ("县2",))),
                           ("县2", (("市1",), ("县0",))), (None, ((), ())), ("nowhere", None)]:
        whole = await store.list_institutions(county, within)
        for limit, offset in [(1000, 0), (7, 0), (7, 7), (5, 5), (10, 10), (3, 9), (7, 28), (7, 30), (7, 35), (1, 0)]:
            total, items = await store.institutions_page(county, within, limit, offset)
            assert (total, items) == (len(whole), whole[offset:offset + limit]), (county, within, limit, offset)


async def test_every_row_a_store_hands_out_has_the_keys_its_type_declares(store: Any) -> None:
    await store.upsert_institutions([{"code": "I1", "name": "秀英村卫生室", "county": "秀英区"}])
    await store.upsert_registry_units([{"sn": "A1", "institution": "I1"}, {"sn": "A2"}], T0, "admin")
    await store.change_status([("A2", T0 + 60, "repair", "eng", "board")])
    await store.store_telemetry([smp("A1", 1, T0, True, tac=7, cell_id=70)],
                                [EventRow("A1", 1, 2, T0, "inventory", {"iccid": "8986"}, float(T0))])
    await store.set_state("A1", True, T0, "connected", "1.0")
    await store.add_dead_letter(1.0, "A1", "pf/A1/t", "bad", 10, "ab", "{}")
    await store.replace_outages(T0, T0 + H, [("秀英区", T0, 2, ["A1", "A2"])])
    await store.replace_cell_outages(T0, T0 + H, [(7, 70, T0, "秀英区", ["A1", "A2"])])
    await raise_alert(store, "k1", "offline", "A1", "秀英区", T0, "down", {"n": 1}, True)

    def rows_of(rows: list[Any], t: Any) -> None:
        assert rows and all(set(r) == keys(t) for r in rows), (t.__name__, [set(r) ^ keys(t) for r in rows])

    rows_of(await store.list_institutions(), Institution)
    rows_of([await store.get_institution("I1")], Institution)
    rows_of((await store.registry_query({}))[1], RegistryUnit)
    rows_of(await store.registry_index(), IndexedUnit)
    rows_of(await store.live_index(), LiveUnit)
    rows_of((await store.list_units(UnitQuery()))[1], UnitState)
    rows_of([await store.get_unit("A1")], UnitState)
    rows_of((await store.status_histories(["A2"]))["A2"], StatusChange)
    rows_of(await store.status_changes_between(T0, T0 + H), UnitStatusChange)
    rows_of((await store.dead_letters())[1], DeadLetter)
    rows_of(await store.events_between(T0, T0 + 1), StoredEvent)
    rows_of(await store.unit_events("A1", None, 10), UnitEvent)
    rows_of(await store.outages_between(T0, T0 + H), Outage)
    rows_of(await store.cell_outages_between(T0, T0 + H), CellOutage)
    rows_of((await store.list_alerts())[1], AlertRow)
    rows_of(await store.pending_webhooks(), AlertRow)


async def test_a_units_detail_is_its_listed_row_and_its_status_history_from_one_statement(store: Any) -> None:
    """``registry_unit`` (a unit's detail, one statement) gives what the list and ``status_histories`` give,
    changes in time order (two at the same second in the order made), and None for an SN never registered."""
    await store.upsert_institutions([{"code": "I1", "name": "秀英村卫生室", "county": "秀英区"}])
    await store.upsert_registry_units([{"sn": "A1", "institution": "I1"}, {"sn": "A2"}], T0, "admin")
    await store.change_status([("A1", T0 + 120, "in_repair", "eng", "主板")])
    await store.change_status([("A1", T0 + 60, "spare", "eng", "")])
    await store.change_status([("A1", T0 + 120, "in_service", "eng", "back")])
    await store.set_state("A1", True, T0, "connected", "1.0")
    row, history = await store.registry_unit("A1")
    assert row == (await store.registry_query({"sns": ["A1"]}))[1][0]
    assert row["institution_name"] == "秀英村卫生室" and row["broker_session"] is True
    assert history == (await store.status_histories(["A1"]))["A1"]
    assert [(c["from_ts"], c["status"], c["note"]) for c in history][-3:] == [
        (T0 + 60, "spare", ""), (T0 + 120, "in_repair", "主板"), (T0 + 120, "in_service", "back")]
    assert (await store.registry_unit("A2"))[1] == (await store.status_histories(["A2"])).get("A2", [])
    assert await store.registry_unit("NOPE") is None


async def test_a_units_day_is_its_slot_codes_status_history_and_roll_up_from_one_statement(store: Any) -> None:
    """``unit_day`` (a drill-down's stored day, one statement) gives what ``slot_hours``, ``status_histories``
    and ``rollup_days`` give, codes with every byte value, and empty answers for a day or unit with none."""
    day = 739313  # 2025-03-03 ordinal
    strips = [("A1", day, h, bytes(range(h, h + 60)), '{"3": "link_down"}' if h == 5 else None, 60 - h)
              for h in (7, 0, 5)]
    await store.write_hour_counts([(sn, d, h, 24, (60, 60 - h, 60, 0)) for sn, d, h, *_ in strips], strips)
    await store.upsert_registry_units([{"sn": "A1"}], T0, "admin")
    await store.change_status([("A1", T0 + 120, "in_repair", "eng", "主板")])
    await store.change_status([("A1", T0 + 60, "spare", "eng", "")])
    hours, history, rolled = await store.unit_day("A1", day)
    assert hours == await store.slot_hours("A1", day) and [h[0] for h in hours] == [0, 5, 7]
    assert hours[2] == (7, bytes(range(7, 67)), None, 53) and hours[1][2] == '{"3": "link_down"}'
    assert history == (await store.status_histories(["A1"]))["A1"] and history[-1]["note"] == "主板"
    assert rolled == (await store.rollup_days("A1", day, day))[0][1:] and rolled[:4] == (180, 168, 180, 0)
    assert await store.unit_day("A1", day + 1) == ([], history, None)
    assert await store.unit_day("NOPE", day) == ([], [], None)


async def test_a_link_down_minute_is_put_on_the_cell_that_last_served_the_unit(store: Any) -> None:
    """The rule of server/availability/outages.py over the samples' facts, the same on both backends."""
    samples = [
        # A1 was served by cell 7/70, then lost the link and its modem reselected a neighbour (7/99)
        *[smp("A1", k, S - 600 + 60 * k, True, tac=7, cell_id=70) for k in range(10)],
        *[smp("A1", 10 + k, S + 60 * k, False, tac=7, cell_id=99) for k in range(10)],
        # C1: no connected sample at all: the cell its down samples report
        *[smp("C1", k, S + 60 * k, False, tac=7, cell_id=70) for k in range(10)],
        # D1: down at S (nothing connected before: no cell), up on 7/70 at S+60, down again at S+120 (on 7/70)
        smp("D1", 1, S, False), smp("D1", 2, S + 60, True, tac=7, cell_id=70), smp("D1", 3, S + 120, False),
        # D2: reports 7/70 while down at S+120
        smp("D2", 1, S + 120, False, tac=7, cell_id=70),
        # B1: last up on 7/70 more than six hours before it went down: the cell its down sample reports (8/80)
        smp("B1", 1, S - 6 * H + 60, True, tac=7, cell_id=70), smp("B1", 2, S + 1800, False, tac=8, cell_id=80),
        # E1 went down reporting no cell, and nothing served it before: no cell
        smp("E1", 1, S + 600, False),
    ]
    await store.store_telemetry(samples, [])
    placed = await outages.link_down_cells(store, S, S + H)
    assert [tuple(d) for d in placed] == sorted([
        *[("A1", S + 60 * k, 60, 7, 70) for k in range(10)],
        ("B1", S + 1800, 60, 8, 80),
        *[("C1", S + 60 * k, 60, 7, 70) for k in range(10)],
        ("D1", S, 60, None, None), ("D1", S + 120, 60, 7, 70),
        ("D2", S + 120, 60, 7, 70),
        ("E1", S + 600, 60, None, None),
    ])
    assert all(type(d) is DownSample for d in placed)

    class Info:
        def __init__(self, county: str) -> None:
            self.county = county

    index = {"A1": Info("秀英区"), "C1": Info("秀英区"), "D1": Info("龙华区"), "D2": Info("龙华区"), "B1": Info("")}
    rows, cell_rows = outages.outage_minutes(placed, index, S, S + H, need=2, need_cell=2)
    assert sorted(rows) == sorted([*[("秀英区", S + 60 * k, 2, ["A1", "C1"]) for k in range(10)],
                                   ("龙华区", S + 120, 2, ["D1", "D2"])])
    # minute S+120 on 7/70: two units of each county, the county of the smallest SN (A1) shows it
    assert sorted(cell_rows) == sorted([(7, 70, S + 60 * k, "秀英区", ["A1", "C1"] if k != 2 else ["A1", "C1", "D1", "D2"])
                                        for k in range(10)])
    await store.replace_outages(S, S + H, rows)
    await store.replace_cell_outages(S, S + H, cell_rows)
    assert [o["minute"] for o in await store.outages_between(S, S + H, "龙华区")] == [S + 120]
    got = await store.cell_outages_between(S, S + H, sn="D2")
    assert [(o["minute"], o["county"], o["units"], o["sns"]) for o in got if "D2" in o["sns"]] == [
        (S + 120, "秀英区", 4, ["A1", "C1", "D1", "D2"])]
    # a recount of the hour replaces its rows (one minute left), and other hours keep theirs
    await store.replace_cell_outages(S, S + H, [(7, 70, S, "秀英区", ["A1", "C1"])])
    assert [o["minute"] for o in await store.cell_outages_between(S - H, S + 2 * H)] == [S]


async def test_an_alert_refreshes_while_open_and_reopens_once_closed(store: Any) -> None:
    """The alerts domain's rule (server/alerts/lifecycle.py), done by the store in one transaction."""
    assert await raise_alert(store, "k1", "offline", "A1", "秀英区", T0, "down", {"n": 1}, True) is True
    (first,) = (await store.list_alerts())[1]
    assert await store.ack_alert(first["id"], "wang", float(T0 + 10))
    await store.mark_webhook(first["id"], "sent", 1)
    # still standing: the same alert, still acknowledged, not sent again, its opening time kept
    assert await raise_alert(store, "k1", "offline", "A1", "秀英区", T0 + 60, "still down", {"n": 2}, True) is False
    a = await store.get_alert(first["id"])
    assert (a["opened_ts"], a["last_ts"], a["acked_by"], a["webhook"], a["message"], a["data"]) == (
        T0, T0 + 60, "wang", "sent", "still down", {"n": 2})
    # closed, then raised again: a new occurrence with the same id, to be looked at (and sent) again
    assert await store.close_alerts("offline", set(), T0 + 120) == 1
    assert await raise_alert(store, "k1", "offline", "A1", "秀英区", T0 + 180, "again", {"n": 3}, True) is True
    a = await store.get_alert(first["id"])
    assert (a["opened_ts"], a["closed_ts"], a["acked_by"], a["acked_ts"], a["webhook"], a["webhook_attempts"]) == (
        T0 + 180, None, None, None, "pending", 0)
    assert (await store.list_alerts(open_only=False))[0] == 1
    # the store does what the rule answers, and refuses what cannot be done with what is stored
    with pytest.raises(ValueError, match="not an action"):
        await store.apply_alert(RaisedAlert("k1", "offline", "A1", None, T0 + 240, "x", {}, False), lambda s: "open")
    with pytest.raises(ValueError, match="nothing stored"):
        await store.apply_alert(RaisedAlert("k2", "offline", "A1", None, T0 + 240, "x", {}, False), lambda s: "reopen")
    assert (await store.get_alert(first["id"]))["last_ts"] == T0 + 180  # nothing changed
    assert (await store.list_alerts(open_only=False))[0] == 1


async def test_the_live_index_since_a_time_has_every_unit_whose_session_or_newest_sample_moved(store: Any) -> None:
    """The alert pass reads only the units that moved since its last read (issue 15); a unit's session going down
    and a newest sample both count as moving, a unit untouched since does not."""
    import time

    for sn in ("A1", "A2", "A3"):
        await store.set_state(sn, True, T0, "connected", "1.0")
    since = time.time()
    await store.set_state("A1", False, T0 + 5, "lost", "1.0")
    await store.store_telemetry([smp("A2", 1, T0 + 60, True)], [])
    moved = {u["sn"]: u for u in await store.live_index(identity=False, since=since)}
    assert sorted(moved) == ["A1", "A2"]
    assert moved["A1"]["online"] == 0 and moved["A2"]["latest"]["ts"] == T0 + 60
    assert len(await store.live_index(identity=False)) == 3
