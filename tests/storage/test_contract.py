"""The storage contract, on both backends: what the server relies on from ``Storage`` whichever database it is.

Two storage objects on one database stand for two server processes: a sample one of them stored is not stored
again by the other, a token one of them revoked is refused by the other at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.alerts.lifecycle import raise_alert
from server.storage import EventRow, SampleRow, UnitQuery, open_storage
from server.storage.schema import SCHEMA_VERSION, SchemaTooNew

T0 = 1_741_000_000 - 1_741_000_000 % 86400  # a UTC midnight (2025-03-03)


def smp(sn: str, seq: int, ts: int, connected: bool = True, **body: Any) -> SampleRow:
    return SampleRow(sn, 1, seq, ts, 60, 0, connected, 80, {"printer": [0, ""]}, {"ts": ts, **body}, float(ts))


async def test_a_sample_is_stored_once_whichever_process_gets_it(store: Any, other: Any) -> None:
    batch = [smp("A1", k, T0 + 60 * k, tac=7, cell_id=70, data_bytes=100 * k) for k in range(50)]
    ev = [EventRow("A1", 1, 1000, T0, "inventory", {"iccid": "8986001", "carrier": "CMCC"}, float(T0))]
    assert await store.store_telemetry(batch[:30], ev) == 31
    assert await other.store_telemetry(batch, ev) == 20  # a resend across processes: only the new ones
    assert await store.count_samples() == await other.count_samples() == 50
    unit = await other.get_unit("A1")
    assert unit["latest"]["ts"] == T0 + 60 * 49 and unit["identity"]["carrier"] == "CMCC"
    assert [s["ts"] for s in await store.recent_samples("A1", 3)] == [T0 + 60 * k for k in (49, 48, 47)]
    assert (await store.data_points("A1", T0, T0 + 600))[:3] == [(T0, 0), (T0 + 60, 100), (T0 + 120, 200)]
    between = await other.samples_between(["A1"], T0 + 60, T0 + 180)
    assert [s.seq for s in between] == [1, 2] and between[0].checks == {"printer": [0, ""]}
    total, units = await store.list_units(UnitQuery(q="A", online=False))
    assert total == 1 and units[0]["sn"] == "A1"


async def test_a_revoked_token_is_refused_by_every_process_at_once(store: Any, other: Any) -> None:
    await store.add_token("ops", "admin", "h1", 1.0)
    await store.add_token("ops", "admin", "h2", 2.0)
    assert (await other.find_token("h1"))["role"] == "admin"
    assert await other.revoke_tokens("ops", 100.0) == (2, 0)
    assert await store.find_token("h1") is None and await store.find_token("h2") is None
    assert [t["revoked_at"] for t in await store.list_tokens()] == [100.0, 100.0]
    assert await store.revoke_tokens("ops", 200.0) == (0, 2)


async def test_tokens_and_sessions_checked_at_once_share_one_statement_that_sees_what_came_before(
        store: Any, other: Any) -> None:
    """Requests checking their tokens while every pooled connection is busy share one statement (decision 042),
    and each caller still gets its own answer as of after it asked: a token another process revoked while the
    requests waited is refused to all of them."""
    for k in range(1, 4):
        await store.add_token(f"t{k}", "viewer", f"h{k}", 1.0)
    await store.add_user("li", "engineer", "county:长安区", "x", 1.0)
    await store.add_session("s1", "li", "csrf1", 1.0, 500.0, "10.0.0.1")
    await store.add_session("s2", "li", "csrf2", 1.0, 100.0, "10.0.0.1")
    asked, sent = store.together_asked, store.together_sent
    async with store.reader(), store.reader():  # both of this process's pooled connections busy
        tokens = [asyncio.ensure_future(store.find_token(f"h{k % 5}")) for k in range(30)]  # h0, h4: unknown
        sessions = [asyncio.ensure_future(store.find_session(f"s{k % 3}", 200.0)) for k in range(9)]
        await asyncio.sleep(0.05)
        assert await other.revoke_tokens("t2", 2.0) == (1, 0)  # committed before any of them was read
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tokens + sessions)
    found = [await t for t in tokens]
    assert [f and f["name"] for f in found[:5]] == [None, "t1", None, "t3", None] and found[5:] == found[:5] * 5
    assert found[1] == {"name": "t1", "role": "viewer", "owner": "", "scope": "province", "expires": None,
                        "last_used": None, "last_client": ""}
    got = [await s for s in sessions]  # s2 expired at 100: refused at 200; s0 never was
    assert [g and (g["user_name"], g["role"], g["scope"], g["csrf"]) for g in got[:3]] == [
        None, ("li", "engineer", "county:长安区", "csrf1"), None] and got[3:] == got[:3] * 2
    assert (store.together_asked - asked, store.together_sent - sent) == (39, 2)  # one statement each kind
    assert await store.find_token("h3") == found[3] and store.together_sent - sent == 3  # later: a statement anew


async def test_a_token_keeps_owner_scope_expiry_and_last_use(store: Any, other: Any) -> None:
    await store.add_token("etl", "viewer", "h3", 10.0, owner="wang", scope="county:长安区", expires=5000.0)
    await store.add_token("old", "admin", "h4", 11.0)  # as before issue 18: no owner, the province, no expiry
    found = await other.find_token("h3")
    assert (found["owner"], found["scope"], found["expires"], found["last_used"]) == ("wang", "county:长安区",
                                                                                      5000.0, None)
    assert (await other.find_token("h4"))["scope"] == "province"
    await other.token_used("h3", 300.0, "10.0.0.7")
    await other.token_used("h4", 301.0, "10.0.0.8")
    await store.token_used("h3", 250.0, "10.0.0.9")  # an older use written late (another process): the newer stays
    listed = {t["name"]: t for t in await store.list_tokens()}
    assert (listed["etl"]["last_used"], listed["etl"]["last_client"]) == (300.0, "10.0.0.7")
    assert (listed["old"]["last_used"], listed["old"]["owner"]) == (301.0, "")


async def test_users_sessions_and_lock_out(store: Any, other: Any) -> None:
    assert await store.add_user("li", "viewer", "city:西安市", "$argon2id$x", 1.0)
    assert not await other.add_user("li", "admin", "province", "$argon2id$y", 2.0)  # the name is taken
    assert await other.update_user("li", totp_secret="ABC", recovery=["r1", "r2"], disabled=False)
    user = await store.get_user("li")
    assert (user["role"], user["scope"], user["totp_secret"], user["recovery"]) == ("viewer", "city:西安市",
                                                                                   "ABC", ["r1", "r2"])
    assert not await store.update_user("nobody", disabled=True)
    # two processes count failures into one figure; the fifth locks and starts the count again
    got = [await (store if k % 2 else other).sign_in_failed("li", 100.0, 5, 900.0) for k in range(5)]
    assert got == [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0), (5, 1000.0)]
    assert (await store.get_user("li"))["locked_until"] == 1000.0
    await store.add_session("s1", "li", "c1", 100.0, 200.0, "10.0.0.1")
    await store.add_session("s2", "li", "c2", 100.0, 200.0, "10.0.0.2")
    assert (await other.find_session("s1", 150.0))["scope"] == "city:西安市"
    assert await other.find_session("s1", 200.0) is None  # expired
    await other.touch_session("s1", 190.0, 400.0)
    assert (await store.find_session("s1", 300.0))["last_seen"] == 190.0
    assert len(await store.list_sessions(150.0, "li")) == 2
    assert await other.end_sessions(300.0, sid="s1") == 1
    assert await store.find_session("s1", 301.0) is None and await store.find_session("s2", 150.0) is not None
    assert await store.end_sessions(300.0, user="li") == 1
    assert await store.find_session("s2", 150.0) is None


async def test_registry_search_filters_and_history(store: Any, other: Any) -> None:
    await store.upsert_institutions([{"code": "I1", "name": "秀英村卫生室", "county": "秀英区"},
                                     {"code": "I2", "name": "龙华站", "county": "龙华区"}])
    await store.upsert_registry_units([{"sn": f"HN{k:04d}", "institution": "I1" if k % 2 else "I2",
                                        "insurance_sn": f"X{k}"} for k in range(20)], T0, "admin")
    assert await other.ensure_registered({"HN9999": T0 + 5, "HN0001": T0}) == ["HN9999"]
    total, rows = await other.registry_query({"county": "秀英区"}, limit=3)
    assert total == 10 and [r["sn"] for r in rows] == ["HN0001", "HN0003", "HN0005"]
    assert rows[0]["institution_name"] == "秀英村卫生室"
    total, rows = await store.registry_query({"q": "HN001"})
    assert total == 10 and rows[0]["sn"] == "HN0010"
    total, rows = await store.registry_query({"q": "n00", "match": "contains"})
    assert total == 20  # the SQLite LIKE's case folding, on both backends
    await store.change_status([("HN0002", T0 + 60, "repair", "eng", "board")])
    hist = await other.status_histories(["HN0002"])
    assert [h["status"] for h in hist["HN0002"]] == ["in_service", "repair"]
    total, rows = await other.registry_query({"status": "repair"})
    assert total == 1 and rows[0]["sn"] == "HN0002"
    # named units (a unit's detail, a few at once): those that exist, in SN order, counted, either direction
    for desc in (False, True):
        total, rows = await other.registry_query({"sns": ["HN0005", "HN7777", "HN0002", "HN0005"]}, "sn", desc, 50, 0)
        assert total == 2 and [r["sn"] for r in rows] == (["HN0005", "HN0002"] if desc else ["HN0002", "HN0005"])
    assert (await other.registry_query({"sns": ["HN7777"]}, limit=1)) == (0, [])
    total, rows = await other.registry_query({"sns": ["HN0002"]}, limit=1)
    assert total == 1 and rows[0]["status"] == "repair" and rows[0]["institution_name"] == "龙华站"


async def test_every_page_by_every_sort_is_a_slice_of_the_whole_list(store: Any, other: Any) -> None:
    """The registry list's pages under a filter, by SN, institution, county, status or online, either way: each page
    is that slice of the whole list in that order (PostgreSQL finds a page's keys inside the statement that joins
    their rows, SQLite first), sorted by the column with ties by SN, every matching unit once."""
    await store.upsert_institutions([{"code": f"I{k}", "name": f"站{k}", "county": ("秀英区", "龙华区")[k % 2],
                                      "region": "海口市"} for k in range(5)])
    await store.upsert_registry_units([{"sn": f"HN{k:04d}", **({} if k % 7 == 3 else {"institution": f"I{k % 5}"})}
                                       for k in range(37)], T0, "admin")
    await store.change_status([(f"HN{k:04d}", T0 + 60, "in_repair", "eng", "board") for k in range(0, 37, 4)])
    for k in range(0, 37, 3):
        await store.set_state(f"HN{k:04d}", k % 2 == 0, T0 + k, "connected", "1.0")
    column = {"sn": "sn", "institution": "institution", "county": "county", "status": "status", "online": "broker_session"}
    for f in ({}, {"county": "秀英区"}, {"status": "in_service"}, {"q": "HN00"}, {"within": ((), ("龙华区",))}):
        members = {r["sn"] for r in (await other.registry_query(dict(f), "sn", False, 1000, 0))[1]}
        for sort, col in column.items():
            for desc in (False, True):
                total, whole = await other.registry_query(dict(f), sort, desc, 1000, 0)
                assert total == len(whole) and {r["sn"] for r in whole} == members, (f, sort, desc)
                known = [(r[col], r["sn"]) for r in whole if r[col] is not None and (sort != "online" or r["last_seen"])]
                by_value = sorted(known, key=lambda v: v[0], reverse=desc)
                assert [v[0] for v in known] == [v[0] for v in by_value], (f, sort, desc)
                for value in {v[0] for v in known}:  # ties by SN
                    tied = [sn for v, sn in known if v == value]
                    assert tied == sorted(tied) or sort == "sn", (f, sort, desc, value)
                pages = [r for offset in range(0, len(whole) + 4, 4)
                         for r in (await other.registry_query(dict(f), sort, desc, 4, offset))[1]]
                assert [r["sn"] for r in pages] == [r["sn"] for r in whole], (f, sort, desc)


async def test_list_totals_by_county_status_and_link_follow_every_write(store: Any, other: Any) -> None:
    """A list's total under equality filters comes from one grouped count per set of filter names; it is the SQL
    count's, for values present or not, and follows another process's writes at once."""
    await store.upsert_institutions([{"code": "I1", "name": "a", "county": "秀英区", "region": "海口市"},
                                     {"code": "I2", "name": "b", "county": "龙华区", "region": "海口市"}])
    await store.upsert_registry_units([{"sn": f"HN{k:04d}", "institution": ("I1", "I2", "")[k % 3],
                                        "link_type": "wired" if k % 4 == 0 else "4g_vpdn"} for k in range(60)],
                                      T0, "admin")
    await store.change_status([(f"HN{k:04d}", T0 + 60, "in_repair", "eng", "board") for k in range(0, 60, 5)])

    async def sql_total(f: dict[str, Any]) -> int:  # the SQL count: a short last page counts itself
        return len((await other.registry_query(dict(f), "sn", False, 1000, 0))[1])

    cases = [{"county": "秀英区"}, {"county": "龙华区", "status": "in_repair"}, {"region": "海口市", "link_type": "wired"},
             {"status": "in_service"}, {"county": "无此县"}, {"institution": "I2", "link_type": "4g_vpdn"}, {}]
    for f in cases:
        assert (await other.registry_query(dict(f), "sn", False, 1, 1))[0] == await sql_total(f), f
    # oldest report first: the units never heard from (counted the same grouped way), by SN, then the heard ones
    heard = [f"HN{k:04d}" for k in (9, 3, 27, 15)]  # k % 3 == 0: institution I1 (秀英区)
    for n, sn in enumerate(heard):
        await store.set_state(sn, True, T0 + n, "connected", "1.0")
    xiuying = [f"HN{k:04d}" for k in range(60) if k % 3 == 0]
    never = [sn for sn in xiuying if sn not in heard]
    for offset in (0, 15, 17, 19):
        page = (await other.registry_query({"county": "秀英区"}, "last_seen", False, 3, offset))[1]
        assert [r["sn"] for r in page] == (never + heard)[offset:offset + 3], offset
    await store.upsert_registry_units([{"sn": "HN9999", "institution": "I1", "link_type": "wired"}], T0, "admin")
    total = (await other.registry_query({"county": "秀英区", "link_type": "wired"}, "sn", False, 1, 1))[0]
    assert total == await sql_total({"county": "秀英区", "link_type": "wired"}) == 1 + sum(
        1 for k in range(60) if k % 3 == 0 and k % 4 == 0)


async def test_hearing_from_registered_units_again_leaves_the_registry_version_alone(store: Any) -> None:
    """Ingest hands every unit it hears from to each roll-up pass; the version every process's registry caches
    follow (the index, the SN text, the figures' universe) moves only when a unit is added or an automatic
    registration starts earlier. It moved at every pass before, so at 200,000 terminals every API process rebuilt
    those caches all the time (issue 15)."""
    assert await store.ensure_registered({"HN0001": T0 + 60, "HN0002": T0}) == ["HN0001", "HN0002"]
    v0 = await store.meta_get("registry_version")
    assert await store.ensure_registered({"HN0001": T0 + 120, "HN0002": T0 + 5}) == []
    assert await store.meta_get("registry_version") == v0
    assert await store.ensure_registered({"HN0001": T0}) == []  # an older sample: the registration starts earlier
    assert await store.meta_get("registry_version") != v0
    assert [h["from_ts"] for h in (await store.status_histories(["HN0001"]))["HN0001"]] == [T0]


async def test_every_unit_by_sn_pages_deep_and_follows_another_process_s_registration(store: Any, other: Any) -> None:
    """The whole registry by SN is paged from the process's ordered SN list (a deep page is not an index walk); the
    pages are what the SQL order gives, either way round, and a unit another process registers appears in them at
    once (the list is checked against the registry version read at each request, as the counts are)."""
    import asyncio

    await store.upsert_registry_units([{"sn": f"HN{k:04d}"} for k in range(0, 40, 2)], T0, "admin")
    want = [f"HN{k:04d}" for k in range(0, 40, 2)]
    for desc in (False, True):
        order = want[::-1] if desc else want
        for offset in (0, 7, 18, 20, 25):
            total, rows = await other.registry_query({}, "sn", desc, 5, offset)
            assert total == 20 and [r["sn"] for r in rows] == order[offset:offset + 5]
    # many list requests at once: the same totals (one shared count of a filter each)
    got = await asyncio.gather(*(other.registry_query({"status": "in_service"}, "sn", False, 3, k) for k in range(10)))
    assert {t for t, _rows in got} == {20} and [r["sn"] for r in got[4][1]] == want[4:7]
    await store.ensure_registered({"HN0001": T0})
    total, rows = await other.registry_query({}, "sn", False, 3, 0)
    assert total == 21 and [r["sn"] for r in rows] == ["HN0000", "HN0001", "HN0002"]
    assert rows[1]["status"] == "in_service"


async def test_numbers_inside_sample_bodies_read_alike_on_both_backends(store: Any) -> None:
    """The cells, service-level counters and data counters the recount reads out of each stored sample's body
    (PostgreSQL parses a body once for all of them): absent keys read as None, and the filters on them hold."""
    up = [smp("A1", k, T0 + 60 * k, tac=7, cell_id=70 + k % 2, rtt_var_ms=5 + k, retrans=k % 3, segs_out=10 * k)
          for k in range(4)]
    bare = [smp("A1", 4, T0 + 240), smp("B1", 1, T0, tac=8)]  # no counters; a cell without its id
    down = [smp("A1", 5, T0 + 300, connected=False, tac=7, cell_id=71), smp("B1", 2, T0 + 60, connected=False)]
    await store.store_telemetry(up + bare + down, [])
    net = await store.network_samples(T0, T0 + 600)
    assert [(n.sn, n.ts, n.connected, n.rtt_var_ms, n.retrans, n.segs_out) for n in net] == [
        ("A1", T0 + 60 * k, True, 5 + k, k % 3, 10 * k) for k in range(4)] + [
        ("A1", T0 + 240, True, None, None, None), ("A1", T0 + 300, False, None, None, None),
        ("B1", T0, True, None, None, None), ("B1", T0 + 60, False, None, None, None)]
    assert [n.sn for n in await store.network_samples(T0, T0 + 600, ["B1"])] == ["B1", "B1"]
    cells = await store.serving_cells(["A1", "B1"], T0, T0 + 600)
    assert cells == {"A1": [(T0 + 60 * k, 7, 70 + k % 2) for k in range(4)]}  # B1's sample has no cell id
    assert [tuple(d) for d in await store.link_down_cell_samples(T0, T0 + 600)] == [
        ("A1", T0 + 300, 60, 7, 71), ("B1", T0 + 60, 60, None, None)]
    assert await store.data_points("A1", T0, T0 + 600) == []  # no sample carries the counter


async def test_rollups_sum_months_days_and_hours_for_a_whole_province(store: Any) -> None:
    day = 739313  # 2025-03-03 ordinal
    await store.write_hour_counts([("A1", day, 0, 24, (60, 60, 60, 0)), ("A1", day, 1, 24, (60, 50, 60, 0))],
                                  [("A1", day, 0, bytes(60), None, 60)])
    await store.write_hour_counts([("A1", day, 1, 24, (60, 40, 60, 0))])  # a recount of hour 1 replaces it
    many = [f"S{k:05d}" for k in range(40_000)] + ["A1"]  # more SNs than PostgreSQL has parameters
    month = 2025 * 12 + 2
    sums = await store.rollup_sums([month], [day], [(day, 0, 1)], many)
    assert sums["A1"] == [60 * 2 + 120 + 60, 100 * 2 + 60, 120 * 2 + 60, 0]
    assert (await store.rollup_days("A1", day, day))[0][:5] == (day, 120, 100, 120, 0)
    assert (await store.slot_hours("A1", day))[0][:2] == (0, bytes(60))


async def test_slot_codes_of_many_units_and_days_come_back_in_one_read(store: Any, other: Any) -> None:
    day = 739313  # 2025-03-03 ordinal
    strips = [(sn, d, h, bytes([h]) * 60, '{"3": "link_down"}' if h == 5 else None, 60)
              for sn in ("A1", "B1", "C1") for d in (day, day + 1, day + 2) for h in (0, 5)]
    await store.write_hour_counts([(sn, d, h, 24, (60, 60, 60, 0)) for sn, d, h, *_ in strips], strips)
    many = [f"S{k:05d}" for k in range(1_200)] + ["A1", "C1"]  # more than one query's worth of SNs
    got = sorted(await other.slot_hours_of(many, [day, day + 2]))
    assert got == sorted((sn, d, h, bytes([h]) * 60, '{"3": "link_down"}' if h == 5 else None)
                         for sn in ("A1", "C1") for d in (day, day + 2) for h in (0, 5))
    assert await other.slot_hours_of(["A1"], []) == [] and await other.slot_hours_of([], [day]) == []


async def test_network_service_levels_per_unit_day_are_replaced_summed_and_purged(store: Any, other: Any) -> None:
    day = 739313  # 2025-03-03 ordinal
    await store.write_sla_days([("A1", day, [3600, 3000, 3600, 2400, 3000, 1000, 2000, 60]),
                                ("A1", day + 1, [600, 600, 600, 0, 0, 0, 0, 0]), ("B1", day, [0] * 8)])
    await other.write_sla_days([("A1", day, [3600, 3500, 3600, 2400, 3000, 1000, 2000, 60])])  # a recount
    many = [f"S{k:05d}" for k in range(40_000)] + ["A1"]  # more SNs than PostgreSQL has parameters
    sums, days = await store.sla_sums(day, day + 1, many)
    assert sums == {"A1": [4200, 4100, 4200, 2400, 3000, 1000, 2000, 60]} and days == {day, day + 1}
    assert (await store.sla_sums(day, day, None))[0]["B1"] == [0] * 8
    await store.purge_rollups(day + 1)
    assert await other.sla_sums(day - 1, day + 1) == ({"A1": [600, 600, 600, 0, 0, 0, 0, 0]}, {day + 1})


async def test_a_report_file_stored_by_one_process_is_read_by_another(store: Any, other: Any) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value (a PDF is binary)
    await store.put_report_file("ops-2025-03.pdf", "pdf", body, "d1", 1.0)
    assert await other.report_file("ops-2025-03.pdf") == (body, "pdf", "d1")
    await other.put_report_file("ops-2025-03.pdf", "pdf", b"%PDF-again", "d2", 2.0)  # the period made again
    assert await store.report_file("ops-2025-03.pdf") == (b"%PDF-again", "pdf", "d2")
    assert await store.report_file("ops-2025-04.pdf") is None


async def test_an_alert_is_refreshed_closed_and_reopened(store: Any) -> None:
    assert await raise_alert(store, "k1", "offline", "A1", "秀英区", T0, "down", {"n": 1}, True) is True
    assert await raise_alert(store, "k1", "offline", "A1", "秀英区", T0 + 60, "still down", {"n": 2}, True) is False
    assert await store.close_alerts("offline", set(), T0 + 120) == 1
    assert await raise_alert(store, "k1", "offline", "A1", "秀英区", T0 + 180, "again", {"n": 3}, True) is True
    total, rows = await store.list_alerts(kind="offline")
    assert total == 1 and rows[0]["opened_ts"] == T0 + 180 and rows[0]["data"] == {"n": 3}
    assert [a["key"] for a in await store.pending_webhooks()] == ["k1"]


async def test_retention_keeps_the_newer_samples(store: Any) -> None:
    await store.store_telemetry([smp("A1", k, T0 + 3600 * 6 * k) for k in range(12)], [])  # 3 days
    assert await store.purge_samples(T0 + 86400 + 3600 * 12) == 6
    assert await store.count_samples() == 6
    if hasattr(store, "partitions"):  # PostgreSQL: the first day went as a whole partition
        assert [p[1] for p in await store.partitions()] == ["2025-03-04", "2025-03-05"]


async def test_dead_letters_and_events(store: Any) -> None:
    for k in range(3):
        await store.add_dead_letter(float(k), "A1", "pf/A1/t", "bad", 10, "ab", "{}")
    total, rows = await store.dead_letters(2, "A1")
    assert total == 3 and len(rows) == 2 and rows[0]["id"] > rows[1]["id"]
    await store.store_telemetry([], [EventRow("A1", 1, k, T0 + k, "printer_fault", {"k": k}, 0.0) for k in range(5)])
    assert [e["data"]["k"] for e in await store.unit_events("A1", ["printer_fault"], 2)] == [4, 3]
    assert len(await store.events_between(T0, T0 + 3, ["printer_fault"], ["A1"])) == 3
    assert await store.purge_events(T0 + 2) == 2


async def test_the_audit_cannot_be_rewritten(store: Any) -> None:
    from server.audit import Audit

    audit = Audit(store, lambda: 5.0)
    await audit.record("admin", "token.create", "ops", detail={"role": "admin"})
    with pytest.raises(Exception, match="append-only"):
        async with store.write() as db:
            await db.execute("UPDATE audit SET actor='someone else'")
    assert [r["actor"] for r in await audit.query()] == ["admin"]


async def test_a_newer_schema_is_refused(url: str, store: Any) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    async with store.write() as db:
        if store.dialect == "sqlite":
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        else:
            await db.execute("INSERT INTO posfleet_schema(version, what) VALUES (?, 'from the future')",
                             (SCHEMA_VERSION + 1,))
    newer = open_storage(url)
    with pytest.raises(SchemaTooNew, match="newer than this server"):
        await newer.open()


async def test_renewals_backups_and_self_inspection_figures(url: str, store: Any, other: Any, tmp_path: Path) -> None:
    """Issue 17: a renewal recorded by one process is read by another; a backup by the operator's command is
    recorded in the database; the database's size, open alerts by kind and units by session for /metrics."""
    from server.storage import ops, renewals, selfcheck

    await renewals.put(store, "A1", {"state": "requested", "csr": "x"})
    await renewals.put(store, "A2", {"state": "signed", "cert": "y"})
    await renewals.put(other, "A1", {"state": "signed", "cert": "z"})  # a later step replaces the record
    assert [r["sn"] for r in await renewals.every(other, "signed")] == ["A1", "A2"]
    assert (await renewals.get(store, "A1"))["cert"] == "z" and await renewals.get(store, "B9") is None
    await store.meta_set("renewalX", "not one")  # LIKE's '_'/'%' semantics do not reach other keys
    assert len(await renewals.every(store)) == 2

    assert await selfcheck.last_backup(store) is None
    ops.backup(url, tmp_path / "b" / "fleet.bak")
    rec = await selfcheck.last_backup(other)
    assert rec is not None and rec["file"] == str((tmp_path / "b" / "fleet.bak").resolve()) and rec["bytes"] > 0
    assert rec["backend"] == store.dialect
    assert (await selfcheck.database_bytes(store) or 0) > 0

    await store.store_telemetry([smp("A1", 1, T0)], [])
    await store.set_state("A1", True, T0, "", "1.0")
    await raise_alert(store, "k1", "pressure", "A1", None, T0, "cpu", {}, False)
    await raise_alert(store, "k2", "pressure", "A2", None, T0, "cpu", {}, False)
    await raise_alert(store, "k3", "server", None, None, T0, "disk", {}, False)
    await store.close_alerts("server", set(), T0 + 1)
    assert await selfcheck.open_alerts_by_kind(other) == {"pressure": 2}
    assert (await selfcheck.units_by_state(other))["online"] == 1


async def test_a_scoped_callers_jobs_and_audit_rows_are_of_its_units(store: Any, other: Any) -> None:
    """The scope filter of issue 18 for jobs and the audit trail, on both backends: a job is a county's when every
    unit it reaches is; an audit row when its target is one of the county's units or jobs."""
    from server.audit import Audit

    await store.upsert_institutions([
        {"code": "I1", "name": "长安卫生院", "county": "长安区", "region": "西安市"},
        {"code": "I2", "name": "汉台卫生院", "county": "汉台区", "region": "汉中市"}])
    await store.upsert_registry_units([{"sn": "A1", "institution": "I1"}, {"sn": "A2", "institution": "I1"},
                                       {"sn": "B1", "institution": "I2"}, {"sn": "X1"}], T0, "admin")
    async with store.write() as db:
        for k, job in enumerate(("J1", "J2", "J3", "J4", "J5")):
            await db.execute("INSERT INTO cmd_jobs(id, type, params, created_by, created, total, state) "
                             "VALUES (?,?,?,?,?,?,?)", (job, "ping", "{}", "admin", T0 + k, 2, "done"))
        for cid, job, sn in (("c1", "J1", "A1"), ("c2", "J1", "A2"), ("c3", "J2", "A1"), ("c4", "J2", "B1"),
                             ("c5", "J3", "B1"), ("c6", "J5", "X1")):
            await db.execute("INSERT INTO cmd_commands(id, job, sn, type, params, created_by, created, issued, "
                             "expires, payload, state) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             (cid, job, sn, "ping", "{}", "admin", T0, T0, T0 + 600, b"x", "done"))
    county, city = ((), ("长安区",)), (("汉中市",), ())
    total, rows = await other.jobs_within(county)
    assert total == 1 and [r["id"] for r in rows] == ["J1"], "J2 reaches a unit of another county"
    assert [r["id"] for r in (await other.jobs_within(city))[1]] == ["J3"]
    assert (await other.jobs_within(None))[0] == 5, "the province: every job, an empty one too"
    assert (await other.jobs_within(county, job_id="J1"))[0] == 1
    assert (await other.jobs_within(county, job_id="J2"))[0] == 0
    assert (await other.jobs_within(((), ("雁塔区",))))[0] == 0, "a county without units has no jobs"
    assert (await other.jobs_within(county, limit=1, offset=1)) == (1, [])

    audit = Audit(store, lambda: 5.0)
    for action, target in (("command.state", "A1"), ("command.state", "B1"), ("job.create", "J1"),
                           ("job.create", "J2"), ("api.get", "/api/v1/units/A1"), ("command.state", "X1"),
                           ("session.signin", "county-a")):
        await audit.record("admin", action, target)
    assert [r["target"] for r in await Audit(other, lambda: 6.0).query(within=county)] == ["J1", "A1"]
    assert await audit.count(within=county) == 2 and await audit.count(within=city) == 1
    assert await audit.count(within=county, action="job.*") == 1
    assert await audit.count() == 7
