"""A PostgreSQL server of its own for the tests, the benchmarks and ``posfleet demo --storage postgresql``.

Made from the installed binaries (Debian's ``postgresql`` package: ``/usr/lib/postgresql/<major>/bin``, which
``./dev`` installs) with ``initdb`` in a fresh temporary folder, run as a child process on a free loopback port
and removed again: nothing depends on a server already running on the machine. ``initdb`` refuses to run as
root, so as root the cluster belongs to (and runs as) the ``postgres`` user the package creates.

The cluster is made with the C collation and UTF-8 (text sorts byte-wise, as in SQLite: an SN prefix is an index
range), trust authentication on the loopback address only, and a Unix socket in its own folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from simulator.local import _popen, free_port, port_open, stop_process


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (``initdb``, ``postgres``, ``pg_dump``, ...), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """``Postgres().start()``: a cluster on ``127.0.0.1:<port>``; ``url(db)`` names a database in it, ``create(db)``
    makes one; ``stop()`` stops the server and removes its folder."""

    def __init__(self, settings: dict[str, str] | None = None, port: int | None = None) -> None:
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql; ./dev does it)")
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.dir = Path(tempfile.mkdtemp(prefix="posfleet-pg-"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "run"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb will not run as root: the package's postgres user owns the cluster
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = [shutil.which("setpriv") or "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                        "--init-groups", "--"]
        self.sockets.mkdir()
        self.log.touch()
        if self._as:
            pw = pwd.getpwnam("postgres")
            os.chown(self.sockets, pw.pw_uid, pw.pw_gid)
            os.chown(self.log, pw.pw_uid, pw.pw_gid)

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, cwd=self.dir)

    def start(self, timeout: float = 60) -> Postgres:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "posfleet", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        opts = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.sockets),
                "max_connections": "200", **self.settings}
        cmd = [*self._as, str(self.bindir / "postgres"), "-D", str(self.data)]
        for k, v in opts.items():
            cmd += ["-c", f"{k}={v}"]
        self.proc = _popen(cmd, self.log)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept connections within {timeout} s")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        r = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "posfleet"],
                           capture_output=True)
        return r.returncode == 0

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://posfleet@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` with psql (unaligned, tuples only) and return its output."""
        r = subprocess.run([str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(db),
                            "-c", sql], capture_output=True, text=True, check=True)
        return r.stdout.strip()

    def create(self, db: str) -> str:
        """A new empty database; its URL."""
        self.psql(f'CREATE DATABASE "{db}"')
        return self.url(db)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, timeout=30)  # SIGINT: PostgreSQL's fast shutdown
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
