"""How long the PDF operations report takes to print, and whether the server's event loop stalls meanwhile.

The report's data is made up here at a chosen size (counties, institutions, flagged units, swaps; Chinese
names), rendered by the real template (``server.reports.ops.render_html``) and printed by the real
``server.reports.pdf.html_to_pdf`` (headless Chromium). Gathering the figures from the database (``build``) is
not part of this: it is the same for HTML, CSV and PDF. While each print runs, a ticker task on the same event
loop wakes every 10 ms and records how late it woke: the largest lateness is what an API request arriving
during a print would wait because of it.

    .venv/bin/python -m benchmarks.bench_report_pdf                    # 1 small and 1 province-sized report, 3 prints each
    .venv/bin/python -m benchmarks.bench_report_pdf --institutions 2000 --flagged 500 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from typing import Any

from benchmarks._harness import machine_line
from server.reports.ops import LABELS, render_html
from server.reports.pdf import find_chromium, html_to_pdf

COUNTIES = ["秀英区", "龙华区", "琼山区", "美兰区", "三亚市", "儋州市", "五指山市", "文昌市", "琼海市", "万宁市",
            "东方市", "定安县", "屯昌县", "澄迈县", "临高县", "白沙县", "昌江县", "乐东县", "陵水县", "保亭县"]


def _figures(i: int, units: int) -> dict[str, Any]:
    slots = units * 600 * 30
    return {"device_rate": 0.93 + (i % 7) / 100, "network_rate": 0.94 + (i % 5) / 100, "service_slots": slots,
            "intact_slots": int(slots * 0.96), "network_ok_slots": int(slots * 0.97), "no_data_slots": slots // 50,
            "units": units, "flagged_units": i % 4}


def report_data(institutions: int, flagged: int, swaps: int) -> dict[str, Any]:
    counties = [{"county": c, **_figures(i, 100)} for i, c in enumerate(COUNTIES)]
    insts = [{"institution": f"I{k:05d}", "name": f"{COUNTIES[k % 20]}第{k}卫生院", **_figures(k, 5)}
             for k in range(institutions)]
    fl = [{"sn": f"HN{k:08d}", "institution": f"{COUNTIES[k % 20]}第{k}卫生院", "county": COUNTIES[k % 20],
           "device_rate": 0.91, "network_rate": 0.96, "service_slots": 18000, "below": ["device_rate"],
           "reasons": {"minutes": {"printer=paper_out": 600 + k, "no_data": 120}, "evidence_from": None}}
          for k in range(flagged)]
    sw = [{"when": "2026-10-03T10:00+08:00", "sn": f"HS{k:08d}", "change": "换上备机", "institution": "某卫生院",
           "note": "主板故障", "by": "张工"} for k in range(swaps)]
    return {"lang": "zh", "labels": LABELS["zh"], "from": "2026-10-01T00:00:00+08:00",
            "to": "2026-11-01T00:00:00+08:00", "counted_to": "2026-11-01T00:00:00+08:00", "complete": True,
            "county": None, "threshold": 0.95, "generated": "2026-11-01T08:00:00+08:00",
            "fleet": {**_figures(0, 2000), "tier": 2, "final_payment": 0.5}, "counties": counties, "institutions": insts, "flagged": fl,
            "flagged_total": flagged, "faults": [{"peripheral": "printer", "fault_minutes": 9000, "fault_alerts": 40}],
            "outages": [], "cell_outages": [], "swaps": sw, "sim": None}


async def one(html: str, chromium: str) -> tuple[float, float, bytes]:
    late = [0.0]
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            late[0] = max(late[0], loop.time() - t - 0.01)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    pdf = await html_to_pdf(html, chromium)
    wall = time.perf_counter() - t0
    stop.set()
    await tick
    return wall, late[0], pdf


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--institutions", type=int, default=400)
    ap.add_argument("--flagged", type=int, default=200)
    ap.add_argument("--swaps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chromium", default="")
    args = ap.parse_args()
    import pypdf  # the [test] extra

    print(machine_line())
    print(f"browser: {find_chromium(args.chromium)}")
    for label, (inst, fl, sw) in (("small (3 institutions, 1 flagged)", (3, 1, 1)),
                                  (f"large ({args.institutions} institutions, {args.flagged} flagged, {args.swaps} swaps)",
                                   (args.institutions, args.flagged, args.swaps))):
        t0 = time.perf_counter()
        html = render_html(report_data(inst, fl, sw))
        t_html = time.perf_counter() - t0
        walls, lates = [], []
        for _ in range(args.runs):
            wall, late, pdf = await one(html, args.chromium)
            walls.append(wall)
            lates.append(late)
        pages = len(pypdf.PdfReader(io.BytesIO(pdf)).pages)
        print(f"{label}: HTML {len(html) / 1024:.0f} KiB rendered in {t_html * 1000:.0f} ms; PDF {len(pdf) / 1024:.0f} KiB, "
              f"{pages} A4 pages; print wall time median {statistics.median(walls):.2f} s "
              f"(runs: {', '.join(f'{w:.2f}' for w in walls)}); event loop: ticker late at most "
              f"{max(lates) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
