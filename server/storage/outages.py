"""The outages' store: the minutes in which several units of one county (``outages``), or of one cell site
(``cell_outages``), had the link down together: likely the carrier's fault.

One domain store of the storage (issue 15's split of ``sqlite.py``), on whichever engine the storage has, in the SQL
both backends run; ``SqlStore`` inherits it. It keeps what it is given: which minutes count, how many units make an
outage, which cell a link-down minute is put on and which county a cell's outage is shown in are the availability
domain's (``server/availability/outages.py``), which recounts a period and replaces its rows here.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, TypedDict


class Outage(TypedDict):
    """A minute in which ``units`` units of ``county`` had the link down."""
    county: str
    minute: int  # its first second (epoch)
    units: int
    sns: list[str]


class CellOutage(TypedDict):
    """A minute in which ``units`` units put on the cell ``tac``/``cell`` had the link down."""
    tac: int
    cell: int
    minute: int
    county: str  # where most of those units are
    units: int
    sns: list[str]


class OutageMinute(NamedTuple):
    """What :meth:`OutageStore.replace_outages` is given for a county's minute."""
    county: str
    minute: int
    units: int
    sns: list[str]


class CellOutageMinute(NamedTuple):
    """What :meth:`OutageStore.replace_cell_outages` is given for a cell's minute."""
    tac: int
    cell: int
    minute: int
    county: str
    sns: list[str]


class OutageStore:
    async def replace_outages(self, start: int, end: int, rows: list[tuple[str, int, int, list[str]]]) -> None:
        """Correlated link-down minutes ``(county, minute start, units, sns)`` (:class:`OutageMinute`) for
        ``[start, end)``: the period's rows are replaced by these."""
        async with self.write() as db:
            await db.execute("DELETE FROM outages WHERE minute >= ? AND minute < ?", (start, end))
            await db.executemany("INSERT INTO outages VALUES (?,?,?,?) ON CONFLICT(county, minute) DO UPDATE SET "
                                 "units=excluded.units, sns=excluded.sns",
                                 [(c, m, n, json.dumps(sorted(s))) for c, m, n, s in rows])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def outages_between(self, start: int, end: int, county: str | None = None) -> list[Outage]:
        sql = "SELECT county, minute, units, sns FROM outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        short = county is not None and end - start <= 86400 * 2  # one county's day: an index range
        rows = await (self._quick if short else self._all)(sql + " ORDER BY county, minute", args)
        return [{"county": r[0], "minute": r[1], "units": r[2], "sns": json.loads(r[3])} for r in rows]

    async def replace_cell_outages(self, start: int, end: int,
                                   rows: list[tuple[int, int, int, str, list[str]]]) -> None:
        """Link-down minutes shared by several units of one cell ``(tac, cell, minute, county, sns)``
        (:class:`CellOutageMinute`) for ``[start, end)``: the period's rows are replaced by these."""
        async with self.write() as db:
            await db.execute("DELETE FROM cell_outages WHERE minute >= ? AND minute < ?", (start, end))
            await db.executemany("INSERT INTO cell_outages VALUES (?,?,?,?,?,?) ON CONFLICT(tac, cell, minute) DO UPDATE SET "
                                 "county=excluded.county, units=excluded.units, sns=excluded.sns",
                                 [(t, c, m, county, len(sns), json.dumps(sorted(sns)))
                                  for t, c, m, county, sns in rows])
            await self._bump(db, "rollup_version")
        self._rollups_written()

    async def cell_outages_between(self, start: int, end: int, county: str | None = None,
                                   sn: str | None = None) -> list[CellOutage]:
        """The cells' outage minutes in ``[start, end)``, by cell then minute (``sn``: those whose units may hold
        it; the caller checks ``sns``)."""
        sql = "SELECT tac, cell, minute, county, units, sns FROM cell_outages WHERE minute >= ? AND minute < ?"
        args: list[Any] = [start, end]
        if county is not None:
            sql += " AND county = ?"
            args.append(county)
        if sn is not None:
            sql += " AND sns LIKE ?"
            args.append(f'%"{sn}"%')
        rows = await self._all(sql + " ORDER BY tac, cell, minute", args)
        return [{"tac": r[0], "cell": r[1], "minute": r[2], "county": r[3], "units": r[4], "sns": json.loads(r[5])}
                for r in rows]
