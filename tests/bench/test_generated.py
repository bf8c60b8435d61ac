"""The benchmarks' generated fleet: the per-slot codes ``generate(slot_days=...)`` stores with each hour add up to
the roll-up counts it stores beside them, as the roll-up pass's do. The flagged list reads its minutes by reason
from those codes only when they do (otherwise it counts raw samples again, which generated units do not have), so
a mismatch here would make bench_scope measure the wrong path without anyone noticing."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from benchmarks.bench_server_api import generate
from counting.counter import counts_of_codes


def test_generated_slot_codes_add_up_to_the_generated_hours(tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    generate(db, 400, 40, 3, 0, 1, 0, 1, int(time.time()), slot_days=2)
    con = sqlite3.connect(db)
    days = [r[0] for r in con.execute("SELECT DISTINCT day FROM rollup_day ORDER BY day")]
    assert len(days) == 3
    codes: dict[tuple[int, str], list[bytes]] = {}
    for day, sn, hour, blob in con.execute("SELECT day, sn, hour, codes FROM slot_hour ORDER BY day, sn, hour"):
        assert hour == len(codes.setdefault((day, sn), []))
        codes[(day, sn)].append(bytes(blob))
    assert {d for d, _ in codes} == set(days[1:])  # the last two days only
    shapes = set()
    for day, sn, *tot, hours in con.execute("SELECT day, sn, service, intact, netok, nodata, hours FROM rollup_day"):
        if day == days[0]:
            continue
        strips = codes[(day, sn)]
        assert len(strips) == 24 and tuple(tot) == counts_of_codes(b"".join(strips)), (day, sn)
        for h, strip in enumerate(strips):
            assert counts_of_codes(strip) == tuple(hours[4 * h: 4 * h + 4]), (day, sn, h)
        shapes.add(tuple(tot))
    assert len(shapes) == 5  # every day shape occurs: good, an hour without data, printer, slow network, off
