"""``posfleet demo``: a whole fleet on this machine in one command, with a dashboard worth looking at.

What runs: a fleet CA, a Mosquitto broker (TLS, ACL) on a free loopback port, the fleet server on
http://127.0.0.1:8080 (or the next free port) and ~50 real agent processes, each driving an emulated modem,
printer and ID card reader over pseudo-terminals. Agents and server share one accelerated clock
(``[clock] speed``, default 60: a simulated minute per real second), so hours close and the roll-ups move while
you watch.

What the dashboard shows from the first minute: counties and institutions are registered through the API, and
``--history-days`` of past telemetry (service hours, random peripheral faults, link cuts, slow links, power cuts
and one county-wide carrier outage) is published over MQTT with each terminal's own certificate, through the
real ingest, before the live agents start. Live, a random peripheral fault or a power cut (the agent stopped,
then started again) hits a terminal every few simulated minutes.

The pure parts (:func:`plan_fleet`, :func:`random_episodes`, :func:`history_samples`) are also what the
dashboard's browser tests use to build their data.
"""

from __future__ import annotations

import random
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

TZ = ZoneInfo("Asia/Shanghai")
MODEMS = ["quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s", "fibocom-l610"]
PRINTERS = ["generic-58mm", "generic-80mm"]
# (PLMN, operator name as the modem reports it, short name)
CARRIERS = [("46000", "CHINA MOBILE", "CMCC"), ("46001", "CHINA UNICOM", "UNICOM"), ("46011", "CHINA TELECOM", "CT")]
# made-up places, shaped like Hainan's: (county, region, towns)
COUNTIES = [
    ("琼中县", "海南省", ["营根镇", "湾岭镇", "黎母山镇"]),
    ("白沙县", "海南省", ["牙叉镇", "七坊镇", "邦溪镇"]),
    ("五指山市", "海南省", ["通什镇", "南圣镇", "毛阳镇"]),
    ("屯昌县", "海南省", ["屯城镇", "新兴镇", "枫木镇"]),
    ("定安县", "海南省", ["定城镇", "新竹镇", "龙湖镇"]),
]
VILLAGES = ["新市村", "红星村", "什运村", "长安村", "大坡村", "南丰村"]
VENDORS = [("百富", "A930"), ("新大陆", "N910"), ("联迪", "M20")]
CENTRE_HOURS = "08:00-17:30"
CLINIC_HOURS = "mon-sat=08:00-12:00,14:30-18:00"
POWER_ON = (7 * 60 + 30, 18 * 60 + 30)  # minutes of the local day a clinic's terminal is switched on

# episode kinds -> what the samples say
DEVICE_FAULTS = {"printer_paper_out": ("printer", "paper_out"), "printer_cover_open": ("printer", "cover_open"),
                 "idcard_fault": ("idcard", "reader_fault"), "sim_missing": ("modem", "sim_missing")}
NETWORK_FAULTS = ("link_down", "slow_link")
EPISODE_KINDS = (*DEVICE_FAULTS, *NETWORK_FAULTS, "power_off")
# live faults: emulator fault switches
LIVE_FAULTS = {"printer": ["printer_paper_out", "printer_cover_open"], "modem": ["sim_missing"],
               "idcard": ["idcard_reader_fault"]}


@dataclass(frozen=True)
class DemoInstitution:
    code: str
    name: str
    county: str
    region: str
    type: str
    hours: str


@dataclass(frozen=True)
class DemoUnit:
    sn: str
    institution: str
    county: str
    link_type: str
    vendor: str
    model: str
    modem: str
    printer: str
    plmn: str
    operator: str
    short_name: str
    imsi: str
    iccid: str

    @property
    def imei(self) -> str:
        """Its modem's own IMEI (Luhn-checked), in the history it publishes and from its emulated modem alike."""
        from simulator.emulators.modem import imei_for

        return imei_for(self.sn)

    def serve_modem(self, seed: int = 7) -> Any:
        """Its emulated modem on a pty, answering with this unit's SIM and its own IMEI."""
        from simulator.emulators import modem

        return modem.serve(self.modem, iccid=self.iccid, imsi=self.imsi, imei=self.imei, plmn=self.plmn,
                           operator_name=self.operator, short_name=self.short_name, seed=seed)

    def registry_record(self) -> dict[str, Any]:
        return {"sn": self.sn, "insurance_sn": "YB" + self.sn[2:], "terminal_type": "医保POS", "model": self.model,
                "vendor": self.vendor, "institution": self.institution, "stock_type": "deployed",
                "status": "in_service", "link_type": self.link_type}


