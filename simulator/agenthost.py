"""The simulator's agent host: several real agents in one process (``python -m simulator.agenthost``).

One ``posfleet agent run`` process per simulated unit costs an interpreter each (about 36 MB and its start-up);
a thousand units do not fit. The host runs N :class:`agent.main.Agent` instances in one process, each on its
own thread with its own configuration, data directory, boot id, certificate, outbox and MQTT link: the real
agent code, only sharing an interpreter. It is for the simulator only; a terminal runs ``posfleet agent run``.

The player drives it with JSON lines on stdin and reads JSON lines on stdout:

==================================== =====================================================================
``{"op": "start", "sn", "config"}``  build an Agent from that TOML file and run it (``started``, or
                                     ``ended`` with code 1 if it cannot be built)
``{"op": "stop", "sn"}``             ``Agent.stop()``: a clean shutdown, as SIGTERM does (``ended``, code 0)
``{"op": "halt", "sn"}``             ``Agent.halt()``: a power cut, no goodbye, the outbox left on disk as it is
                                     (``ended``, code -9)
``{"op": "quit"}``                   stop every agent and exit (also on end of input)
==================================== =====================================================================

``{"ev": "ended", "sn", "code"}`` is also written when an agent's run ends by itself (code 1, an exception;
the traceback is in that unit's log). Each unit's log is its own file (the lines of its agent thread), next
to its configuration; the lines of threads that belong to no unit in particular (the MQTT link threads) go
to the host's own output (``--log``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from agent.warmup import warm_up

log = logging.getLogger("simulator.agenthost")

_OUT_LOCK = threading.Lock()
#: one Agent is built at a time: msgspec builds a Struct type's decoding info on its first use and crashed the
#: process (SIGSEGV in msgspec.convert of the agent's config, 2 of 4 hosts of the 100-unit day, most of the 40 of
#: the 1,000-unit run) when 25 threads did that first use at once
_BUILD_LOCK = threading.Lock()


def _emit(**msg: Any) -> None:
    with _OUT_LOCK:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()


class _PerUnitLog(logging.Handler):
    """Sends each record to the log file of the unit whose agent thread wrote it (thread name agent-<sn>)."""

    def __init__(self, fallback: logging.Handler) -> None:
        super().__init__()
        self.fallback = fallback
        self.files: dict[str, logging.Handler] = {}
        self.lock_files = threading.Lock()

    def open(self, thread_name: str, path: Path) -> None:
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(self.formatter)
        for f in self.fallback.filters:
            h.addFilter(f)
        with self.lock_files:
            old = self.files.pop(thread_name, None)
            self.files[thread_name] = h
        if old is not None:
            old.close()

    def emit(self, record: logging.LogRecord) -> None:
        h = self.files.get(record.threadName or "")
        (h or self.fallback).handle(record)

    def close(self) -> None:
        with self.lock_files:
            for h in self.files.values():
                h.close()
            self.files.clear()
        super().close()


class Host:
    def __init__(self, logs: _PerUnitLog) -> None:
        self.logs = logs
        self.agents: dict[str, Any] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.asked: dict[str, int] = {}  # sn -> the code its end was asked with (0 stop, -9 halt)
        self.ended: set[str] = set()  # units whose run has ended (their thread may still be finishing)
        self.lock = threading.Lock()

    def start(self, sn: str, config: str) -> None:
        t = self.threads.get(sn)
        if t is not None and sn in self.ended:
            t.join(5)  # it has said "ended" and is finishing: the player may restart it at once
        with self.lock:
            t = self.threads.get(sn)
            if t is not None and t.is_alive():
                _emit(ev="error", sn=sn, error="already running")
                return
            self.asked.pop(sn, None)
            self.ended.discard(sn)
            name = f"agent-{sn}"
            self.logs.open(name, Path(config).with_name("agent.log"))
            t = threading.Thread(target=self._run, args=(sn, config), name=name, daemon=True)
            self.threads[sn] = t
        t.start()

    def _run(self, sn: str, config: str) -> None:
        from agent.config import load
        from agent.main import Agent
        from wire.signing import verify_endorsed

        code = 1
        try:
            with _BUILD_LOCK:
                cfg = load(config)
                agent = Agent(cfg, config_path=Path(config).resolve())
                # many agents in one process share one ``cryptography``: check signatures in place, not in a
                # child process each (decision 019)
                agent.signed_check = verify_endorsed
            with self.lock:
                self.agents[sn] = agent
                asked = self.asked.get(sn)
            if asked is not None and asked < 0:  # stopped before it was built
                agent.halt()
            elif asked is not None:
                agent.stop()
            _emit(ev="started", sn=sn)
            agent.run()
            code = 0
        except BaseException:
            log.exception("agent %s failed", sn)
        with self.lock:
            self.agents.pop(sn, None)
            asked = self.asked.pop(sn, None)
            self.ended.add(sn)
        _emit(ev="ended", sn=sn, code=asked if asked is not None and code == 0 else 1 if code else 0)

    def end(self, sn: str, how: int) -> None:
        with self.lock:
            t = self.threads.get(sn)
            if t is None or not t.is_alive():
                return
            self.asked[sn] = how
            agent = self.agents.get(sn)
        if agent is not None:
            if how < 0:
                agent.halt()
            else:
                agent.stop()

    def quit(self) -> None:
        for sn in list(self.threads):
            self.end(sn, 0)
        for t in list(self.threads.values()):
            t.join(15)


# ------------------------------------------------------------------------------------------ the player's side
class HostProcess:
    """A running agent host, as the player sees it: start/stop/halt units, learn when each ends."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        import subprocess

        self.log_path = log_path
        self._cond = threading.Condition()
        self.codes: dict[str, int | None] = {}  # sn -> None while running, its code once ended
        self.units: set[str] = set()
        with open(log_path, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "simulator.agenthost"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, env=env)
        self._reader = threading.Thread(target=self._read, name=f"agenthost-{self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("ev") == "ended":
                with self._cond:
                    self.codes[msg["sn"]] = int(msg["code"])
                    self._cond.notify_all()
            elif msg.get("ev") == "error":
                log.warning("agent host %d: %s", self.proc.pid, msg)
                sn = msg.get("sn")
                with self._cond:  # a start that failed: the player sees the unit as exited and starts it again
                    if sn in self.codes and self.codes[sn] is None:
                        self.codes[sn] = 1
                        self._cond.notify_all()
        code = self.proc.wait()
        with self._cond:  # the host itself is gone: so is every agent it ran
            for sn, c in self.codes.items():
                if c is None:
                    self.codes[sn] = code if code else 1
            self._cond.notify_all()

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def start(self, sn: str, config: Path) -> HostedAgent:
        with self._cond:
            self.codes[sn] = None
        self.units.add(sn)
        self.send(op="start", sn=sn, config=str(config))
        return HostedAgent(self, sn)

    def close(self, timeout: float = 20.0) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.send(op="quit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


class HostedAgent:
    """One unit's agent in a host, with the part of ``subprocess.Popen`` the player uses."""

    def __init__(self, host: HostProcess, sn: str) -> None:
        self.host, self.sn = host, sn

    @property
    def pid(self) -> int:
        return self.host.pid

    @property
    def returncode(self) -> int | None:
        with self.host._cond:
            return self.host.codes.get(self.sn)

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self.host.send(op="halt" if sig == signal.SIGKILL else "stop", sn=self.sn)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        import subprocess
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        with self.host._cond:
            while self.host.codes.get(self.sn) is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(f"agent {self.sn}", timeout or 0)
                self.host._cond.wait(left)
            code = self.host.codes[self.sn]
        assert code is not None
        return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    import faulthandler

    faulthandler.enable()  # a crash in C (25 agents' TLS, SQLite, ptys in one process) leaves its stacks in the log
    from agent.logs import setup

    setup(args.log_level)  # to stdout: moved to stderr below, stdout carries the protocol
    root = logging.getLogger()
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    for h in root.handlers:
        for f in h.filters:
            fallback.addFilter(f)  # the redactor
    logs = _PerUnitLog(fallback)
    logs.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [logs]
    warm_up()
    host = Host(logs)
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
                op, sn = msg["op"], msg.get("sn", "")
            except (ValueError, KeyError, TypeError):
                _emit(ev="error", error=f"bad request: {line[:200]}")
                continue
            if op == "start":
                host.start(sn, msg["config"])
            elif op == "stop":
                host.end(sn, 0)
            elif op == "halt":
                host.end(sn, -9)
            elif op == "quit":
                break
            else:
                _emit(ev="error", sn=sn, error=f"unknown op {op!r}")
    except (ValueError, OSError):  # stdin closed by SIGTERM
        pass
    host.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
