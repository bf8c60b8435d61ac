"""A scoped caller's audit trail from the scope's kept SNs (decision 036), and a small scope's registry list by last
seen looked up in ``units_sn_last_seen`` (decision 034): the same rows, counts and pages as the SQL path (a storage
object with ``kept_lists = False``: the registry and institutions subquery) and as the rows written, on SQLite and
PostgreSQL, and at once after another process changed the registry or an institution, or made a job."""

from __future__ import annotations

from typing import Any

from server.storage.audit import AuditEntry, AuditQuery
from server.storage.commands import NewCommand, NewJob
from tests.storage.test_contract import T0
from tests.storage.test_kept_lists import FEW, SCOPES, fleet

QUERIES: list[dict[str, Any]] = [{}, {"action_prefix": "command."}, {"actor": "ops"}, {"since": T0 + 30},
                                 {"before_id": 40}, {"target": "A001"}, {"action": "job.created"}]
PAGES = [(50, 0), (7, 0), (7, 7), (3, 20), (1000, 0), (5, 500)]


def sns() -> list[str]:
    return [f"{p}{k:03d}" for p in ("A", "b", "Z", "z9", "单") for k in range(24)]  # test_kept_lists.fleet's


def _command(cid: str, job: str | None, sn: str) -> NewCommand:
    return NewCommand(cid, job, 0, sn, "ping", {}, "ops", T0, T0, T0 + 3600, b"x", True, "queued")


def _job(jid: str, n: int) -> NewJob:
    return NewJob(jid, "ping", {}, "ops", T0, n, None, None, 1, False, 0, 0, "running", 0.0)


async def jobs_and_rows(store: Any) -> None:
    """Jobs within one county (县1: I01, I05, I09), one city (市0: even institutions), across both, to a spare and
    to a unit never registered; and audit rows about units, jobs and neither."""
    every = sns()
    jobs = {"J-county1": ["A001", "A005"], "J-city0": ["A000", "A002", "b004"], "J-both": ["A001", "A002"],
            "J-spare": ["A004"], "J-stranger": ["Q001"], "J-one": ["z9009"]}
    for jid, units in jobs.items():
        await store.add_commands(_job(jid, len(units)), [_command(f"{jid}-{sn}", jid, sn) for sn in units])
    await store.add_commands(None, [_command("C-alone", None, "b003")])
    rows = []
    for k, sn in enumerate(every):
        rows.append(AuditEntry(T0 + k, "ops" if k % 3 else "admin", "command.state", sn, detail={"k": k}))
        if k % 4 == 0:
            rows.append(AuditEntry(T0 + k, "admin", "api.post", f"/api/v1/registry/units/{sn}", status=200))
    for k, jid in enumerate([*jobs, "J-none"]):  # (J-none: a job id never made)
        rows.append(AuditEntry(T0 + 200 + k, "ops", "job.created", jid))
        rows.append(AuditEntry(T0 + 300 + k, "ops", "job.finished", jid))
    rows += [AuditEntry(T0 + 400, "admin", "auth.sign_in", "admin"), AuditEntry(T0 + 401, "ops", "command.state", ""),
             AuditEntry(T0 + 402, "ops", "command.state", "Q001"), AuditEntry(T0 + 403, "ops", "command.state", "a001")]
    await store.add_audit(rows)


async def same_audit(kept: Any, ref: Any, queries: list[dict[str, Any]] = QUERIES,
                     pages: list[tuple[int, int]] = PAGES) -> None:
    for within in SCOPES:
        for extra in queries:
            q = AuditQuery(within=within, **extra)
            assert await kept.count_audit(q) == await ref.count_audit(q), (within, extra)
            for limit, offset in pages:
                got, want = await kept.audit_rows(q, limit, offset), await ref.audit_rows(q, limit, offset)
                assert got == want, (within, extra, limit, offset)


async def test_scoped_audit_is_the_sql_s_and_the_rows_about_the_scope(two: tuple[Any, Any], ref: Any) -> None:
    kept, writer = two
    await fleet(writer)
    await jobs_and_rows(writer)
    for lookup in (True, False, None):  # looked up in audit_target, the trail walked, chosen
        kept.audit_lookup = lookup
        await same_audit(kept, ref)
    assert ("registry", ((), ("县1",)), None) in kept._kept_units_lists, "the kept SNs answered"
    # the rows written about 县1's units (I01, I05, I09; k % 9 == 4 are spares) and its jobs, newest first
    mine = {sn for k, sn in enumerate(sns()) if k % 12 in (1, 5, 9) and k % 9 != 4}
    rows = await kept.audit_rows(AuditQuery(within=((), ("县1",))), 1000)
    assert [r["target"] for r in rows] == ["J-one"] * 2 + ["J-county1"] * 2 + sorted(mine, key=sns().index,
                                                                                       reverse=True)
    assert await kept.count_audit(AuditQuery(within=((), ("县1",)))) == len(rows) == 4 + len(mine)
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    city = {r["target"] for r in await kept.audit_rows(AuditQuery(within=(("市0",), ())), 1000)}
    assert {"J-city0", "A000", "A002", "b004"} <= city and not city & {"J-county1", "J-both", "J-spare", "Q001"}
    assert {r["target"] for r in await kept.audit_rows(AuditQuery(within=((), ())), 1000)} == set()