@dataclass(frozen=True)
class Episode:
    """Something wrong with one unit over ``[start, end)`` (epoch seconds)."""

    sn: str
    start: int
    end: int
    kind: str


@dataclass
class FleetPlan:
    institutions: list[DemoInstitution]
    units: list[DemoUnit]
    by_sn: dict[str, DemoUnit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_sn = {u.sn: u for u in self.units}


def plan_fleet(units: int, seed: int = 1) -> FleetPlan:
    """``units`` terminals in 5 counties: each county a township health centre (wired, 2 terminals) and village
    clinics (4G VPDN, 1 terminal each); carriers, modems, printers and vendors spread across the fleet."""
    rng = random.Random(seed)
    insts: list[DemoInstitution] = []
    out: list[DemoUnit] = []
    i = 0
    per_county = max(1, -(-units // len(COUNTIES)))
    for c, (county, region, towns) in enumerate(COUNTIES):
        left = min(per_county, units - i)
        if left <= 0:
            break
        code = f"HC{c + 1:02d}01"
        insts.append(DemoInstitution(code, f"{county}{towns[0]}卫生院", county, region, "health_centre", CENTRE_HOURS))
        slots = [(code, "wired")] * min(2, left)
        for k in range(left - len(slots)):
            vcode = f"VC{c + 1:02d}{k + 1:02d}"
            name = f"{county}{towns[k % len(towns)]}{VILLAGES[k % len(VILLAGES)]}卫生室"
            insts.append(DemoInstitution(vcode, name, county, region, "village_clinic", CLINIC_HOURS))
            slots.append((vcode, "4g_vpdn"))
        for inst, link in slots:
            plmn, op, short = CARRIERS[rng.randrange(len(CARRIERS))] if link == "4g_vpdn" else CARRIERS[0]
            vendor, model = VENDORS[i % len(VENDORS)]
            out.append(DemoUnit(
                sn=f"HN{46900001 + i:08d}", institution=inst, county=county, link_type=link, vendor=vendor, model=model,
                modem=MODEMS[i % len(MODEMS)], printer=PRINTERS[i % len(PRINTERS)], plmn=plmn, operator=op,
                short_name=short, imsi=f"{plmn}{rng.randrange(10**9, 10**10)}",
                iccid=f"8986{plmn[3:]}{rng.randrange(10**13, 10**14)}"))
            i += 1
    return FleetPlan(insts, out)


def random_episodes(plan: FleetPlan, start: int, end: int, seed: int = 1, per_unit_day: float = 0.25) -> list[Episode]:
    """Random faults over ``[start, end)``: about ``per_unit_day`` episodes per unit and day, a few units far
    worse than the rest (so some are flagged), and one county-wide carrier outage."""
    rng = random.Random(seed)
    eps: list[Episode] = []
    days = max(1, (end - start) // 86400)
    troubled = {u.sn for u in rng.sample(plan.units, k=max(1, len(plan.units) // 10))}
    for u in plan.units:
        n = int(days * per_unit_day * (6 if u.sn in troubled else 1) + rng.random())
        for _ in range(n):
            kind = rng.choice(EPISODE_KINDS)
            a = start + rng.randrange(max(1, end - start - 3600))
            dur = rng.choice([10, 20, 30, 45, 60, 90, 180, 300]) * 60
            eps.append(Episode(u.sn, a, min(end, a + dur), kind))
    if plan.units and end - start > 2 * 86400:
        county = plan.units[0].county
        day = datetime.fromtimestamp(start + (end - start) // 2, TZ).replace(hour=10, minute=0, second=0)
        a = int(day.timestamp())
        eps += [Episode(u.sn, a, a + 75 * 60, "link_down") for u in plan.units if u.county == county]
    return sorted(eps, key=lambda e: (e.start, e.sn))


def history_samples(unit: DemoUnit, start: int, end: int, interval: int, episodes: Iterable[Episode],
                    seed: int = 1, first_seq: int = 1) -> list[Any]:
    """The samples a terminal would have sent over ``[start, end)``: one every ``interval`` s while it is
    switched on (07:30-18:30 local), none during a power cut, checks and link as the episodes say."""
    from wire.messages import Check, FsStat, Sample

    rng = random.Random(f"{seed}-{unit.sn}")
    mine = [e for e in episodes if e.sn == unit.sn]
    out = []
    seq = first_seq
    segs = retrans = 0
    t = start - start % interval
    while t < end:
        local = datetime.fromtimestamp(t, TZ)
        minute = local.hour * 60 + local.minute
        active = [e.kind for e in mine if e.start <= t < e.end]
        if POWER_ON[0] <= minute < POWER_ON[1] and "power_off" not in active:
            checks = {"printer": Check(0), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}
            for kind in active:
                if kind in DEVICE_FAULTS:
                    name, why = DEVICE_FAULTS[kind]
                    checks[name] = Check(1, why)
            connected = "link_down" not in active
            rtt = rng.randint(520, 900) if "slow_link" in active else rng.randint(35, 140)
            segs += rng.randint(20, 60)
            retrans += 1 if rng.random() < 0.02 else 0
            out.append(Sample(
                seq=seq, ts=t, interval=interval, connected=connected, rtt_ms=rtt if connected else None,
                rtt_var_ms=rng.randint(3, 25) if connected else None, retrans=retrans, segs_out=segs,
                cpu=round(rng.uniform(3, 35), 1), mem_used_mb=rng.randint(380, 620), mem_avail_mb=rng.randint(1300, 1600),
                fs=[FsStat("/", 16000, 6200 + (t - start) // 86400 * 3, True)], uptime_s=minute * 60 - POWER_ON[0] * 60,
                checks=checks, signal_dbm=None if unit.link_type == "wired" else rng.randint(-95, -65),
                csq=None if unit.link_type == "wired" else rng.randint(10, 28)))
            seq += 1
        t += interval
    return out


def history_events(unit: DemoUnit, ts: int) -> list[Any]:
    """What the terminal's agent reports when it first sees its modem and software: identity and inventory."""
    from wire.messages import Event

    n = int(unit.sn[-3:])
    ident = {"iccid": unit.iccid, "imsi": unit.imsi, "imei": unit.imei, "carrier": unit.operator,
             "mcc_mnc": unit.plmn, "modem_model": unit.modem.split("-")[-1].upper(), "modem_firmware": "demo-1.0"}
    inventory = {"agent": "0.1.0", "components": {"pos_app": ["3.2.1", "3.2.0", "3.1.9"][n % 3],
                                                  "base_os": "2.4.0", "evoucher_sdk": ["1.8.0", "1.7.2"][n % 2]}}
    return [Event(seq=1, ts=ts, kind="identity", data=ident), Event(seq=2, ts=ts, kind="inventory", data=inventory)]


# I/O: registry over the API, history over MQTT -----------------------------------------------------------
def register_fleet(base_url: str, token: str, plan: FleetPlan, in_service_since: int) -> None:
    """Institutions and units through the registry API; each unit in service since ``in_service_since``."""
    import httpx

    since = datetime.fromtimestamp(in_service_since, TZ).isoformat()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        for inst in plan.institutions:
            body = {"name": inst.name, "county": inst.county, "region": inst.region, "type": inst.type,
                    "hours": inst.hours}
            c.put(f"/api/v1/institutions/{inst.code}", json=body).raise_for_status()
        for u in plan.units:
            c.put(f"/api/v1/registry/units/{u.sn}", json=u.registry_record()).raise_for_status()
            c.post(f"/api/v1/registry/units/{u.sn}/status",
                   json={"status": "in_service", "at": since, "note": "demo: deployed"}).raise_for_status()


def publish_history(pki: Any, broker_port: int, samples: dict[str, list[Any]],
                    events: dict[str, list[Any]] | None = None, epoch: int = 7) -> int:
    """Publish each unit's samples as its own terminal would (its certificate, its topic, QoS 1); returns the
    number of samples sent. Run before the unit's agent starts (one MQTT session per terminal)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from wire import codec
    from wire.messages import Batch

    sent = 0
    for sn, items in samples.items():
        if not items:
            continue
        t = pki.terminal(sn)
        ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
        ctx.load_cert_chain(str(t / "terminal.pem"), str(t / "terminal.key"))
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sn, protocol=mqtt.MQTTv5)
        c.tls_set_context(ctx)
        c.max_inflight_messages_set(50)
        c.connect("localhost", broker_port)
        c.loop_start()
        try:
            infos = [c.publish(f"pf/{sn}/t", codec.encode(Batch(
                sn=sn, epoch=epoch, samples=items[i: i + 200], events=(events or {}).get(sn, []) if i == 0 else [])), qos=1)
                for i in range(0, len(items), 200)]
            for info in infos:
                info.wait_for_publish(60)
            sent += len(items)
        finally:
            c.disconnect()
            c.loop_stop()
    return sent


def wait_ingested(base_url: str, token: str, stored_at_least: int, since: int, timeout: float = 300) -> None:
    """Until the server has stored ``stored_at_least`` samples and counted every closed hour since ``since``
    (the hour in progress is counted when it closes)."""
    import httpx

    from simulator.local import wait_for

    h = {"Authorization": f"Bearer {token}"}

    def done() -> bool:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).json()["ingest"]["samples_stored"] < stored_at_least:
                return False
            rolled = httpx.get(f"{base_url}/api/v1/availability/status", headers=h, timeout=30).json()["rolled_to"]
            if isinstance(rolled, str):  # the API's times are ISO 8601 with the offset (docs/api.md)
                rolled = int(datetime.fromisoformat(rolled).timestamp())
            if rolled is None or rolled <= since:
                return True
            r = httpx.get(f"{base_url}/api/v1/availability", headers=h, timeout=30, params={
                "from": datetime.fromtimestamp(since, TZ).isoformat(), "to": datetime.fromtimestamp(rolled, TZ).isoformat()})
            return bool(r.status_code == 200 and r.json()["complete"])
        except httpx.HTTPError:
            return False

    wait_for(done, timeout, f"{stored_at_least} samples stored and counted", interval=0.5)


# the demo -------------------------------------------------------------------------------------------------
def run_demo(workdir: Path, units: int, http_port: int, interval: int, speed: float, history_days: int,
             fresh: bool, seed: int | None, storage: str = "") -> None:
    from simulator.emulators import idcard, printer
    from simulator.local import AgentProc, Broker, Pki, Server, agent_config, free_port, port_open

    # Ctrl-C must stop the demo even when it was started with SIGINT ignored (a background job of a shell without
    # job control, nohup, some CI runners): that disposition is inherited, and Python then never raises
    # KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = workdir.resolve()  # the default is relative (.demo); every config written below names absolute paths
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    anchor = time.time()
    clock = {"speed": speed, "start": datetime.fromtimestamp(anchor, TZ).isoformat(timespec="seconds"), "anchor": anchor}
    sim_now = lambda: anchor + (time.time() - anchor) * speed  # noqa: E731
    click.echo(f"working directory: {workdir}  (seed {seed}, clock x{speed:g})")
    pki = Pki(workdir / "pki") if not (workdir / "pki" / "ca.pem").exists() else _reopen(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    port = http_port if not port_open(http_port) else free_port()
    server = Server(pki, broker, workdir / "server", clock=clock, http_port=port, storage=storage or None).start()
    base = f"http://127.0.0.1:{server.http_port}"
    token = server.token("admin")
    viewer = server.token("viewer")
    plan = plan_fleet(units, seed)
    devices: list[Any] = []
    agents: dict[str, AgentProc] = {}
    emulators: dict[str, dict[str, Any]] = {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        now = int(sim_now())
        today = datetime.fromtimestamp(now, TZ).date()
        first = int(datetime.combine(today - timedelta(days=history_days), datetime.min.time(), TZ).timestamp())
        register_fleet(base, token, plan, first)
        if history_days > 0:
            click.echo(f"publishing {history_days} days of history for {len(plan.units)} terminals ...")
            eps = random_episodes(plan, first, now, seed)
            samples = {u.sn: history_samples(u, first, now, 900, eps, seed) for u in plan.units}
            n = publish_history(pki, broker.port, samples, {u.sn: history_events(u, first) for u in plan.units})
            wait_ingested(base, token, n, first)
            click.echo(f"  {n} samples stored and counted")
        for i, u in enumerate(plan.units):
            m = u.serve_modem(seed=i)
            p = printer.serve(u.printer)
            c = idcard.serve("generic-sam", card=None)
            devices += [m, p, c]
            emulators[u.sn] = {"modem": m.emulator, "printer": p.emulator, "idcard": c.emulator}
            cfg = agent_config(pki, broker, u.sn, workdir / "agents" / u.sn, sampling_interval=interval, clock=clock,
                               link="batch_interval_s = 0", peripherals={
                                   "modem": (m.path, u.modem), "printer": (p.path, u.printer),
                                   "idcard": (c.path, "generic-sam")})
            agents[u.sn] = AgentProc(cfg, workdir / "agents" / f"{u.sn}.log").start()
        click.echo(f"""
posfleet demo is running: {len(plan.units)} terminals in {len({u.county for u in plan.units})} counties, \
{len(plan.institutions)} institutions; clock x{speed:g}, a sample every {interval} simulated s.

  dashboard:     {base}/dashboard/
  admin token:   {token}
  viewer token:  {viewer}
  API docs:      {base}/docs

  each unit's health (online, latest sample, versions):
  curl -s -H 'Authorization: Bearer {token}' '{base}/api/v1/units?limit=5' | python3 -m json.tool
  fleet summary:
  curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/analytics/live | python3 -m json.tool

Every few simulated minutes a terminal gets a random fault (paper out, cover open, SIM missing, ID card
reader fault, or a power cut), which clears a while later. Ctrl-C stops everything.
""")
        _fault_loop(stop, rng, emulators, agents, interval / speed)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping...")
        for a in agents.values():
            if a.proc and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        for a in agents.values():
            a.stop()
        server.stop()
        broker.stop()
        for d in devices:
            d.stop()
        click.echo("stopped.")


def _fault_loop(stop: threading.Event, rng: random.Random, emulators: dict[str, dict[str, Any]],
                agents: dict[str, Any], sample_real_s: float) -> None:
    """One new fault every few samples' time; each clears after 3-12 samples' time."""
    active: list[tuple[float, str, str, str]] = []  # (until, sn, kind, fault)
    while not stop.wait(max(1.0, sample_real_s * 2)):
        now = time.monotonic()
        for item in [a for a in active if a[0] <= now]:
            until, sn, kind, fault = item
            if kind == "power":
                agents[sn].start()
            else:
                emulators[sn][kind].faults.discard(fault)
            active.remove(item)
        busy = {a[1] for a in active}
        sn = rng.choice([s for s in emulators if s not in busy] or list(emulators))
        until = now + sample_real_s * rng.randint(3, 12)
        if rng.random() < 0.15:
            agents[sn].stop()
            active.append((until, sn, "power", "power_cut"))
            click.echo(f"fault: {sn} power_cut")
            continue
        kind = rng.choice(list(LIVE_FAULTS))
        fault = rng.choice(LIVE_FAULTS[kind])
        emulators[sn][kind].faults.add(fault)
        active.append((until, sn, kind, fault))
        click.echo(f"fault: {sn} {fault}")


def _reopen(directory: Path) -> Any:
    from pki.ca import FleetCA
    from simulator.local import PASS, Pki

    pki = Pki.__new__(Pki)
    pki.dir = directory
    pki.ca = FleetCA(directory, PASS)
    pki._terminals = {}
    return pki


@click.command("demo")
@click.option("--dir", "workdir", default=".demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--units", default=50, show_default=True, help="simulated terminals")
@click.option("--port", "http_port", default=8080, show_default=True, help="server HTTP port (next free if taken)")
@click.option("--speed", default=60.0, show_default=True, help="clock speed for agents and server (60: a minute a second)")
@click.option("--interval", default=300, show_default=True, help="sample interval in simulated seconds")
@click.option("--history-days", default=30, show_default=True, help="days of past telemetry published at start")
@click.option("--fresh/--keep", default=True, show_default=True, help="start from an empty working directory")
@click.option("--seed", type=int, default=None)
@click.option("--storage", default="", help="the server stores here (postgresql://...) instead of a SQLite file in --dir")
def command(workdir: Path, units: int, http_port: int, speed: float, interval: int, history_days: int, fresh: bool,
            seed: int | None, storage: str) -> None:
    """Run a broker, the fleet server and simulated terminals on this machine; prints the dashboard URL."""
    run_demo(workdir, units, http_port, interval, speed, history_days, fresh, seed, storage)
