"""3G (WCDMA/UMTS) signal quality reaches the sample: the real Agent samples a real Modem driver on the emulator
over a pty, the sample is encoded by the wire codec and decoded by the server's closed inbound schema.

On LTE the two fields are absent and cost no byte on the wire (omitted defaults)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from agent.config import parse
from agent.main import Agent
from simulator.emulators.modem import serve
from simulator.local import Pki, agent_config
from wire import boundary, codec
from wire.messages import Batch


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _agent(pki: Pki, data: Path, port: str, profile: str) -> Agent:
    """A real Agent whose modem is the emulator on ``port``; no broker is needed to take a sample."""
    no_broker = SimpleNamespace(port=8883)  # agent_config only writes the broker's port into the file
    path = agent_config(pki, no_broker, "HN00190001", data, extra="[commands]\nenabled = false\n",  # type: ignore[arg-type]
                        peripherals={"modem": (port, profile)})
    return Agent(parse(path.read_text()))


@pytest.mark.parametrize("profile", ["simcom-sim7600", "huawei-me909s", "generic-3gpp"])
def test_3g_rscp_and_ecio_in_the_sample_and_through_the_boundary(pki: Pki, tmp_path: Path, profile: str) -> None:
    dev = serve(profile, act=2, rscp_dbm=-85, ecio_db=-6.5)
    a = _agent(pki, tmp_path / "data", dev.path, profile)
    try:
        s = a.take_sample(1_800_000_000)
    finally:
        a.outbox.close()
        dev.stop()
    assert (s.rscp_dbm, s.ecio_db) == (-85, -6)  # whole dB on the wire (round half to even: -6.5 -> -6)
    wire = codec.encode(Batch(sn="HN00190001", epoch=1, samples=[s]), compress=False)
    batch = boundary.decode_batch(wire)
    got, dropped = boundary.sample(batch.samples[0])
    assert dropped == [] and (got.rscp_dbm, got.ecio_db) == (-85, -6)


def test_lte_sample_carries_no_3g_fields(pki: Pki, tmp_path: Path) -> None:
    dev = serve("quectel-ec20")
    a = _agent(pki, tmp_path / "data", dev.path, "quectel-ec20")
    try:
        s = a.take_sample(1_800_000_000)
    finally:
        a.outbox.close()
        dev.stop()
    assert s.csq == 20 and (s.rscp_dbm, s.ecio_db) == (None, None)
    keys = msgspec.msgpack.decode(msgspec.msgpack.encode(s))
    assert "p" not in keys and "e" not in keys  # absent: no bytes


def test_boundary_drops_an_impossible_ecio_and_names_it() -> None:
    raw = msgspec.msgpack.encode({"q": 1, "t": 1_800_000_000, "h": {}, "p": -85, "e": 7})
    got, dropped = boundary.sample(msgspec.Raw(raw))
    assert got.rscp_dbm == -85 and got.ecio_db is None
    assert len(dropped) == 1 and dropped[0].startswith("ecio_db")


async def test_server_stores_and_returns_rscp_and_ecio(tmp_path: Path) -> None:
    """What the agent sends is kept: the unit's samples in the API carry the two figures by their names."""
    from tests.server.conftest import at, make_api

    async with make_api(tmp_path, now="2025-03-03 07:00") as api:
        sn = "HN00190002"
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={})).status_code == 200
        await api.minutes(sn, at("2025-03-03 08:00"), 1, rscp_dbm=-85, ecio_db=-7, csq=20)
        items = (await api.get(f"/api/v1/units/{sn}/samples", limit=1)).json()["items"]
        assert (items[0]["rscp_dbm"], items[0]["ecio_db"]) == (-85, -7)
