"""A fleet on this machine: a real fleet CA, a real Mosquitto, the real server and real agent processes.

Used by the demo, the simulator and the tests. Everything listens on free loopback ports
(the server's HTTP port can be fixed) and lives in one working directory.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from agent.enroll import make_key_and_csr
from pki.ca import FleetCA, write_broker_config

PASS = "local-fleet-ca-passphrase"
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


_SETPRIV = shutil.which("setpriv")  # util-linux


def _popen(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a broker, server or agent that gets SIGTERM from the kernel when the process that started it dies
    (Linux ``PR_SET_PDEATHSIG``, set by ``setpriv`` before it execs the command), so a demo or test harness
    killed outright (SIGKILL, an OOM kill) leaves no processes behind holding ports and ptys. (Not a
    ``preexec_fn``: Python code between fork and exec can deadlock in a process with threads.) The signal follows
    the starting *thread*, so only children started by the main thread get it: a helper thread that ends (a test
    playing systemd's restarts) must not take its processes with it."""
    if _SETPRIV and sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        cmd = [_SETPRIV, "--pdeathsig", "TERM", "--", *cmd]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask a child process to stop with ``sig``; kill it if it has not within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Pki:
    def __init__(self, root: Path) -> None:
        root = root.resolve()  # the configs written below name these files; relative paths would be read elsewhere
        self.dir = root
        self.ca = FleetCA.init(root, PASS)
        self.ca.issue_broker(["localhost", "127.0.0.1"])
        self.ca.issue_server_client()
        self._terminals: dict[str, Path] = {}

    def terminal(self, sn: str) -> Path:
        """A directory with terminal.key (made 'on the terminal'), terminal.pem and ca.pem."""
        if sn in self._terminals:
            return self._terminals[sn]
        d = self.dir / "terminals" / sn
        _key, csr = make_key_and_csr(sn, d)
        (d / "terminal.pem").write_bytes(self.ca.sign_csr(csr.read_bytes()))
        shutil.copy(self.dir / "ca.pem", d / "ca.pem")
        self._terminals[sn] = d
        return d


class Broker:
    def __init__(self, pki: Pki, workdir: Path) -> None:
        self.pki = pki
        self.port = free_port()
        self.workdir = workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = write_broker_config(pki.dir, self.port, data_dir=workdir, user=getpass.getuser(),
                                        name=f"mosquitto-{self.port}.conf")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    def start(self) -> Broker:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = _popen([mosquitto, "-c", str(self.conf)], self.log)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 10, "mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Server:
    def __init__(self, pki: Pki, broker: Broker, workdir: Path, clock: dict[str, Any] | None = None,
                 extra: str = "", http_port: int | None = None, storage: str | None = None) -> None:
        self.workdir = workdir = workdir.resolve()  # server.toml's paths are read relative to server.toml's folder
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self._port_chosen = http_port is None  # ours to change if another process takes it first
        self.db = workdir / "fleet.sqlite"
        self.storage_url = storage or f"sqlite:///{self.db}"  # storage: a postgresql:// URL instead of self.db
        clock_toml = ""
        if clock:
            clock_toml = f"[clock]\nspeed = {clock['speed']}\nstart = \"{clock['start']}\"\nanchor = {clock['anchor']}\n"
            if clock.get("schedule"):
                clock_toml += f"schedule = {[[float(t), float(v)] for t, v in clock['schedule']]}\n"
            if clock.get("file"):  # virtual time (wire.clock.FileClock)
                clock_toml += f"file = \"{clock['file']}\"\n"
        self.config = workdir / "server.toml"
        self.config.write_text(f"""
retention_days = 3650
[mqtt]
host = "localhost"
port = {broker.port}
ca_file = "{pki.dir}/ca.pem"
cert_file = "{pki.dir}/server-client.pem"
key_file = "{pki.dir}/server-client.key"
[storage]
url = "{self.storage_url}"
[http]
host = "127.0.0.1"
port = {self.http_port}
{clock_toml}{extra}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"
        self.tokens: dict[str, str] = {}
        self._http: httpx.Client | None = None  # one client for every call: a new one costs ~37 ms of CPU

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def token(self, role: str = "admin") -> str:
        if role not in self.tokens:
            out = subprocess.run(
                [sys.executable, "-m", "posfleet", "server", "token", "create", "--config", str(self.config),
                 "--name", f"test-{role}", "--role", role], capture_output=True, text=True, check=True, env=ENV)
            self.tokens[role] = out.stdout.strip().splitlines()[-1]
        return self.tokens[role]

    def start(self) -> Server:
        self.token("admin")
        for _attempt in range(3):
            self.proc = _popen([sys.executable, "-m", "posfleet", "server", "run", "--config", str(self.config)],
                               self.log, ENV)
            wait_for(lambda: self._healthy() or self.proc.poll() is not None, 30, "server /healthz and ingest")
            if self.proc.poll() is None:
                return self
            # a free port is free only when it is chosen: another process (a parallel test's) can bind it first
            if not (self._port_chosen and "address already in use" in self.log.read_text()[-3000:].lower()):
                break
            old, self.http_port = self.http_port, free_port()
            text = self.config.read_text()
            self.config.write_text(text.replace(f'[http]\nhost = "127.0.0.1"\nport = {old}\n',
                                                f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'))
        raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")

    def _healthy(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1)
            return r.status_code == 200 and r.json()["ingest"]["connected"]
        except httpx.HTTPError:
            return False

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=10)
        return self._http

    def get(self, path: str, role: str = "admin", **params: Any) -> httpx.Response:
        return self._client().get(f"http://127.0.0.1:{self.http_port}{path}", params=params,
                                  headers={"Authorization": f"Bearer {self.token(role)}"})

    def request(self, method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(role)}", **kw.pop("headers", {})}
        return self._client().request(method, f"http://127.0.0.1:{self.http_port}{path}", headers=headers, **kw)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, 10)
        self.proc = None
        if self._http is not None:
            self._http.close()
            self._http = None


def agent_config(pki: Pki, broker: Broker, sn: str, data_dir: Path, *, cert_sn: str | None = None,
                 extra: str = "", link: str = "", sampling_interval: int = 60, clock: dict[str, Any] | None = None,
                 peripherals: dict[str, tuple[str, str]] | None = None) -> Path:
    """Write an agent TOML; ``peripherals`` maps modem/printer/idcard to (port, profile)."""
    tdir = pki.terminal(cert_sn or sn)
    data_dir.mkdir(parents=True, exist_ok=True)
    clock_toml = ""
    if clock:
        clock_toml = f"[clock]\nspeed = {clock['speed']}\nstart = \"{clock['start']}\"\nanchor = {clock['anchor']}\n"
    for kind, (port, profile) in (peripherals or {}).items():
        extra += f"\n[peripherals.{kind}]\nport = \"{port}\"\nprofile = \"{profile}\"\n"
    path = data_dir.parent / f"agent-{sn}-{data_dir.name}.toml"
    path.write_text(f"""
sn = "{sn}"
data_dir = "{data_dir}"
[link]
host = "localhost"
port = {broker.port}
ca_file = "{tdir}/ca.pem"
cert_file = "{tdir}/terminal.pem"
key_file = "{tdir}/terminal.key"
reconnect_min_s = 0.2
reconnect_max_s = 2.0
{link}
[sampling]
interval_s = {sampling_interval}
{clock_toml}{extra}
""")
    return path


class AgentProc:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        self.proc = _popen([sys.executable, "-m", "posfleet", "agent", "run", "--config", str(self.config)], self.log, ENV)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 10)
