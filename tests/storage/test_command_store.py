"""The commands' and the audit's stores (server/storage/commands.py, server/storage/audit.py) on both backends.

Two storage objects on one database stand for two server processes: what one writes the other reads back exactly as
written (the same values and types on SQLite and PostgreSQL), and a state change made on a state another process
has moved on from changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from server.storage.audit import AuditEntry, AuditQuery
from server.storage.commands import Move, NewCommand, NewJob, NewPackage, Sent

T0 = 1_741_000_000.0


def cmd(cid: str, sn: str, job: str | None = None, wave: int = 0, released: bool = True, ctype: str = "ping",
        created: float = T0, **kw: Any) -> NewCommand:
    return NewCommand(cid, job, wave, sn, ctype, {"count": 3, "host": "10.0.0.1"}, "admin", created, int(created),
                      int(created) + 600, b"\x00signed\xff" + cid.encode(), released, "queued", **kw)


JOB = NewJob("J1", "ping", {"count": 3}, "admin", T0, 3, 2.5, 40.0, 2, True, 1, 2, "running", 1234.5)


async def test_a_commands_life_is_read_back_by_another_process_exactly(two: tuple[Any, Any]) -> None:
    a, b = two
    await a.add_commands(JOB, [cmd("c1", "A1", "J1", 0), cmd("c2", "A2", "J1", 1, released=False),
                               cmd("c3", "A3", "J1", 1, released=False)])
    await a.add_commands(None, [cmd("c4", "A1", created=T0 + 5, ctype="reboot")])
    first = {"id": "c1", "job": "J1", "wave": 0, "sn": "A1", "type": "ping", "params": {"count": 3, "host": "10.0.0.1"},
             "created_by": "admin", "created": T0, "issued": int(T0), "expires": int(T0) + 600, "state": "queued",
             "reason": "", "sends": 0, "sent": None, "delivered": None, "started": None, "finished": None,
             "code": None, "output": "", "package": None}
    assert await b.get_command("c1") == first
    assert await b.get_command("nope") is None

    await a.mark_sent([Sent("c1", "queued", "sent", T0 + 1, 5000.0)])
    await a.mark_sent([Sent("c1", "queued", "sent", T0 + 1, 5100.0)])  # a re-send: the state had moved on already
    assert await b.move_command("c1", "sent", "delivered", delivered=T0 + 2, started=T0 + 2)
    assert not await a.move_command("c1", "sent", "expired", reason="too late", finished=T0 + 3), \
        "the other process moved it on: nothing changes"
    assert await a.move_command("c1", "delivered", "succeeded", finished=T0 + 4, code=0, output="3 replies")
    assert await b.get_command("c1") == {**first, "state": "succeeded", "sends": 2, "sent": T0 + 1,
                                         "delivered": T0 + 2, "started": T0 + 2, "finished": T0 + 4, "code": 0,
                                         "output": "3 replies"}
    with pytest.raises(ValueError, match="payload"):
        await a.move_command("c2", "queued", "sent", payload=b"forged")

    assert [c["id"] for c in await b.list_commands()] == ["c4", "c1", "c2", "c3"], "newest first"
    assert [c["id"] for c in await b.list_commands(sn="A1", ctype="ping")] == ["c1"]
    assert await b.count_commands(job="J1") == 3 and await b.count_commands(state="queued") == 3
    assert [c["id"] for c in await b.list_commands(limit=2, offset=1)] == ["c1", "c2"]


async def test_a_job_its_waves_release_and_end(two: tuple[Any, Any]) -> None:
    a, b = two
    await a.add_commands(JOB, [cmd("c1", "A1", "J1", 0), cmd("c2", "A2", "J1", 1, released=False),
                               cmd("c3", "A3", "J1", 1, released=False)])
    job = {"id": "J1", "type": "ping", "params": {"count": 3}, "created_by": "admin", "created": T0, "total": 3,
           "rate_per_min": 2.5, "abort_pct": 40.0, "min_executed": 2, "off_hours": True, "canary": 1, "wave_size": 2,
           "state": "running", "reason": "", "released": 0, "finished": None}
    assert await b.get_job("J1") == job
    assert await b.jobs_in_state("running") == [{**job, "started_mono": 1234.5}]
    assert await b.jobs_within(None) == (1, [job])

    await a.move_commands([Move("c1", "queued", "failed", "no route", T0 + 9)])
    assert await b.job_waves("J1") == [{"wave": 0, "total": 1, "released": 1, "states": {"failed": 1}},
                                       {"wave": 1, "total": 2, "released": 0, "states": {"queued": 2}}]
    assert [c["id"] for c in await b.unreleased("J1", 1, "queued")] == ["c2", "c3"], "in creation order"
    await b.release("J1", ["c2"])
    assert (await a.get_job("J1"))["released"] == 1
    assert [c["id"] for c in await a.unreleased("J1", 1, "queued")] == ["c3"]
    assert await a.job_progress("J1") == {"failed": 1, "queued": 2}
    units = await b.job_units("J1")
    assert [(u["id"], u["wave"], u["released"], u["state"], u["reason"]) for u in units] == [
        ("c1", 0, 1, "failed", "no route"), ("c2", 1, 1, "queued", ""), ("c3", 1, 0, "queued", "")]

    await a.end_job("J1", "aborted", "aborted by admin", T0 + 10)
    assert await b.jobs_in_state("running") == []
    assert (await b.get_job("J1"))["state"] == "aborted" and (await b.get_job("J1"))["finished"] == T0 + 10


async def test_due_commands_are_the_released_ones_of_units_online(two: tuple[Any, Any]) -> None:
    a, b = two
    for sn in ("A1", "A2"):
        await a.set_state(sn, True, T0, "", "1.0")
    await a.set_state("A3", False, T0, "lost", "1.0")
    await a.add_commands(None, [cmd("c1", "A1"), cmd("c2", "A2", created=T0 + 1), cmd("c3", "A3"),
                                cmd("c4", "A1", released=False), cmd("c5", "A2", created=T0 + 2)])
    due = await b.due_commands(("queued",), ("sent",), 100.0, 3)
    assert [(d["id"], d["state"], d["sent"]) for d in due] == [("c1", "queued", None), ("c2", "queued", None),
                                                               ("c5", "queued", None)]
    assert due[0]["payload"] == b"\x00signed\xffc1"
    await a.mark_sent([Sent("c1", "queued", "sent", T0, 50.0), Sent("c2", "queued", "sent", T0, 150.0)])
    await a.move_commands([Move("c5", "queued", "expired", "expired before it could be sent", T0)])
    assert [d["id"] for d in await b.due_commands(("queued",), ("sent",), 100.0, 3)] == ["c1"], \
        "c1 was sent before 100, c2 after"
    await a.mark_sent([Sent("c1", "sent", "sent", T0, 60.0)] * 2)
    assert await b.due_commands(("queued",), ("sent",), 100.0, 3) == [], "sent 3 times: no more"
    assert await b.due_commands(("queued",), ("sent",), 100.0, 4) != []


async def test_commands_counted_per_unit_by_state_type_and_age(two: tuple[Any, Any]) -> None:
    a, b = two
    await a.add_commands(None, [cmd("c1", "A1", ctype="reboot"), cmd("c2", "A1", ctype="reboot", created=T0 + 100),
                                cmd("c3", "A1", ctype="ping"), cmd("c4", "A2", ctype="shutdown"),
                                cmd("c5", "A2", ctype="reboot")])
    await a.move_commands([Move("c5", "queued", "rejected", "no", T0)])
    sns = ["A1", "A2", "A3"] + [f"Z{k}" for k in range(600)]  # more than one IN list's worth of units
    assert await b.commands_per_unit(sns, ("queued",)) == {"A1": 3, "A2": 1}
    assert await b.commands_per_unit(sns, ("queued", "rejected"), types=("reboot", "shutdown")) == {"A1": 2, "A2": 2}
    assert await b.commands_per_unit(sns, ("queued",), types=("reboot",), created_after=T0 + 50) == {"A1": 1}
    expiring = await b.commands_in_states(("queued", "sent"), expires_before=T0 + 601)
    assert [(c["id"], c["sn"], c["state"]) for c in expiring] == [("c1", "A1", "queued"), ("c3", "A1", "queued"),
                                                                  ("c4", "A2", "queued")], "c2 expires later"
    await a.move_command("c3", "queued", "succeeded", finished=T0 + 7, code=1)
    await a.move_command("c1", "queued", "failed", finished=T0 + 3)
    assert await b.last_commands("ping") == {"A1": {"finished": T0 + 7, "state": "succeeded", "code": 1}}


async def test_reads_inside_a_transaction_see_its_writes_and_a_rollback_undoes_them(two: tuple[Any, Any]) -> None:
    a, b = two
    await a.add_commands(None, [cmd("c1", "A1"), cmd("c2", "A1")])
    with pytest.raises(RuntimeError, match="stop"):
        async with a.write():
            assert await a.move_command("c1", "queued", "sent")
            assert (await a.get_command("c1"))["state"] == "sent", "the transaction's own write"
            assert [c["id"] for c in await a.commands_in_states(("queued",))] == ["c2"]
            raise RuntimeError("stop")
    assert (await a.get_command("c1"))["state"] == "queued" and (await b.get_command("c1"))["state"] == "queued"


async def test_a_package_and_its_download_token(two: tuple[Any, Any]) -> None:
    a, b = two
    pkg = NewPackage("agent-1.2-abcd", "agent", "1.2", ["T1", "T2"], "ab" * 32, 1234, b"\x01sig", b"\x02endo",
                     "/srv/p/agent-1.2-abcd.tar.gz", "admin", T0)
    await a.put_package(pkg)
    listed = {"id": pkg.id, "component": "agent", "version": "1.2", "models": ["T1", "T2"], "sha256": "ab" * 32,
              "size": 1234, "created_by": "admin", "created": T0}
    assert await b.list_packages() == [listed]
    assert await b.get_package(pkg.id) == {**listed, "signature": b"\x01sig", "endorsement": b"\x02endo",
                                           "path": "/srv/p/agent-1.2-abcd.tar.gz"}
    await b.put_package(NewPackage(pkg.id, "agent", "1.2", ["T3"], "ab" * 32, 1234, b"s2", b"e2", "/elsewhere",
                                   "root", T0 + 1))  # uploaded again: replaced
    assert (await a.get_package(pkg.id))["models"] == ["T3"] and len(await a.list_packages()) == 1
    await a.add_commands(None, [cmd("c1", "A1", ctype="software_update", token="tok-1", package=pkg.id)])
    assert await b.package_by_token(pkg.id, "tok-1") == {"state": "queued", "expires": int(T0) + 600,
                                                         "path": "/elsewhere"}
    assert await b.package_by_token(pkg.id, "tok-2") is None and await b.package_by_token("other", "tok-1") is None
    assert "token" not in await b.get_command("c1"), "a download token is never shown"


async def test_audit_rows_are_kept_and_filtered(two: tuple[Any, Any]) -> None:
    a, b = two
    await a.add_audit([AuditEntry(T0, "admin", "job.create", "J1", role="admin", client="10.0.0.5", status=201,
                                  detail={"type": "reboot", "targets": ["A1", "A2"], "名": "长安"})])
    await b.add_audit([AuditEntry(T0 + 1, "server", "command.state", "A1", detail={"id": "c1", "to": "sent"}),
                       AuditEntry(T0 + 2, "server", "command.state", "A2"),
                       AuditEntry(T0 + 3, "anonymous", "auth.failed", "", client="10.9.9.9")])
    rows = await a.audit_rows(AuditQuery())
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True), "newest first"
    assert rows[-1] | {"id": 0} == {"id": 0, "ts": T0, "actor": "admin", "role": "admin", "client": "10.0.0.5",
                                    "action": "job.create", "target": "J1", "status": 201,
                                    "detail": {"type": "reboot", "targets": ["A1", "A2"], "名": "长安"}}
    assert rows[1]["status"] is None and rows[1]["detail"] == {} and rows[1]["role"] == ""
    assert [r["target"] for r in await b.audit_rows(AuditQuery(target="A1"))] == ["A1"]
    assert [r["ts"] for r in await b.audit_rows(AuditQuery(action_prefix="command."))] == [T0 + 2, T0 + 1]
    assert await b.count_audit(AuditQuery(action="command")) == 0, "exact unless asked for a prefix"
    assert await b.count_audit(AuditQuery(since=T0 + 1, until=T0 + 3)) == 2
    assert await b.count_audit(AuditQuery(client="10.9.9.9")) == 1
    newest = rows[0]["id"]
    assert [r["ts"] for r in await b.audit_rows(AuditQuery(before_id=newest), limit=2)] == [T0 + 2, T0 + 1]
    assert [r["ts"] for r in await b.audit_rows(AuditQuery(), limit=2, offset=2)] == [T0 + 1, T0]
    assert await b.count_audit(AuditQuery(actor="server", action_prefix="command.")) == 2
