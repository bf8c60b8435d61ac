"""The unit list from the kept lists (decision 034), and the registry list by last seen from a scope's kept SNs, give
what the SQL gives: the same total, items and order for every page, scope and direction, on SQLite and PostgreSQL, and at once after another process changed the registry,
an institution or the set of units (no stale list shows, not even within ``VERSION_TTL_S``)."""

from __future__ import annotations

import asyncio
from typing import Any

from server.storage import SampleRow, UnitQuery
from tests.storage.test_contract import T0

SCOPES: list[Any] = [None, ((), ("县1",)), (("市0",), ()), (("市1",), ("县0",)), ((), ()), ((), ("nowhere",)),
                     (("市0", "市1"), ("县2",))]
PAGES = [(50, 0), (7, 0), (7, 7), (5, 35), (10, 60), (3, 9), (1000, 0), (7, 200), (1, 0), (13, 41)]
FEW = [(1000, 0), (7, 0), (7, 7), (13, 41), (7, 200)]  # after each change: the whole list, pages in and past it


async def same(kept: Any, ref: Any, pages: list[tuple[int, int]] = PAGES) -> None:
    for within in SCOPES:
        for descending in (False, True):
            for limit, offset in pages:
                q = UnitQuery(sort="sn", descending=descending, limit=limit, offset=offset, within=within)
                got, want = await kept.list_units(q), await ref.list_units(q)
                assert got == want, (within, descending, limit, offset)
                filters = {} if within is None else {"within": within}
                got = await kept.registry_query(filters, "last_seen", descending, limit, offset)
                want = await ref.registry_query(filters, "last_seen", descending, limit, offset)
                assert got == want, ("registry by last seen", within, descending, limit, offset)
    for county in ("县0", "县1", "nowhere"):  # a county's registered units, and those in a status (decision 039)
        for status in (None, "in_service", "repair"):
            for descending in (False, True):
                for limit, offset in pages[:4]:
                    filters = {"county": county, "status": status}
                    got = await kept.registry_query(dict(filters), "sn", descending, limit, offset)
                    want = await ref.registry_query(dict(filters), "sn", descending, limit, offset)
                    assert got == want, ("a county's registered units", county, status, descending, limit, offset)


async def fleet(store: Any) -> None:
    await store.upsert_institutions([{"code": f"I{k:02d}", "name": f"卫生室{k}", "county": f"县{k % 4}",
                                      "region": f"市{k % 2}"} for k in range(12)])
    # mixed case, digits and non-ASCII: the kept order is the database's ORDER BY sn, whatever its collation
    sns = [f"{p}{k:03d}" for p in ("A", "b", "Z", "z9", "单") for k in range(24)]
    await store.upsert_registry_units([{"sn": sn, **({} if k % 9 == 4 else {"institution": f"I{k % 12:02d}"})}
                                       for k, sn in enumerate(sns)], T0, "admin")
    for k, sn in enumerate(sns):
        if k % 11 != 3:  # some registered units never heard from (not in the unit list)
            await store.set_state(sn, k % 2 == 0, T0 + k, "connected", "1.0")
    for sn in ("Q001", "q002"):  # heard, never registered: the province's alone
        await store.set_state(sn, True, T0, "connected", "1.0")
    # one telemetry batch: its units share one last_seen (ties go by SN)
    await store.store_telemetry([SampleRow(sn, 1, 1, T0, 60, 0, True, 80, {}, {"ts": T0}, float(T0))
                                 for sn in sns[5::7]], [])


async def test_every_page_of_every_scope_is_the_sql_page(two: tuple[Any, Any], ref: Any) -> None:
    kept, _ = two
    await fleet(kept)
    await same(kept, ref)
    assert kept._kept_units_lists.keys() >= {None, ((), ("县1",)), ("registry", ((), ("县1",)), None)}, \
        "the kept lists answered"
    if kept.dialect == "postgresql":  # a county's units in a status (decision 039: PostgreSQL only)
        assert ("registry", ((), ("县1",)), "repair") in kept._kept_units_lists, "the county's kept lists answered"


async def test_requests_arriving_together_read_a_scope_s_list_once(two: tuple[Any, Any], ref: Any) -> None:
    """Fifty dashboards asking at once after a start (or a registry change) share one read of each list instead of
    each reading the whole province's SNs (the 200,000-terminal run's first list requests took 12 s)."""
    kept, writer = two
    await fleet(writer)
    for within in (None, ((), ("县1",))):
        before = kept.kept_reads
        qs = [UnitQuery(sort="sn", limit=7, offset=7 * (k % 5), within=within) for k in range(50)]
        got = await asyncio.gather(*(kept.list_units(q) for q in qs))
        assert got == [await ref.list_units(q) for q in qs]
        assert kept.kept_reads == before + 1, within
    await writer.upsert_registry_units([{"sn": "A001", "institution": "I02"}], T0, "admin")
    before = kept.kept_reads
    got = await asyncio.gather(*(kept.list_units(UnitQuery(sort="sn", limit=1000)) for _ in range(20)))
    assert got == [await ref.list_units(UnitQuery(sort="sn", limit=1000))] * 20 and kept.kept_reads == before + 1


