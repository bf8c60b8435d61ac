"""Self-update of the agent: hand over to a new release, confirm it, or roll it back.

Layout (the same A/B layout as every other component, see :mod:`agent.update`; what a release holds:
:mod:`wire.package`)::

    <data_dir>/components/agent/<version>/run.py      a release: posfleet, agent, wire, drivers, firmware_profiles
    <data_dir>/components/agent/current -> <version>  the release that runs
    <data_dir>/components/agent/handover.json         an update of the agent not yet confirmed or reported

The installed package (``/opt/posfleet``, what the systemd unit's ``ExecStart`` runs) is the
*launcher* and the factory fallback: ``posfleet agent run`` calls :func:`launch` before it builds
the agent, and that execs (same PID, so systemd's ``Type=notify`` tracking and watchdog carry on)
into ``current/run.py`` when ``current`` names a release other than the running code. Without
``current`` the installed package runs itself.

A ``software_update`` of component ``agent`` (:func:`hand_over`, in the old agent): download and
verify as for any package, unpack, run the package's health check in the new directory
(pre-flight: the new code imports and names its version), write ``handover.json`` (command id,
new and previous version, deadline = now + ``health_timeout_s``, start count 0, the peripheral
check states of the last sample), flip ``current``, and restart through the launcher. The command
stays ``running``: nothing is reported yet.

The launcher counts each start of the new release in ``handover.json``. A release that exits or
hangs at start is restarted by systemd (``Restart=always``; the watchdog ends a hung one); at the
:data:`MAX_STARTS`-th start without a confirmation, or once the deadline has passed, the launcher
flips ``current`` back and marks the handover ``rolled_back`` with the reason.

The new agent (:func:`resume`, from ``CommandExecutor.start``) confirms itself when, before the
deadline, it is linked to the server, the server has acknowledged its data, and every peripheral
check that was ok before is ok again; then it reports ``succeeded``. Otherwise at the deadline it
rolls back and restarts. Whichever agent runs next reports a ``rolled_back`` handover as
``failed`` with the reason. The command id was recorded in ``commands.sqlite`` before the old
agent acted, so re-sends across the restart only re-report its state (exactly once).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from wire.package import ENTRY, code_root

log = logging.getLogger(__name__)

HANDOVER = "handover.json"
MAX_STARTS = 3  # a power cut during the health check costs one start; a release that crashes at start costs three


def agent_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "components" / "agent"


def read_handover(cdir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((cdir / HANDOVER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.error("%s unreadable (%s): treated as a failed handover", cdir / HANDOVER, err)
        return {"command": "", "state": "rolled_back", "reason": f"handover record unreadable: {err}"}
    return data if isinstance(data, dict) else None


def write_handover(cdir: Path, data: dict[str, Any]) -> None:
    tmp = cdir / (HANDOVER + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, cdir / HANDOVER)
    fd = os.open(cdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def roll_back(cdir: Path, marker: dict[str, Any], reason: str) -> None:
    """``current`` back to the previous release (none: the installed package); the handover says why."""
    from .update import _point_current

    _point_current(cdir, marker.get("previous"))
    marker.update(state="rolled_back", reason=reason)
    write_handover(cdir, marker)
    log.error("agent %s rolled back to %s: %s", marker.get("version"), marker.get("previous_version"), reason)


# ---------------------------------------------------------------- launcher (the installed package)
PACKAGE_SEEN = "package-version"  # the installed package's version the launcher last started from


def installed_version() -> str:
    """The installed package's version (its dist-info in site-packages; a release carries none), else the code's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("posfleet")
    except PackageNotFoundError:
        from wire import __version__

        return __version__


