"""``posfleet demo``: a whole fleet on this machine in one command.

A fleet CA, a Mosquitto broker (TLS, ACL) on a free loopback port, the fleet server on
http://127.0.0.1:8080 (or the next free port), and N agents, each driving an emulated modem,
printer and ID card reader over pseudo-terminals, with random peripheral faults. Prints
the URL, an admin token and the commands to look at the fleet; Ctrl-C stops everything.
"""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from pathlib import Path

import click

from simulator.local import AgentProc, Broker, Pki, Server, agent_config, free_port, port_open

MODEMS = ["quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s", "fibocom-l610"]
PRINTERS = ["generic-58mm", "generic-80mm"]
FAULTS = {"printer": ["printer_paper_out", "printer_cover_open"], "modem": ["sim_missing"],
          "idcard": ["idcard_reader_fault"]}


def run_demo(workdir: Path, units: int, http_port: int, interval: int, fresh: bool, seed: int | None) -> None:
    from simulator.emulators import idcard, modem, printer

    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    click.echo(f"working directory: {workdir}")
    pki = Pki(workdir / "pki") if not (workdir / "pki" / "ca.pem").exists() else _reopen(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    port = http_port if not port_open(http_port) else free_port()
    server = Server(pki, broker, workdir / "server", http_port=port).start()
    token = server.token("admin")
    devices = []
    agents: list[AgentProc] = []
    emulators: dict[str, dict[str, object]] = {}
    try:
        for i in range(units):
            sn = f"HN{46900000 + i + 1:08d}"
            m = modem.serve(MODEMS[i % len(MODEMS)], iccid=f"8986011{i:013d}", imsi=f"46001{i:010d}")
            p = printer.serve(PRINTERS[i % 2])
            c = idcard.serve("generic-sam", card=None)
            devices += [m, p, c]
            emulators[sn] = {"modem": m.emulator, "printer": p.emulator, "idcard": c.emulator}
            cfg = agent_config(pki, broker, sn, workdir / "agents" / sn, sampling_interval=interval,
                               link="batch_interval_s = 0", peripherals={
                                   "modem": (m.path, MODEMS[i % len(MODEMS)]),
                                   "printer": (p.path, PRINTERS[i % 2]),
                                   "idcard": (c.path, "generic-sam")})
            agents.append(AgentProc(cfg, workdir / "agents" / f"{sn}.log").start())
        base = f"http://127.0.0.1:{server.http_port}"
        click.echo(f"""
posfleet demo is running: {units} terminals, samples every {interval} s.

  API docs:      {base}/docs
  admin token:   {token}

  curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/units | python3 -m json.tool
  curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/units/HN46900001/samples?limit=3 | python3 -m json.tool

Every {6 * interval} s one terminal gets a random peripheral fault (paper out, cover open, SIM missing,
ID card reader fault) which clears a while later. Ctrl-C stops everything.
""")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        active: list[tuple[float, object, str]] = []
        while not stop.wait(interval * 6):
            now = time.monotonic()
            for item in [a for a in active if a[0] <= now]:
                item[1].faults.discard(item[2])  # type: ignore[attr-defined]
                active.remove(item)
            sn = rng.choice(list(emulators))
            kind = rng.choice(list(FAULTS))
            fault = rng.choice(FAULTS[kind])
            emu = emulators[sn][kind]
            emu.faults.add(fault)  # type: ignore[attr-defined]
            active.append((now + interval * rng.randint(3, 12), emu, fault))
            click.echo(f"fault: {sn} {fault}")
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping...")
        for a in agents:
            a.stop()
        server.stop()
        broker.stop()
        for d in devices:
            d.stop()


def _reopen(directory: Path) -> Pki:
    from posfleet.ca import FleetCA
    from simulator.local import PASS

    pki = Pki.__new__(Pki)
    pki.dir = directory
    pki.ca = FleetCA(directory, PASS)
    pki._terminals = {}
    return pki


@click.command("demo")
@click.option("--dir", "workdir", default=".demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--units", default=5, show_default=True, help="simulated terminals")
@click.option("--port", "http_port", default=8080, show_default=True, help="server HTTP port (next free if taken)")
@click.option("--interval", default=10, show_default=True, help="sample interval in seconds")
@click.option("--fresh/--keep", default=True, show_default=True, help="start from an empty working directory")
@click.option("--seed", type=int, default=None)
def command(workdir: Path, units: int, http_port: int, interval: int, fresh: bool, seed: int | None) -> None:
    """Run a broker, the fleet server and simulated terminals on this machine."""
    run_demo(workdir, units, http_port, interval, fresh, seed)