async def test_another_process_change_shows_at_once(two: tuple[Any, Any], ref: Any) -> None:
    kept, writer = two
    await fleet(writer)
    await same(kept, ref, FEW)
    # a unit moves to an institution of another county and city
    await writer.upsert_registry_units([{"sn": "A001", "institution": "I02"}], T0, "admin")
    await same(kept, ref, FEW)
    # an institution moves to another county: its units with it
    await writer.upsert_institutions([{"code": "I05", "county": "县1", "region": "市0"}])
    await same(kept, ref, FEW)
    # a new unit is heard (the set of units grows; the registry unchanged) ...
    await writer.set_state("A999", True, T0, "connected", "1.0")
    await same(kept, ref, FEW)
    # ... and is registered to an institution; then a spare gets one
    await writer.upsert_registry_units([{"sn": "A999", "institution": "I01"}], T0, "admin")
    await same(kept, ref, FEW)
    await writer.upsert_registry_units([{"sn": "A004", "institution": "I03"}], T0, "admin")
    await same(kept, ref, FEW)
    # ingest: a unit first heard through telemetry joins the units and the registry
    await writer.store_telemetry([SampleRow("b500", 1, 1, T0, 60, 0, True, 80, {}, {"ts": T0}, float(T0))], [])
    await writer.ensure_registered({"b500": T0})
    await same(kept, ref, FEW)
    await writer.upsert_registry_units([{"sn": "b500", "institution": "I00"}], T0, "admin")
    await same(kept, ref, FEW)
    # units heard again (a new last seen) and a status change: the registry list by last seen follows
    await writer.set_state("z9003", True, T0, "connected", "1.0")
    await writer.store_telemetry([SampleRow(sn, 1, 2, T0, 60, 0, True, 80, {}, {"ts": T0}, float(T0))
                                  for sn in ("A002", "b010", "Q001")], [])
    await writer.change_status([("A010", T0 + 60, "repair", "eng", "board")])
    await same(kept, ref, FEW)


async def test_filters_the_kept_lists_do_not_answer_are_the_sql_s(two: tuple[Any, Any], ref: Any) -> None:
    kept, _ = two
    await fleet(kept)
    for q in (UnitQuery(q="00", within=((), ("县1",))), UnitQuery(online=True), UnitQuery(sort="last_seen"),
              UnitQuery(sns=["A001", "b002", "Q001"]), UnitQuery(sort="first_seen", descending=True, limit=5)):
        assert await kept.list_units(q) == await ref.list_units(q), q


async def test_a_registry_count_after_another_process_registers_is_the_new_one(two: tuple[Any, Any]) -> None:
    kept, writer = two
    await fleet(writer)
    for within in (None, ((), ("县1",))):
        filters = {} if within is None else {"within": within}
        for sort in ("sn", "last_seen"):
            before = (await kept.registry_query(dict(filters), sort, False, 1, 1))[0]  # a full page: counted
            sn = f"N{sort}{within is None}"
            await writer.upsert_registry_units([{"sn": sn, "institution": "I01"}], T0, "admin")  # 县1
            assert (await kept.registry_query(dict(filters), sort, False, 1, 1))[0] == before + 1, (within, sort)


async def test_a_request_reads_its_own_registry_write_at_once(two: tuple[Any, Any], ref: Any) -> None:
    """Inside ``stamp_once`` (one API request) the registry's stamp is read once, with the caller's token when there
    is one, and kept for the request's other reads; a registry write of the request itself is still seen by its next
    read: the kept lists follow it at once, as the SQL does."""
    from server.auth import create_token, hash_token
    from server.storage.registry import stamp_once

    kept, writer = two
    await fleet(writer)
    token = await create_token(writer, "reader", "viewer")
    county1 = UnitQuery(sort="sn", limit=1000, within=((), ("县1",)))
    with stamp_once():
        assert (await kept.find_token(hash_token(token)))["name"] == "reader"  # the stamp taken along
        assert "A000" not in {u["sn"] for u in (await kept.list_units(county1))[1]}
        await kept.upsert_registry_units([{"sn": "A000", "institution": "I01"}], T0, "admin")  # into 县1
        got = await kept.list_units(county1)
        assert "A000" in {u["sn"] for u in got[1]} and got == await ref.list_units(county1)


async def test_a_task_that_outlives_its_request_reads_the_registry_fresh(two: tuple[Any, Any], ref: Any) -> None:
    """A task a request started (its context copied, ``stamp_once`` with it) that runs on after the request ended
    does not keep answering from the request's stamp: another process's registry write shows to it at once."""
    from server.storage.registry import stamp_once

    kept, writer = two
    await fleet(writer)
    county1 = UnitQuery(sort="sn", limit=1000, within=((), ("县1",)))
    go = asyncio.Event()

    async def later() -> Any:
        await kept.list_units(county1)  # inside the request: the stamp read once
        await go.wait()
        return await kept.list_units(county1)  # after the request ended

    with stamp_once():
        task = asyncio.create_task(later())
        await asyncio.sleep(0.1)
    await writer.upsert_registry_units([{"sn": "A000", "institution": "I01"}], T0, "admin")  # into 县1
    go.set()
    got = await task
    assert "A000" in {u["sn"] for u in got[1]} and got == await ref.list_units(county1)


