"""A running fleet with known history, and a real headless Chromium looking at its dashboard.

The fleet is the product's own (simulator.local): a real Mosquitto, the real server process on a fixed clock
(2025-03-20 15:30 Shanghai, running at real speed from there), institutions and units registered through the
API, and 20 days of telemetry published over MQTT by each terminal's certificate (posfleet.demo builds it),
with a few faults placed by hand so the tests know what the page must show.

Chromium is the distribution's package (./dev installs it); without it these tests skip, saying so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from posfleet.demo import (
    TZ,
    Episode,
    FleetPlan,
    history_events,
    history_samples,
    plan_fleet,
    publish_history,
    register_fleet,
    wait_ingested,
)
from tests.dashboard.cdp import Browser, chromium_path
from tests.fleet import Broker, Pki, Server

NOW = "2025-03-20T15:30:00+08:00"
HISTORY_FROM = "2025-03-01T00:00:00+08:00"
REPO = Path(__file__).resolve().parents[2]


def at(text: str) -> int:
    """Epoch seconds of an ISO time; without an offset it is Shanghai's wall time."""
    dt = datetime.fromisoformat(text)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=TZ)).timestamp())


def pct(v: float | None) -> str:
    """The page's ``(v * 100).toFixed(2) + "%"``: JS rounds the exact double, ties up."""
    if v is None:
        return "—"
    return f"{Decimal(v * 100).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)}%"


def shots_dir(tmp: Path) -> Path:
    """docs/screenshots when POSFLEET_SCREENSHOTS=1 (to refresh the committed ones), else a temporary folder."""
    return REPO / "docs" / "screenshots" if os.environ.get("POSFLEET_SCREENSHOTS") == "1" else tmp


# hand-placed faults (local times)
PAPER_OUT = ("HN46900001", "2025-03-19 10:00", "2025-03-19 10:45")
POWER_CUT = ("HN46900004", "2025-03-10 00:00", "2025-03-12 00:00")
OUTAGE = ("2025-03-17 10:00", "2025-03-17 11:15")  # every unit of the first county: a carrier outage


# Tracebacks in the server log that belong to other packages' open bugs (none open now).
KNOWN_BUGS: tuple[str, ...] = ()


@dataclass
class Fleet:
    server: Server
    plan: FleetPlan
    base: str
    month: dict[str, str]

    def api(self, path: str, role: str = "admin", **params: Any) -> Any:
        r = self.server.get(path, role, **params)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r.json()


def episodes(plan: FleetPlan) -> list[Episode]:
    out = [Episode(PAPER_OUT[0], at(PAPER_OUT[1]), at(PAPER_OUT[2]), "printer_paper_out"),
           Episode(POWER_CUT[0], at(POWER_CUT[1]), at(POWER_CUT[2]), "power_off")]
    county = plan.units[0].county
    out += [Episode(u.sn, at(OUTAGE[0]), at(OUTAGE[1]), "link_down") for u in plan.units if u.county == county]
    return out


@contextmanager
def running(root: Path, **server: Any) -> Iterator[tuple[Pki, Broker, Server]]:
    """A CA, a Mosquitto and a server at ``root`` (skipped without Chromium); on the way out both stopped and
    the server log checked for tracebacks other than :data:`KNOWN_BUGS`."""
    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; ./dev installs it)")
    pki = Pki(root / "pki")
    broker = Broker(pki, root / "broker").start()
    srv = Server(pki, broker, root / "server", **server).start()
    try:
        yield pki, broker, srv
    finally:
        srv.stop()
        broker.stop()
        log = root / "server" / "server.log"
        if log.exists():
            unexplained = [t for t in log.read_text().split("Traceback")[1:] if not any(k in t for k in KNOWN_BUGS)]
            assert not unexplained, "Traceback" + unexplained[0][-4000:]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    extra = "[availability]\nrecount_debounce_s = 0.5\n[alerts]\nsettle_s = 0\n"
    clock = {"speed": 1.0, "start": NOW, "anchor": time.time()}
    with running(tmp_path_factory.mktemp("dash"), clock=clock, extra=extra) as (pki, broker, server):
        base = f"http://127.0.0.1:{server.http_port}"
        token = server.token("admin")
        plan = plan_fleet(12, seed=3)
        start, end = at(HISTORY_FROM), at(NOW)
        register_fleet(base, token, plan, start)
        eps = episodes(plan)
        n = publish_history(pki, broker.port, {u.sn: history_samples(u, start, end, 900, eps, seed=3) for u in plan.units},
                            {u.sn: history_events(u, start) for u in plan.units})
        wait_ingested(base, token, n, start, timeout=90)
        yield Fleet(server, plan, base, {"from": "2025-03-01T00:00:00+08:00", "to": "2025-04-01T00:00:00+08:00"})


@pytest.fixture(scope="module")
def browser(fleet: Fleet) -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def sign_in(b: Browser, fleet: Fleet, role: str = "viewer") -> None:
    """Through the login form, as a person would."""
    b.goto(f"{fleet.base}/dashboard/#/login")
    b.ready("login")
    b.eval(f"document.getElementById('token').value = {fleet.server.token(role)!r}")
    b.click("#sign-in")
    b.ready("fleet")


def goto(b: Browser, fleet: Fleet, hash_: str, view: str) -> None:
    b.eval(f"document.getElementById('main').dataset.state = 'navigating'; location.hash = {hash_!r}")
    b.ready(view)


def wait_trend(b: Browser) -> None:
    b.wait("document.getElementById('trend') && document.getElementById('trend').dataset.state === 'ready'",
           what="the trend chart")


def client(fleet: Fleet) -> httpx.Client:
    return httpx.Client(base_url=fleet.base, timeout=10)
