"""``[availability] critical_checks`` decides which peripheral checks make a unit "device intact", through the
real app: a printer out of paper or an ID card reader that could not be checked (unknown) fails the default
set, and does not count when the setting leaves them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import at, make_api
from wire.messages import Check

DAY = {"from": "2025-03-03T00:00:00+08:00", "to": "2025-03-04T00:00:00+08:00"}
PAPER_OUT = {"printer": Check(1, "paper out"), "idcard": Check(0), "modem": Check(0), "storage": Check(0)}
READER_UNKNOWN = {"printer": Check(0), "idcard": Check(2, "not found at /dev/ttyUSB1"), "modem": Check(0),
                  "storage": Check(0)}
NO_PRINTER_CHECK = {"idcard": Check(0), "modem": Check(0), "storage": Check(0)}


@pytest.mark.parametrize(("critical", "intact"), [
    (None, 0),  # the default: printer, idcard, modem, storage
    (["modem", "storage"], 90),
])
async def test_critical_checks_setting_decides_device_intact(tmp_path: Path, critical, intact) -> None:
    extra = {"availability": {"critical_checks": critical}} if critical is not None else None
    async with make_api(tmp_path, extra=extra, now="2025-03-03 07:00") as api:
        sn = "HNA0000001"
        assert (await api.req("PUT", f"/api/v1/registry/units/{sn}", json={})).status_code == 200
        await api.minutes(sn, at("2025-03-03 08:00"), 30, checks=PAPER_OUT)
        await api.minutes(sn, at("2025-03-03 08:30"), 30, checks=READER_UNKNOWN)
        await api.minutes(sn, at("2025-03-03 09:00"), 30, checks=NO_PRINTER_CHECK)
        api.clock.t = at("2025-03-04 00:00")
        await api.settle()
        body = (await api.get("/api/v1/availability", group_by="unit", sn=sn, **DAY)).json()
    unit = body["items"][0]
    assert (unit["service_slots"], unit["no_data_slots"], unit["network_ok_slots"]) == (600, 510, 90)
    assert unit["intact_slots"] == intact
