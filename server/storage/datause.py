"""The SIM data-use store: the counter readings of one unit's samples and the per unit-day rows the analytics
keep from them (``server/analytics/datause.py``).

One domain store of the storage (issue 15's split of ``sqlite.py``), on whichever engine the storage has, in the
SQL both backends run; ``SqlStore`` inherits it (the storage's method names stay as they were).
"""

from __future__ import annotations

from typing import Any

_DATA_COLS = ("day", "within", "carry", "resets", "samples", "first_ts", "first_bytes", "last_ts", "last_bytes")


class DataUseStore:
    async def data_points(self, sn: str, start: int, end: int) -> list[tuple[int, int]]:
        """(ts, data_bytes) of one unit's samples in ``[start, end)`` that carry the counter, oldest first."""
        body, (data_,) = self.json_ints("body", ("data_bytes",))
        rows = await self._all(
            f"SELECT ts, {data_} FROM samples{body} WHERE sn=? AND ts >= ? AND ts < ? "
            f"AND {data_} IS NOT NULL ORDER BY ts, epoch, seq", (sn, start, end))
        return [(int(r[0]), int(r[1])) for r in rows]

    async def data_day_around(self, sn: str, day: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                                                 dict[str, Any] | None]:
        """The unit's data-use rows: nearest before ``day``, of ``day``, nearest after."""
        cols = ", ".join(_DATA_COLS)
        rows = await self._all(
            f"SELECT * FROM (SELECT {cols} FROM data_day WHERE sn=? AND day<? ORDER BY day DESC LIMIT 1) AS b "
            f"UNION ALL SELECT {cols} FROM data_day WHERE sn=? AND day=? "
            f"UNION ALL SELECT * FROM (SELECT {cols} FROM data_day WHERE sn=? AND day>? ORDER BY day LIMIT 1) AS a",
            (sn, day, sn, day, sn, day))
        prev = this = nxt = None
        for r in rows:
            d = dict(zip(_DATA_COLS, r, strict=True))
            if d["day"] < day:
                prev = d
            elif d["day"] == day:
                this = d
            else:
                nxt = d
        return prev, this, nxt

    async def put_data_days(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Store data-use day rows ``(sn, row)`` in one transaction."""
        async with self.write() as db:
            await db.executemany(
                f"INSERT INTO data_day(sn, {', '.join(_DATA_COLS)}) VALUES ({','.join('?' * 10)}) ON CONFLICT(sn, day) "
                f"DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in _DATA_COLS if c != 'day')}",
                [(sn, *(r[c] for c in _DATA_COLS)) for sn, r in rows])

    async def data_use(self, first_day: int, last_day: int, sns: list[str] | None = None,
                       min_bytes: int = 0) -> dict[str, dict[str, int]]:
        """Per unit over the days ``[first_day, last_day]``: bytes used, counter resets, samples, newest sample.
        ``min_bytes``: only the units that used at least that many (the alert pass's few, not the fleet)."""
        sql = ("SELECT sn, sum(within + carry), sum(resets), sum(samples), max(last_ts) FROM data_day "
               "WHERE day BETWEEN ? AND ?")
        args: list[Any] = [first_day, last_day]
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        sql += " GROUP BY sn"
        if min_bytes > 0:
            sql += " HAVING sum(within + carry) >= ?"
            args.append(min_bytes)
        return {r[0]: {"bytes": int(r[1]), "resets": int(r[2]), "samples": int(r[3]), "last_ts": int(r[4])}
                for r in await self._all(sql, args)}

    async def data_days(self, sn: str, first_day: int, last_day: int) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {', '.join(_DATA_COLS)} FROM data_day WHERE sn=? AND day BETWEEN ? AND ? "
                               "ORDER BY day", (sn, first_day, last_day))
        return [dict(zip(_DATA_COLS, r, strict=True)) for r in rows]

    async def purge_data_days(self, before_day: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM data_day WHERE day < ?", (before_day,))
        return cur.rowcount
