"""The server's side of certificate renewal (server/renewal.py): requests through the real ingest path and its
closed schema; only a valid request in the unit's own name is kept; the same key asking again is answered with the
certificate the CA signed."""

from __future__ import annotations

import time
from pathlib import Path

from agent.enroll import make_key_and_csr
from server.storage import renewals as store
from tests.server.conftest import make_api
from wire import codec
from wire.messages import Certificate, Event


async def test_requests_are_checked_recorded_and_answered(tmp_path: Path) -> None:
    async with make_api(tmp_path) as api:
        renewals = api.app.state.renewals
        await renewals.stop()  # its passes are run by the test, one at a time
        sent: list[tuple[str, bytes]] = []
        api.app.state.ingest.publish = lambda topic, payload, qos=1: sent.append((topic, payload)) or True
        _k, good = make_key_and_csr("HN00900001", tmp_path / "a")
        _k, forged = make_key_and_csr("HN00900009", tmp_path / "b")
        now = int(api.clock.t)
        await api.feed("HN00900001", [], [Event(seq=0, ts=now, kind="cert_request", data={"csr": good.read_text()})])
        await api.feed("HN00900002", [], [Event(seq=0, ts=now, kind="cert_request", data={"csr": forged.read_text()}),
                                          Event(seq=1, ts=now, kind="cert_request", data={"csr": "hello"})])
        await renewals.apply()
        assert (await store.get(api.app.state.storage, "HN00900001"))["state"] == "requested"
        assert await store.get(api.app.state.storage, "HN00900002") is None
        assert renewals.refused["bad_csr"] == 1  # the forged one; "hello" never passed the boundary
        assert api.app.state.ingest.stats.items_rejected["event_schema"] == 1
        assert sent == []

        # the CA signs (what posfleet ca sign-renewals writes); the unit, not answered yet, asks again
        rec = await store.get(api.app.state.storage, "HN00900001")
        await store.put(api.app.state.storage, "HN00900001", {**rec, "state": "signed", "cert": "PEM", "serial": "ab",
                                                              "sent": time.time()})
        assert await renewals.deliver() == 0  # sent within the hour: not again
        assert await renewals.request("HN00900001", good.read_text(), now) == "sent"
        assert sent[-1][0] == "pf/HN00900001/x" and codec.decode(sent[-1][1], Certificate).cert == "PEM"
        # it switched: recorded, acknowledged
        assert await renewals.switched("HN00900001", "ab", now) == "switched"
        assert codec.decode(sent[-1][1], Certificate).done == "ab"
        assert await renewals.switched("HN00900001", "cd", now) == "unknown"