def _package_changed(cdir: Path, link: Path, marker: dict[str, Any] | None) -> None:
    """An operator who installs another version of the package (apt upgrade, or a downgrade to a known good one)
    means that code to run: a release installed over the air before it no longer wins over it. The launcher keeps
    the package version it last started from; when that changes, ``current`` goes (the release folders stay for the
    next update's rollback) unless an over-the-air handover is still being confirmed."""
    pkg = installed_version()
    seen_file = cdir / PACKAGE_SEEN
    try:
        seen = seen_file.read_text().strip()
    except OSError:
        seen = None
    if seen == pkg:
        return
    changed = seen is not None
    if seen is None and link.is_symlink():  # a launcher from before this record: the newer code wins
        from .update import version_key

        changed = version_key(os.readlink(link)) <= version_key(pkg)
    if changed and link.is_symlink() and not (marker and marker.get("state") == "pending"):
        log.warning("the installed package changed from %s to %s: running it instead of the over-the-air release %s",
                    seen or "an earlier version", pkg, os.readlink(link))
        link.unlink()
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = cdir / (PACKAGE_SEEN + ".tmp")
        tmp.write_text(pkg + "\n")
        os.replace(tmp, seen_file)
    except OSError as err:
        log.error("cannot record the package version in %s: %s", seen_file, err)


def launch(data_dir: Path, argv: list[str]) -> None:
    """Run the current release: exec into ``current/run.py`` unless that is the running code. Counts the starts
    of an unconfirmed release and rolls it back when it had its chances. Returns when this code should run."""
    cdir = agent_dir(data_dir)
    here = code_root()
    marker = read_handover(cdir)
    if marker is not None and marker.get("state") == "pending":
        new = (cdir / str(marker.get("version"))).resolve()
        if new != here:  # about to start the new release (again)
            reason = ""
            starts = int(marker.get("starts") or 0)
            if time.time() > float(marker.get("deadline") or 0):
                reason = (f"did not pass its health check within {float(marker.get('timeout') or 0):g} s "
                          + (f"({starts} start(s))" if starts else "(the deadline passed before it started)"))
            elif starts >= MAX_STARTS:
                reason = f"started {starts} times without passing its health check (it exits or hangs at start)"
            elif not (new / ENTRY).is_file():
                reason = f"the release has no {ENTRY}"
            if reason:
                roll_back(cdir, marker, reason)
            else:
                marker["starts"] = starts + 1
                write_handover(cdir, marker)
    link = cdir / "current"
    _package_changed(cdir, link, marker)
    if not link.is_symlink():
        return
    target = link.resolve()
    if target == here:
        return
    entry = target / ENTRY
    if not entry.is_file():
        log.error("agent release %s has no %s; running the installed agent", target, ENTRY)
        return
    log.info("starting agent release %s", target.name)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, str(entry), *argv])


# ---------------------------------------------------------------- the old agent: install and hand over
def hand_over(agent: Any, cmd: Any, params: dict[str, Any], manifest: Any, new_dir: Path, previous: str | None,
              installed: str | None, key_id: str) -> tuple[int, str]:
    from wire import __version__

    from .update import _health, _point_current

    cdir = new_dir.parent
    version = manifest.version
    prev_name = previous or installed or __version__
    if not (new_dir / ENTRY).is_file():
        shutil.rmtree(new_dir, ignore_errors=True)
        return 2, f"refused: the agent package has no {ENTRY} entry point"
    timeout = float(params.get("health_timeout_s") or 300)
    ok, detail = _health(agent, new_dir, manifest, timeout)
    if not ok:
        shutil.rmtree(new_dir, ignore_errors=True)
        return 1, (f"rolled back: agent {version} failed its health check before the handover ({detail}); "
                   f"current version: {prev_name}")
    last = getattr(agent, "last_sample", None)
    checks = {k: c.state for k, c in last.checks.items()} if last is not None else {}
    now = time.time()
    write_handover(cdir, {
        "command": getattr(cmd, "id", ""), "version": version, "previous": previous, "previous_version": prev_name,
        "deadline": now + timeout, "timeout": timeout, "starts": 0, "checks": checks, "started": now,
        "key_id": key_id, "state": "pending"})
    _point_current(cdir, version)
    log.warning("agent %s installed (previous %s); handing over to it", version, prev_name)
    agent.events.put(("restart", getattr(cmd, "id", "")))
    return 0, f"handing over to agent {version}"


def handing_over(data_dir: Path, cid: str) -> bool:
    """The old agent's result for ``cid`` is not the command's result: the new agent reports it."""
    m = read_handover(agent_dir(data_dir))
    return m is not None and m.get("command") == cid and m.get("state") == "pending"


