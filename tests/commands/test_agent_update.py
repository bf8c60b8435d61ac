"""Software update of the agent itself, with real processes: the agent (``posfleet agent run``) gets a signed
``agent`` package through the real server and broker, installs it, execs into the new release (same PID) and
the new release confirms itself (linked, acknowledged by the server, peripherals as before) and reports. A
release that exits at start is restarted by the service manager, rolled back by the launcher and reported
failed. The only stand-in is ``Restart``: a thread doing what the unit's ``Restart=always`` does."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from types import TracebackType

from server.commands.keys import load_key
from server.commands.packages import build_package, sign_package, stage_agent_release
from tests.commands.conftest import Fleet
from tests.commands.test_update import _upload
from tests.conftest import epoch
from tests.fleet import wait_for

FAST = 100 * 1024 * 1024  # pace_bytes_per_s: the loopback is not a 4G link


def _agent_package(tmp: Path, fleet: Fleet, version: str, exits_at_start: bool = False,
                   drops_acks: bool = False) -> Path:
    src = stage_agent_release(tmp / f"agent-src-{version}", version)
    main = src / "agent" / "main.py"
    if exits_at_start:
        # a release that needs a library this terminal lacks, with a health check that does not import it
        main.write_text(main.read_text() + "\nimport posfleet_library_missing_on_the_terminal  # noqa: E402,F401\n")
        (src / "healthcheck").write_text("#!/bin/sh\necho looks fine\n")
    if drops_acks:
        # a release that starts and links but loses what the server answers: it never hears it is through
        code, n = re.subn(r"(\n    def _on_ack\(self, payload: bytes\) -> None:\n)", r"\1        return\n", main.read_text())
        assert n == 1, "agent/main.py: _on_ack not found"
        main.write_text(code)
    out = build_package(src, "agent", version, [], ["./healthcheck"], tmp / f"agent-{version}.tar.gz")
    _digest, sig = sign_package(out, load_key(fleet.keys["update_key"], fleet.keys["update_endorsement"], "update"))
    Path(str(out) + ".sig").write_bytes(sig)
    return out


class Restart:
    """``Restart=always`` with a short ``RestartSec``: start the agent again whenever its process has ended."""

    def __init__(self, fleet: Fleet, sn: str) -> None:
        self.fleet, self.sn, self.restarts = fleet, sn, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if not self.fleet.agents[self.sn].alive():
                self.restarts += 1
                self.fleet.start_agent(self.sn)

    def __enter__(self) -> Restart:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)


def _update(fleet: Fleet, sn: str, archive: Path, health_timeout_s: float = 120) -> str:
    up = _upload(fleet, archive)
    assert up.status_code == 201, up.text  # type: ignore[attr-defined]
    r = fleet.send(type="software_update", sn=sn, params={"package": up.json()["id"],  # type: ignore[attr-defined]
                                                          "health_timeout_s": health_timeout_s,
                                                          "pace_bytes_per_s": FAST})
    assert r.status_code == 201, r.text
    return str(r.json()["command"]["id"])


def test_the_agent_hands_over_to_its_new_release_and_a_release_that_exits_at_start_is_rolled_back(
        fleet: Fleet, tmp_path: Path) -> None:
    sn = "HN57000001"
    fleet.start_server(resend_after_s=1.0)  # re-sent every second until final: across the restarts too
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    adir = fleet.agent_dir(sn) / "data" / "components" / "agent"
    log = fleet.agent_dir(sn) / "agent.log"
    with Restart(fleet, sn) as unit:
        # a release that exits at start: three starts, then the launcher puts the installed agent back
        crashed = cid = _update(fleet, sn, _agent_package(tmp_path, fleet, "0.2.0", exits_at_start=True))
        done = fleet.wait_state(cid, timeout=60)
        assert done["state"] == "failed" and done["code"] == 1, done
        assert done["output"].startswith("rolled back: agent 0.2.0 started 3 times without passing its health "
                                         "check"), done["output"]
        assert done["output"].endswith("current version: 0.1.0"), done["output"]
        assert unit.restarts == 3, "the crashed release was started three times, then the installed agent ran"
        assert log.read_text().count("No module named 'posfleet_library_missing_on_the_terminal'") == 3
        assert not (adir / "current").exists() and not (adir / "handover.json").exists()
        fleet.wait_online(sn)
        unit_before = fleet.server.get(f"/api/v1/units/{sn}").json()
        assert unit_before["agent_version"] == "0.1.0", unit_before

        # a release that runs but never passes its health check: it rolls itself back at the deadline
        cid = _update(fleet, sn, _agent_package(tmp_path, fleet, "0.2.5", drops_acks=True), health_timeout_s=4)
        done = fleet.wait_state(cid, timeout=60)
        out = done["output"]
        # usually "...: the server has not acknowledged the new agent's data"; on a loaded machine the deadline may
        # come before the link or the first sample, or (the launcher's words) before the release even started
        assert done["state"] == "failed" and out.startswith("rolled back: agent 0.2.5 ") and \
            "health check within 4 s" in out and out.endswith("; current version: 0.1.0"), done
        assert unit.restarts == 3, "it went back by itself (exec), no crash"
        assert not (adir / "current").exists() and not (adir / "handover.json").exists()
        fleet.wait_online(sn)

        # a good release: the same process execs into it, and it reports once it is linked and acknowledged;
        # the power is cut just as it has started (before it confirms itself, unless it is very quick): the next
        # start is the release again, which confirms and reports, once
        pid = fleet.agents[sn].proc.pid  # type: ignore[union-attr]
        restarts = unit.restarts
        cid = _update(fleet, sn, _agent_package(tmp_path, fleet, "0.3.0"))
        wait_for(lambda: "agent 0.3.0 started after the handover (start 1)" in log.read_text(), 30,
                 "agent 0.3.0 to start", interval=0.05)
        assert fleet.agents[sn].proc.pid == pid and fleet.agents[sn].alive(), "exec: the same process runs on"
        assert unit.restarts == restarts, "the handover needed no restart by the service manager"
        cut = time.time()  # every sample stamped after this is the next start's: a sample's ts is its slot, <= now
        fleet.agents[sn].kill()
        done = fleet.wait_state(cid, timeout=60)
        assert done["state"] == "succeeded", done
        assert done["output"].startswith("installed agent 0.3.0") and "previous 0.1.0 kept" in done["output"]
        assert os.readlink(adir / "current") == "0.3.0" and not (adir / "handover.json").exists()
        assert unit.restarts == restarts + 1

        # what the server hears from the unit now comes from the new release: its link state and inventory name
        # 0.3.0, and its samples arrive (the one it confirmed itself with, at the latest)
        def unit_says(version: str) -> bool:
            u = fleet.server.get(f"/api/v1/units/{sn}").json()
            return bool(u["agent_version"] == version and (u.get("inventory") or {}).get("agent") == version)
        wait_for(lambda: unit_says("0.3.0"), 20, "the unit's link state and inventory from agent 0.3.0", interval=0.3)
        wait_for(lambda: epoch(fleet.server.get(f"/api/v1/units/{sn}/samples", limit=1).json()["items"][0]["ts"])
                 > cut, 20, "a sample from agent 0.3.0", interval=0.3)

    # exactly once across the restarts: each package installed once, each command with one final state, although
    # the server re-sent them while the agent restarted (three process starts for the crashing release)
    text = log.read_text()
    for version in ("0.2.0", "0.2.5", "0.3.0"):
        assert text.count(f"agent {version} installed") == 1, (version, text[-3000:])
    assert text.count("agent 0.3.0 confirmed") <= 2  # twice only when the power cut came between confirming and the report
    finals: dict[str, list[str]] = {}
    for a in fleet.audit(action="command.state", target=sn, limit=1000):
        if a["detail"]["to"] in ("succeeded", "failed", "rejected", "expired"):
            finals.setdefault(a["detail"]["id"], []).append(a["detail"]["to"])
    assert sorted(finals.values()) == [["failed"], ["failed"], ["succeeded"]], finals
    assert fleet.command(crashed)["sends"] >= 2, "re-sent while the agent restarted (and not run again)"