async def test_scoped_audit_after_another_process_changes(two: tuple[Any, Any], ref: Any) -> None:
    kept, writer = two
    await fleet(writer)
    await jobs_and_rows(writer)
    few = [{}, {"action_prefix": "job."}]
    county1 = AuditQuery(within=((), ("县1",)))
    kept.audit_lookup = True  # (the walk: the test above)
    await same_audit(kept, ref, few, FEW)
    before = {r["target"] for r in await kept.audit_rows(county1, 1000)}
    assert ("registry", ((), ("县1",)), None) in kept._kept_units_lists, "the kept SNs answered"
    # A002 moves into 县1 (I05): its rows, and J-both's (A001 and A002), become 县1's at once
    await writer.upsert_registry_units([{"sn": "A002", "institution": "I05"}], T0, "admin")
    after = {r["target"] for r in await kept.audit_rows(county1, 1000)}
    assert after == before | {"A002", "J-both"}, after ^ before
    await same_audit(kept, ref, few, FEW)
    # an institution moves to another county: its units' rows with it
    await writer.upsert_institutions([{"code": "I09", "county": "县2", "region": "市1"}])
    assert not {r["target"] for r in await kept.audit_rows(county1, 1000)} & {"A009", "A021", "b009"}
    await same_audit(kept, ref, few, FEW)
    # a spare placed in 县1 brings its job; a new job within 县1, and its rows
    await writer.upsert_registry_units([{"sn": "A004", "institution": "I01"}], T0, "admin")
    await writer.add_commands(_job("J-new", 1), [_command("J-new-A005", "J-new", "A005")])
    await writer.add_audit([AuditEntry(T0 + 500, "ops", "job.created", "J-new")])
    targets = [r["target"] for r in await kept.audit_rows(county1, 3)]
    assert targets[:1] == ["J-new"] and "J-spare" in {r["target"] for r in await kept.audit_rows(county1, 1000)}
    await same_audit(kept, ref, few, FEW)


async def test_small_scope_by_last_seen_looked_up_is_the_sql_s(two: tuple[Any, Any], ref: Any) -> None:
    """Every page of every scope's registry list by last seen, looked up and walked, is the SQL's; and the
    chooser looks up a small share's first page and walks a large share's."""
    kept, writer = two
    await fleet(writer)
    for lookup in (True, False):
        kept.seen_lookup = lookup
        for within in SCOPES[1:]:
            for descending in (False, True):
                for limit, offset in [(50, 0), (7, 0), (7, 7), (5, 35), (1000, 0), (7, 200), (1, 0), (13, 41)]:
                    args = ({"within": within}, "last_seen", descending, limit, offset)
                    assert await kept.registry_query(*args) == await ref.registry_query(*args), (lookup, *args)
        # after another process moves a unit and hears units again
        await writer.upsert_registry_units([{"sn": "A00" + ("7" if lookup else "8"), "institution": "I01"}], T0,
                                           "admin")
        await writer.set_state("b001" if lookup else "b005", True, T0 + 999, "connected", "1.0")
        for within in SCOPES[1:]:
            args = ({"within": within}, "last_seen", True, 1000, 0)
            assert await kept.registry_query(*args) == await ref.registry_query(*args), (lookup, within)
    kept.seen_lookup = None
    kept._kept_stamp = ("", "50000")  # the chooser reads the units' number from the stamp
    assert kept._look_up_seen(355, 50) and not kept._look_up_seen(1780, 50) and kept._look_up_seen(1780, 5000)


async def test_units_sn_last_seen_index_exists_and_is_used(store: Any) -> None:
    """Schema 14 makes the index on both backends; on SQLite a small scope's page by last seen reads it (the plan
    says so) instead of walking ``units_last_seen``."""
    if store.dialect == "postgresql":
        rows = await store._all("SELECT indexdef FROM pg_indexes WHERE indexname = 'units_sn_last_seen'")
        assert rows and "(sn, last_seen)" in rows[0][0]
        return
    await fleet(store)
    said: list[str] = []
    run = store._all

    async def noted(sql: str, args: Any = ()) -> list[Any]:
        if "ORDER BY u.last_seen" in sql:
            said.append(" ".join(str(tuple(r)) for r in await run(f"EXPLAIN QUERY PLAN {sql}", args)))
        return await run(sql, args)

    store._all = noted
    store.seen_lookup = True
    await store.registry_query({"within": ((), ("县1",))}, "last_seen", True, 50, 0)
    assert said and "COVERING INDEX units_sn_last_seen" in said[0] and "units_last_seen" not in said[0], said
