"""Correlated outages: which minutes several units lost the link together, by county and by cell site.

The rules (the storage hands out facts and keeps what it is given, ``server/storage/outages.py``):

* **Which cell a link-down sample is put on**: the cell that served the unit in its last sample taken with the link
  *up* before it, within :data:`LOOKBACK_S`; else the cell the down sample itself reports. A modem that lost its
  cell often reports none, or a neighbour it reselected, so the cell it last had service on is the one the
  carrier's fault most likely lies in.
* **Which minutes**: every whole minute a link-down sample covers (its ``[ts, ts + interval)``) within the period
  recounted.
* **An outage**: at least ``outage_min_units`` registered units of one county in one minute (``outages``), or at
  least ``cell_outage_min_units`` registered units put on one cell (``cell_outages``). A unit not in the registry
  counts for neither; a unit without a county counts for its cell only.
* **Which county a cell's outage is shown in**: the county most of its units belong to; a tie goes to the county
  of the smallest SN among the tied ones (not to the order a set happens to iterate in).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from ..storage.outages import CellOutageMinute, OutageMinute
from ..storage.samples import DownSample, ServingCell

LOOKBACK_S = 6 * 3600  # how far back the last connected sample's cell still names a down sample's cell


def put_on_cells(down: list[DownSample], serving: Mapping[str, list[ServingCell]],
                 lookback: int = LOOKBACK_S) -> list[DownSample]:
    """``down`` with each sample's cell replaced by the one that served its unit when its link was last up (in the
    ``lookback`` seconds before it; ``serving``: each unit's connected samples' cells, oldest first); a sample
    with no such connected sample keeps the cell it reported."""
    times = {sn: [c.ts for c in cells] for sn, cells in serving.items()}
    out = []
    for d in down:
        tac, cell = d.tac, d.cell
        seen = serving.get(d.sn)
        if seen:
            k = bisect.bisect_left(times[d.sn], d.ts) - 1  # the last one strictly before the down sample
            if k >= 0 and seen[k].ts >= d.ts - lookback:
                tac, cell = seen[k].tac, seen[k].cell
        out.append(DownSample(d.sn, d.ts, d.interval, tac, cell))
    return out


async def link_down_cells(storage: Any, start: int, end: int, lookback: int = LOOKBACK_S) -> list[DownSample]:
    """The link-down samples touching ``[start, end)``, each on the cell :func:`put_on_cells` puts it on."""
    down = await storage.link_down_cell_samples(start, end)
    if not down:
        return []
    serving = await storage.serving_cells(sorted({d.sn for d in down}), start - lookback, end)
    return put_on_cells(down, serving, lookback)


def outage_minutes(placed: list[DownSample], index: Mapping[str, Any], start: int, end: int, need: int,
                   need_cell: int) -> tuple[list[OutageMinute], list[CellOutageMinute]]:
    """The county outages and the cell outages of ``[start, end)`` from the link-down samples on their cells
    (``index``: the registry's units, each with its ``county``)."""
    down: dict[tuple[str, int], set[str]] = defaultdict(set)
    cells: dict[tuple[int, int, int], set[str]] = defaultdict(set)
    for sn, ts, iv, tac, cell in placed:
        info = index.get(sn)
        if info is None:
            continue
        m = -((-ts) // 60) * 60
        while m < ts + iv:
            if start <= m < end:
                if info.county:
                    down[(info.county, m)].add(sn)
                if cell is not None:
                    cells[(int(tac or 0), int(cell), m)].add(sn)
            m += 60
    rows = [OutageMinute(c, m, len(s), sorted(s)) for (c, m), s in down.items() if len(s) >= need]
    cell_rows = []
    for (tac, cell, m), sns in cells.items():
        if len(sns) >= need_cell:
            chosen = sorted(sns)
            counties = Counter(index[sn].county for sn in chosen)
            cell_rows.append(CellOutageMinute(tac, cell, m, counties.most_common(1)[0][0], chosen))
    return rows, cell_rows
