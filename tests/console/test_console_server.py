"""The console and the fleet server: sessions and commands audited on a terminal that cannot
reach the server arrive there once it can; the revocation list reaches the terminal with a
configuration update (set_config), and the console refuses the revoked credential from then on.

Real broker, real server, real agent process with its console on a pty cable.
"""

from __future__ import annotations

import json
import sqlite3
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from posfleet.diagconsole.client import ConsoleClient, ConsoleError, Refused
from posfleet.diagconsole.credential import issue
from server.commands.keys import make_key
from tests.commands.conftest import Fleet
from tests.console.cable import Cable
from tests.console.conftest import COUNTY
from tests.console.helpers import remote
from tests.fleet import Broker, Pki, wait_for

SN = "HN55000601"


@pytest.fixture
def fleet(pki: Pki, broker: Broker, tmp_path: Path) -> Iterator[Fleet]:
    ck, ce, _ = make_key(pki.ca, tmp_path / "keys", "command", 30)
    f = Fleet(pki, broker, {"command_key": ck, "command_endorsement": ce}, tmp_path)
    yield f
    f.stop()


def wait_console(port: str, timeout: float = 30) -> None:
    def answers() -> bool:
        try:
            with ConsoleClient(port, ack_timeout=0.3, retries=2) as c:
                c.hello()
            return True
        except ConsoleError:
            return False

    wait_for(answers, timeout, "the console to answer", interval=0.2)


def console_events(db: Path) -> list[dict[str, object]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=10)
    try:
        rows = con.execute("SELECT ts, data FROM events WHERE sn=? AND kind='console' ORDER BY ts, seq",
                           (SN,)).fetchall()
    except sqlite3.OperationalError:
        return []  # the server is still creating its schema
    finally:
        con.close()
    return [{"ts": ts, **json.loads(data)} for ts, data in rows]


def test_audit_reaches_the_server_when_it_returns_and_revocation_travels_with_the_config(
        fleet: Fleet, tmp_path: Path) -> None:
    keep, gone = tmp_path / "li.json", tmp_path / "sun.json"
    issue(fleet.pki.ca, "李工", [COUNTY], 7, keep)
    gone_id = issue(fleet.pki.ca, "孙工", [COUNTY], 7, gone)["id"]
    with Cable() as cable:
        cfg = fleet.make_agent(SN, extra=f'\n[console]\nport = "{cable.terminal_path}"\n'
                               f'engineer_ca_file = "{fleet.pki.dir}/ca.pem"\ncounty = "{COUNTY}"\n')
        fleet.start_agent(SN)
        wait_console(cable.laptop_path)
        # no server yet: the agent's outbox holds its inventory event; an engineer clears it
        t0 = time.time()
        code, _out, doc = remote(cable.laptop_path, "outbox", credential=keep)
        assert code == 0 and doc["data"]["entries"], doc
        seq = doc["data"]["entries"][0]["seq"]
        code, _out, doc = remote(cable.laptop_path, "outbox", "clear", f"seq={seq}", credential=keep)
        assert code == 0, doc
        assert console_events(fleet.root / "server" / "fleet.sqlite") == []

        server = fleet.start_server()

        def reported() -> list[dict[str, object]]:
            events = console_events(server.db)
            return events if any(e.get("command") == "outbox clear" for e in events) else []

        events = wait_for(reported, 40, "the console's audit records on the server")
        cleared = next(e for e in events if e.get("command") == "outbox clear")
        # who, when, what
        assert cleared["engineer"] == "李工" and cleared["result"] == "ok" and cleared["args"] == {"seq": str(seq)}
        assert t0 - 2 <= float(cleared["ts"]) <= time.time()  # type: ignore[arg-type]
        kinds = [e["event"] for e in events]
        assert "session_start" in kinds and "auth" in kinds and "session_end" in kinds
        assert len({(e["ts"], e["event"], e.get("session")) for e in events}) == len(events), "reported once"
        # ...and an administrator reads them through the API
        r = server.get(f"/api/v1/units/{SN}/events", role="viewer", kind="console")
        assert r.status_code == 200, r.text
        api = [e["data"] for e in r.json()["items"]]
        assert all(e["kind"] == "console" for e in r.json()["items"]) and len(api) == len(events)
        assert any(d.get("command") == "outbox clear" and d["engineer"] == "李工" for d in api)

        # the revocation list travels with a configuration update
        with ConsoleClient(cable.laptop_path) as c:
            c.hello()
            assert c.auth(gone)["engineer"] == "孙工"  # not revoked yet
        fleet.wait_online(SN)
        cid = fleet.send(type="set_config", sn=SN,
                         params={"changes": {"console.revoked": [gone_id]}}).json()["command"]["id"]
        done = fleet.wait_state(cid, timeout=40)
        assert done["state"] == "succeeded", done
        assert tomllib.loads(cfg.read_text())["console"]["revoked"] == [gone_id]
        wait_console(cable.laptop_path)
        with ConsoleClient(cable.laptop_path) as c:
            c.hello()
            with pytest.raises(Refused, match="revoked"):
                c.auth(gone)
            assert c.auth(keep)["engineer"] == "李工"
        code, _out, doc = remote(cable.laptop_path, "outbox", "clear", "seq=1", credential=gone)
        assert code == 7 and "revoked" in doc["error"]

        # a change made from the console, kept because the server is reached under it (the
        # rolled-back case is in test_console_changes.py); the outcome is audited and reported
        code, _out, doc = remote(cable.laptop_path, "config", "set", "sampling.interval_s", "10", credential=keep)
        assert code == 0, doc

        def outcome_reported() -> list[dict[str, object]]:
            return [e for e in console_events(server.db) if e["event"] == "config_change"]

        outcome = wait_for(outcome_reported, 60, "the console change's outcome on the server")[-1]
        assert outcome["result"] == "confirmed" and outcome["key"] == "sampling.interval_s"
        assert outcome["engineer"] == "李工"
        assert tomllib.loads(cfg.read_text())["sampling"]["interval_s"] == 10
        assert not cfg.with_name(cfg.name + ".bak").exists()
