"""Light terminals for fan-out tests: 200 agent processes do not fit on two cores.

A ``LiteTerminal`` is a real MQTT client holding its own real terminal certificate (so the
broker ACL applies), with the real ``agent.commands.CommandExecutor`` verifying, recording and
executing every command, in its own data directory. What it leaves out is the rest of the
agent: sampling and the outbox. Its results go out as the agent's would (a ``Batch`` with one
``cmd`` event on ``pf/<sn>/t``, QoS 1) and its presence as the agent's retained state with a
last will. The server sees no difference and nothing on the server is replaced.
"""

from __future__ import annotations

import itertools
import queue
import random
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.commands import CommandExecutor
from agent.config import load
from agent.config_guard import ConfigGuard
from agent.peripherals import PeripheralSet
from simulator.local import ENV
from wire import codec, topics
from wire.clock import Clock
from wire.messages import Batch, Event, State
from wire.signing import verify_endorsed


class _LinkState:
    def __init__(self) -> None:
        self.connected = False

    def tcp_info(self) -> None:
        return None


class LiteTerminal:
    # 200 light terminals share this process: each checks signatures in place (the same verify_endorsed the
    # agent's child process runs) rather than starting 200 interpreters; the child itself is tested in
    # tests/agent/test_verify_child.py and by every test that runs ``posfleet agent run``.
    signed_check = staticmethod(verify_endorsed)

    def __init__(self, config: Path) -> None:
        self.cfg = load(config)
        self.sn = self.cfg.sn
        self.config_path = None
        self.data_dir = self.cfg.path(self.cfg.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.boot_id = f"lite{random.getrandbits(48):012x}"
        self.clock = Clock()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.guard = ConfigGuard(None)
        self.peripherals = PeripheralSet(self.cfg.peripherals)
        self.link = _LinkState()
        self.epoch = random.getrandbits(31)
        self._seq = itertools.count(1)
        self.commands = CommandExecutor(self)
        self._thread = threading.Thread(target=self._loop, name=f"lite-{self.sn}", daemon=True)
        self._stop = threading.Event()
        lc = self.cfg.link
        ctx = ssl.create_default_context(cafile=str(self.cfg.path(lc.ca_file)))
        ctx.load_cert_chain(str(self.cfg.path(lc.cert_file)), str(self.cfg.path(lc.key_file)))
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.sn, protocol=mqtt.MQTTv5)
        c.tls_set_context(ctx)
        c.will_set(topics.topic(self.sn, topics.STATE), codec.encode(State(online=False, reason="lost")), qos=1,
                   retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: setattr(self.link, "connected", False)
        c.on_message = lambda cl, u, m: self.events.put(("message", bytes(m.payload)))
        c.reconnect_delay_set(0.2, 2)
        self.client = c
        self.host, self.port = lc.host, lc.port

    def _on_connect(self, client, userdata, flags, rc, props) -> None:  # type: ignore[no-untyped-def]
        if rc.is_failure:
            return
        client.subscribe([(topics.topic(self.sn, topics.COMMAND), 1)])
        client.publish(topics.topic(self.sn, topics.STATE), codec.encode(State(online=True, ts=int(time.time()))),
                       qos=1, retain=True)
        self.link.connected = True

    # what CommandExecutor needs from the agent
    def store_event(self, event: Event) -> None:
        event.seq = next(self._seq)
        batch = Batch(sn=self.sn, epoch=self.epoch, events=[event])
        self.client.publish(topics.topic(self.sn, topics.TELEMETRY), codec.encode(batch), qos=1)

    def start(self) -> LiteTerminal:
        self.commands.start()
        self._thread.start()
        self.client.connect_async(self.host, self.port, keepalive=60)
        self.client.loop_start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, arg = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if kind == "message":
                self.commands.handle(arg)
            elif kind == "cmd_done":
                cid, ctype, code, output, started = arg
                self.commands.finish(cid, ctype, code, output, started)


    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.client.publish(topics.topic(self.sn, topics.STATE),
                                codec.encode(State(online=False, reason="shutdown")), qos=1,
                                retain=True).wait_for_publish(2)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()
        self.client.loop_stop()
        self.commands.stop()


def start_many(terminals: list[LiteTerminal], group: int = 10, timeout: float = 60.0) -> None:
    """Connect in small groups (as a fleet's jittered reconnects would): a burst of hundreds of TLS
    handshakes in one instant leaves some clients hanging in paho's first connect."""
    deadline = time.monotonic() + timeout
    for i in range(0, len(terminals), group):
        batch = terminals[i:i + group]
        for t in batch:
            t.start()
        while not all(t.link.connected for t in batch):
            if time.monotonic() > deadline:
                missing = [t.sn for t in terminals if not t.link.connected]
                raise AssertionError(f"{len(missing)} light terminals never connected: {missing[:5]}")
            time.sleep(0.05)


def executed(data_dir: Path) -> int:
    """Commands a terminal recorded as run or running (from its own commands.sqlite)."""
    db = data_dir / "commands.sqlite"
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return int(con.execute("SELECT count(*) FROM commands WHERE state<>'rejected'").fetchone()[0])
    finally:
        con.close()


class LiteGroup:
    """Light terminals in child processes of at most ``per_process`` each: paho waits on select(),
    which cannot watch descriptors above 1024, and each terminal holds about seven."""

    def __init__(self, configs: list[Path], per_process: int = 50) -> None:
        self.configs = configs
        self.per_process = per_process
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, timeout: float = 90) -> LiteGroup:
        for i in range(0, len(self.configs), self.per_process):
            part = self.configs[i:i + self.per_process]
            self.procs.append(subprocess.Popen([sys.executable, "-m", "tests.commands.lite", *map(str, part)],
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV))
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", line + p.stdout.read()[-2000:] if p.poll() is not None else line
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(paths: list[str]) -> None:
    terminals = [LiteTerminal(Path(p)) for p in paths]
    start_many(terminals)
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for t in terminals:
        t.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