def done(data_dir: Path, cid: str) -> None:
    """The handover's result is stored (outbox): forget the handover, keep the new and the previous release."""
    cdir = agent_dir(data_dir)
    m = read_handover(cdir)
    if m is None or m.get("command") != cid or m.get("state") == "pending":
        return
    (cdir / HANDOVER).unlink(missing_ok=True)
    if m.get("state") == "confirmed":
        keep = {str(m.get("version")), str(m.get("previous"))}
        for old in cdir.iterdir():
            if old.is_dir() and not old.is_symlink() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- the agent that starts after a handover
def resume(executor: Any) -> str | None:
    """At start-up: report a handover that ended, or confirm this agent as the new release (in a thread).
    Returns the id of a command still handing over (not to be reported as interrupted)."""
    from wire import __version__

    agent = executor.agent
    cdir = agent_dir(agent.data_dir)
    m = read_handover(cdir)
    if m is None:
        return None
    cid = str(m.get("command") or "")
    row = executor.db.execute("SELECT state, received FROM commands WHERE id=?", (cid,)).fetchone() if cid else None
    if row is None or row[0] != "running":  # reported already (a restart after the report), or not ours
        (cdir / HANDOVER).unlink(missing_ok=True)
        return None
    received = float(row[1])
    version = m.get("version")
    state = m.get("state")
    if state == "pending" and (cdir / str(version)).resolve() != code_root():
        roll_back(cdir, m, f"did not take over: agent {__version__} started instead")
        state = "rolled_back"
    if state == "rolled_back":
        executor.report(cid, "software_update", "failed", 1,
                        f"rolled back: agent {version} {m.get('reason')}; current version: {__version__}",
                        received, m.get("started"))
        (cdir / HANDOVER).unlink(missing_ok=True)
        return None
    if state == "confirmed":  # confirmed, then cut off before the report was stored
        executor.report(cid, "software_update", "succeeded", 0, _success(m), received, m.get("started"))
        done(agent.data_dir, cid)
        return None
    threading.Thread(target=_confirm, args=(executor, cdir, m), name="agent-handover", daemon=True).start()
    return cid


def _success(m: dict[str, Any]) -> str:
    return (f"installed agent {m.get('version')} (key {m.get('key_id')}); running after the handover "
            f"(start {m.get('starts')}), linked to the server, peripherals as before; "
            f"previous {m.get('previous_version')} kept")


def _problem(agent: Any, before: dict[str, int]) -> str | None:
    from wire.messages import OK

    link = getattr(agent, "link", None)
    if link is None or not link.connected:
        return "no link to the server"
    stats = getattr(agent, "stats", None)
    if stats is not None and stats.items_acked == 0:
        return "the server has not acknowledged the new agent's data"
    last = getattr(agent, "last_sample", None)
    if last is None:
        return "no sample taken"
    worse = [f"{k}: {(last.checks[k].reason or 'fault') if k in last.checks else 'not checked'}"
             for k, st in sorted(before.items()) if st == OK and (k not in last.checks or last.checks[k].state != OK)]
    return "peripherals not as before: " + "; ".join(worse) if worse else None


def _confirm(executor: Any, cdir: Path, m: dict[str, Any]) -> None:
    agent = executor.agent
    before = {str(k): int(v) for k, v in (m.get("checks") or {}).items()}
    deadline = float(m.get("deadline") or 0)
    log.warning("agent %s started after the handover (start %s); confirming it before %s",
                m.get("version"), m.get("starts"), time.strftime("%H:%M:%S", time.localtime(deadline)))
    while not executor.stopping:
        problem = _problem(agent, before)
        if problem is None:
            m["state"] = "confirmed"
            write_handover(cdir, m)
            log.warning("agent %s confirmed", m.get("version"))
            agent.events.put(("cmd_done", (m["command"], "software_update", 0, _success(m), m.get("started"))))
            return
        if time.time() > deadline:
            roll_back(cdir, m, f"failed its health check within {float(m.get('timeout') or 0):g} s: {problem}")
            agent.events.put(("restart", m["command"]))
            return
        time.sleep(0.5)
