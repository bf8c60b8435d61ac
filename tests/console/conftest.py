"""A real agent process with its diagnostic console on one end of a pty cable, real emulated
peripherals, a real Mosquitto; the laptop side opens the other end of the cable."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from posfleet.diagconsole.client import ConsoleClient, ConsoleError
from simulator.emulators import idcard, modem, printer
from tests.console.cable import Cable
from tests.fleet import AgentProc, Broker, Pki, agent_config

COUNTY = "马山县"
SECRET = "s3cret-Passphrase-9"
SAMPLING_S = 5


@dataclass
class Rig:
    pki: Pki
    broker: Broker
    cable: Cable
    agent: AgentProc
    root: Path
    config: Path
    data_dir: Path
    revoked: Path
    rebooted: Path
    printer: object
    reader: object
    modem: object
    sn: str = "T-CONSOLE-1"

    def client(self, **kw: object) -> ConsoleClient:
        return ConsoleClient(self.cable.laptop_path, **kw)  # type: ignore[arg-type]

    def wait_console(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(ack_timeout=0.3, retries=2) as c:
                    c.hello()
                return
            except ConsoleError:
                if time.monotonic() > deadline or not self.agent.alive():
                    raise
                time.sleep(0.2)

    def audit(self) -> list[dict[str, object]]:
        path = self.data_dir / "console-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log_text(self) -> str:
        return (self.root / "agent.log").read_text(errors="replace")


def console_toml(rig_root: Path, pki: Pki, port: str, revoked: Path, idle: float = 10,
                 max_reply_bytes: int = 65536) -> str:
    return f"""
[console]
port = "{port}"
idle_minutes = {idle}
max_reply_bytes = {max_reply_bytes}
engineer_ca_file = "{pki.dir}/ca.pem"
revoked_file = "{revoked}"
county = "{COUNTY}"
[commands]
reboot_command = ["touch", "{rig_root}/rebooted"]
"""


@pytest.fixture(scope="module")
def rig(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("console")
    broker = Broker(pki, root / "broker").start()
    devs = [modem.serve("generic-3gpp"), printer.serve("generic-58mm"), idcard.serve("generic-sam")]
    revoked = root / "revoked.json"
    revoked.write_text('{"revoked": []}')
    cable = Cable().__enter__()
    data_dir = root / "data"
    config = agent_config(
        pki, broker, "T-CONSOLE-1", data_dir,
        link=f'key_passphrase = "{SECRET}"',
        extra=console_toml(root, pki, cable.terminal_path, revoked),
        sampling_interval=SAMPLING_S,  # status shows the checks of a sample taken within the first seconds
        peripherals={"modem": (devs[0].path, "generic-3gpp"), "printer": (devs[1].path, "generic-58mm"),
                     "idcard": (devs[2].path, "generic-sam")},
    )
    agent = AgentProc(config, root / "agent.log").start()
    rig = Rig(pki, broker, cable, agent, root, config, data_dir, revoked, root / "rebooted", devs[1], devs[2],
              devs[0])
    try:
        rig.wait_console()
        yield rig
    finally:
        agent.stop()
        cable.__exit__()
        for d in devs:
            d.stop()
        broker.stop()
        assert "Traceback" not in rig.log_text(), rig.log_text()[-4000:]