async def test_a_started_process_has_every_county_s_lists_before_the_first_request(two: tuple[Any, Any],
                                                                                     ref: Any) -> None:
    """PostgreSQL (decision 039): ``warm()`` at start reads every county's registered units and those in each status
    present, so no list request after a start waits for one (the first county pages of the 210,000-terminal run
    waited up to 1.7 s, issue 15); the pages are the SQL's."""
    kept, _ = two
    await fleet(kept)
    await kept.warm()
    before = kept.kept_reads
    for county in ("县0", "县1", "县2", "县3"):
        for status in (None, "in_service"):
            filters = {"county": county, "status": status}
            got = await kept.registry_query(dict(filters), "sn", False, 7, 7)
            assert got == await ref.registry_query(dict(filters), "sn", False, 7, 7), (county, status)
    if kept.dialect == "postgresql":
        assert kept.kept_reads == before, "a county's list was read by a request, not at start"


async def test_a_search_by_the_start_of_an_sn_is_the_sql_s_and_reads_only_its_page(
        two: tuple[Any, Any], ref: Any, monkeypatch: Any) -> None:
    """The registry page's search by the start of an SN or insurance SN is answered from this process's kept SNs
    (issue 15): the same total, units and order as the SQL's index ranges, case as typed, another process's new
    unit at once, and without a statement before the page (the search used to cost one more round trip, and then,
    finding nothing, a second search for the text anywhere)."""
    from server.storage import registry as reg

    kept, writer = two
    await fleet(writer)
    await writer.upsert_registry_units([{"sn": "A001", "insurance_sn": "b0ZZ"}, {"sn": "z9005", "insurance_sn": "A0"},
                                        {"sn": "单003", "insurance_sn": "单003-医保"}], T0, "admin")
    queries = ["A", "A0", "A00", "A001", "b", "b0", "b0Z", "b0z", "z", "z9", "Z0", "a", "单", "单003-", "Q", "nothing"]
    filters = [{}, {"county": "县1"}, {"status": "in_service"}, {"within": ((), ("县0",))}]
    sorts = [("sn", False), ("sn", True), ("last_seen", True), ("institution", False)]

    async def check() -> None:
        for q in queries:
            for f in filters:
                for sort, desc in sorts:
                    for limit, offset in ((50, 0), (3, 0), (3, 3)):
                        got = await kept.registry_query({"q": q, **f}, sort, desc, limit, offset)
                        want = await ref.registry_query({"q": q, **f}, sort, desc, limit, offset)
                        assert got == want, (q, f, sort, desc, limit, offset)

    await check()
    await writer.upsert_registry_units([{"sn": "A0999", "institution": "I01", "insurance_sn": "zz1"}], T0, "admin")
    queries += ["zz"]
    await check()  # another process's new unit and insurance SN: found at once
    monkeypatch.setattr(reg, "_CONTAINS_MAX", 3)  # more matches than kept searches give: the SQL pages them
    await check()
    monkeypatch.undo()

    statements: list[str] = []  # every statement sent, once (a read may call another: counted at the outermost)
    inside: list[bool] = []
    for name in ("_all", "_quick"):
        read = getattr(kept, name)

        async def spy(sql: str, args: Any = (), _read: Any = read) -> Any:
            if not inside:
                statements.append(sql)
            inside.append(True)
            try:
                return await _read(sql, args)
            finally:
                inside.pop()
        monkeypatch.setattr(kept, name, spy)
    await kept.registry_query({"q": "A00"}, "sn", False, 50, 0)  # the kept SNs are read by now
    statements.clear()
    with reg.stamp_once():  # as in an API request: the registry's stamp read once (with the token, there)
        total, rows = await kept.registry_query({"q": "b0"}, "sn", False, 2, 0)
    assert (total, [r["sn"] for r in rows]) == (25, ["A001", "b000"])  # the insurance SN b0ZZ, then b000-b023
    assert len(statements) == 2 and "registry_version" in statements[0], statements  # the stamp, the page
    statements.clear()
    with reg.stamp_once():
        assert await kept.registry_query({"q": "nothing"}, "sn", False, 50, 0) == (0, [])
    assert len(statements) == 1 and "registry_version" in statements[0], statements  # no statement for units
    # after another process's write, searches of both kinds read the SNs once between them (each compares with the
    # registry's version read now; one comparing with the version kept for a second read them again at each turn)
    await kept.versions()
    await writer.upsert_registry_units([{"sn": "A0998", "institution": "I01"}], T0, "admin")
    statements.clear()
    for q in ("A09", "0998", "A0", "99"):
        with reg.stamp_once():
            got = await kept.registry_query({"q": q, "match": "contains" if q[0].isdigit() else "prefix"})
        assert "A0998" in [r["sn"] for r in got[1]], q
    assert sum("FROM registry ORDER BY sn" in s for s in statements) == 1, statements
