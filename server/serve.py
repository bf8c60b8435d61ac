"""``posfleet server run``: one process, or a primary and API-only workers sharing the port.

With ``http.api_workers = N`` (or ``--api-workers N``) and N > 1, this process binds the port with
``SO_REUSEPORT``, starts N - 1 API-only processes (``posfleet server run --api-only``) that bind it the same way,
and then serves as the primary: ingest, roll-ups, alerts, webhooks, retention, command dispatch, and the API.
With ``http.primary_api = false`` it starts N API-only processes instead and answers on the port itself not at
all (only on ``127.0.0.1:http.primary_port``), so heavy API requests never hold up ingest.
The kernel spreads new connections over the N listening sockets. A worker that dies is started again; the
workers end with the primary (they watch their parent). See docs/decisions/006-api-worker-processes.md.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .app import PRIMARY_PID_ENV

log = logging.getLogger(__name__)


def reuseport_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket with ``SO_REUSEPORT``: every server process binds its own on the same port. Only listening
    sockets are given connections; a bound one that does not listen just holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


class Workers:
    """The API-only processes of a primary: started, restarted when one dies, stopped with the primary."""

    def __init__(self, argv: list[str], n: int, stopping: Callable[[], bool] = lambda: False) -> None:
        self.argv = argv
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.stopping = stopping  # the primary is shutting down (a signal to the whole group ends the workers too)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="api-workers", daemon=True)

    def start(self) -> None:
        for i in range(len(self.procs)):
            self.procs[i] = self._spawn()
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # the worker watches this pid: taken from its own getppid() it would read 1 if this process died before the
        # worker got that far, and the worker would then never notice it is an orphan holding the port
        p = subprocess.Popen(self.argv, env={**os.environ, PRIMARY_PID_ENV: str(os.getpid())})
        log.info("API worker started: pid %d", p.pid)
        return p

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for i, p in enumerate(self.procs):
                if p is None or p.poll() is None:
                    continue
                if self._stop.wait(0.5) or self.stopping():  # e.g. SIGTERM to the service's whole process group
                    return
                log.error("API worker %d exited with %s; starting another", p.pid, p.returncode)
                self.procs[i] = self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _lower_priority(by: int) -> None:
    """This process (the primary, API workers started) runs ``by`` steps nicer, and so do the threads it starts
    after (MQTT, SQLite connections): on a host whose cores are all busy, the API workers' requests get the CPU
    first, and ingest and the background jobs what is left (decision 041). Only lowers: no privilege needed."""
    if by <= 0:
        return
    try:
        now = os.nice(by)
    except OSError as e:  # e.g. a seccomp filter without setpriority: run on at the same priority
        log.warning("the primary's CPU priority stays as it was (nice +%d refused: %s)", by, e)
        return
    log.info("primary %d at nice %d (API workers first when the cores are busy)", os.getpid(), now)


def run(settings: Any, config_path: str, log_level: str, api_workers: int | None = None, api_only: bool = False,
        port: int | None = None) -> None:
    import uvicorn

    from .app import create_app

    n = api_workers if api_workers is not None else settings.http.api_workers
    host = settings.http.host
    if n <= 1 and not api_only:  # one process, as before
        uvicorn.run(create_app(settings), host=host, port=settings.http.port, log_config=None, access_log=False)
        return
    sock = reuseport_socket(host, settings.http.port if port is None else port, listen=api_only or settings.http.primary_api)
    bound = sock.getsockname()[1]
    workers, held = None, None
    if not api_only:
        n_api = n - 1 if settings.http.primary_api else n
        workers = Workers([sys.executable, "-m", "posfleet", "server", "run", "--config", os.path.abspath(config_path),
                           "--log-level", log_level, "--api-only", "--port", str(bound)], n_api)
        workers.start()
        if settings.http.primary_api:
            log.info("primary %d and %d API worker(s) on %s:%d", os.getpid(), n_api, host, bound)
        else:  # the bound, not listening socket keeps the port ours; connections go to the workers only
            held, sock = sock, reuseport_socket("127.0.0.1", settings.http.primary_port)
            log.info("%d API worker(s) on %s:%d; primary %d (no API on that port) on 127.0.0.1:%d", n_api, host, bound,
                     os.getpid(), sock.getsockname()[1])
            _lower_priority(settings.http.primary_nice)
    app = create_app(settings, role="api" if api_only else "primary", publish_ingest=workers is not None)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    if workers is not None:
        workers.stopping = lambda: bool(server.should_exit)
    try:
        server.run(sockets=[sock])
    finally:
        if workers is not None:
            workers.stop()
        if held is not None:
            held.close()
