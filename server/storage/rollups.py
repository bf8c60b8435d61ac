"""The roll-ups' store: hour counts per unit (day rows with their packed hours, month sums), the per-slot codes the
drill-down reads, their sums for the figures, their retention, and the queue of hours to recount that ingest
writes with its samples.

One domain store of the storage (issue 15's split of ``sqlite.py``), on whichever engine the storage has, in the
SQL both backends run; ``SqlStore`` inherits it (the storage's method names stay as they were).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .registry import StatusChange, history_from_json

_json_decode = msgspec.json.decode

# sla_day's counts, in the order of server/availability/sla.py's SLA_KEYS
_SLA_COLS = ("service_s", "lat_in", "lat_meas", "jit_in", "jit_meas", "loss_in", "loss_meas", "down")


class RollupStore:
    async def write_hour_counts(self, items: list[tuple[str, int, int, int, tuple[int, int, int, int]]],
                                strips: list[tuple[str, int, int, bytes, str | None, int]] | None = None) -> None:
        """Store hour counts ``(sn, day ordinal, hour index, hours in that day, counts)`` in one transaction.

        Each day row keeps its totals and the packed hours; month rows are kept as sums of their days.
        ``strips``: the same hours' per-slot codes ``(sn, day, hour index, codes, reasons JSON or None, number of
        samples dated in that hour)``, which the minute drill-down reads instead of recounting raw samples.
        """
        from datetime import date

        by_day: dict[tuple[str, int], list[tuple[int, int, tuple[int, int, int, int]]]] = {}
        for sn, day, idx, nh, counts in items:
            by_day.setdefault((sn, day), []).append((idx, nh, counts))
        async with self.write() as db:
            for (sn, day), hours in by_day.items():
                row = await (await db.execute(
                    "SELECT service, intact, netok, nodata, hours FROM rollup_day WHERE day=? AND sn=?", (day, sn))).fetchone()
                nh = hours[0][1]
                old_tot = (0, 0, 0, 0) if row is None else tuple(row[:4])
                buf = bytearray((b"" if row is None else bytes(row[4]))[: 4 * nh].ljust(4 * nh, b"\0"))
                for idx, _nh, counts in hours:
                    buf[4 * idx: 4 * idx + 4] = bytes(counts)
                tot = (sum(buf[0::4]), sum(buf[1::4]), sum(buf[2::4]), sum(buf[3::4]))
                await db.execute("INSERT INTO rollup_day VALUES (?,?,?,?,?,?,?) ON CONFLICT(day, sn) DO UPDATE SET "
                                 "service=excluded.service, intact=excluded.intact, netok=excluded.netok, "
                                 "nodata=excluded.nodata, hours=excluded.hours", (day, sn, *tot, bytes(buf)))
                delta = [a - b for a, b in zip(tot, old_tot, strict=True)]
                if any(delta):
                    d = date.fromordinal(day)
                    month = d.year * 12 + d.month - 1
                    await db.execute(
                        "INSERT INTO rollup_month VALUES (?,?,?,?,?,?) ON CONFLICT(month, sn) DO UPDATE SET "
                        "service=rollup_month.service+excluded.service, intact=rollup_month.intact+excluded.intact, "
                        "netok=rollup_month.netok+excluded.netok, nodata=rollup_month.nodata+excluded.nodata", (month, sn, *delta))
            if strips:
                await db.executemany("INSERT INTO slot_hour VALUES (?,?,?,?,?,?) ON CONFLICT(day, sn, hour) DO UPDATE SET "
                                     "codes=excluded.codes, reasons=excluded.reasons, samples=excluded.samples",
                                     [(day, sn, idx, codes, reasons, n) for sn, day, idx, codes, reasons, n in strips])
            await self._bump(db, "rollup_version")
            await self._stamp_days(db, sorted({day for _sn, day in by_day}))
        self._rollups_written()

    @staticmethod
    async def _stamp_days(db: object, days: list[int]) -> None:
        """Within the writer's transaction, after its ``rollup_version`` bump: these days' roll-ups changed now
        (``rollup_stamps``; day 0 for a purge). The stamp is the bumped version, unique to this write."""
        if not days:
            return
        row = await (await db.execute("SELECT value FROM meta WHERE key = 'rollup_version'")).fetchone()  # type: ignore[attr-defined]
        stamp = int(row[0])
        await db.executemany("INSERT INTO rollup_stamps(day, stamp) VALUES (?, ?) ON CONFLICT(day) DO UPDATE SET "  # type: ignore[attr-defined]
                             "stamp = excluded.stamp", [(d, stamp) for d in days])

    async def rollup_stamps(self) -> dict[int, int]:
        """When each day's roll-ups last changed (day ordinal -> stamp; 0 -> the last purge that deleted any): a
        cache of sums over stored days is valid while the stamps of its days are what they were when it read them."""
        return {int(r[0]): int(r[1]) for r in await self._all("SELECT day, stamp FROM rollup_stamps")}

    async def rollup_totals(self, *, month: int | None = None, day: int | None = None) -> list[Any]:
        """Every unit's stored totals of one month or one day: rows ``(sn, service, intact, network ok, no data)``
        as the driver gives them (47,500 of them: not copied into tuples one by one)."""
        if month is not None:
            return await self._all("SELECT sn, service, intact, netok, nodata FROM rollup_month WHERE month = ?", (month,))
        return await self._all("SELECT sn, service, intact, netok, nodata FROM rollup_day WHERE day = ?", (day,))

    async def rollup_hours(self, day: int) -> list[tuple[str, bytes]]:
        """Every unit's packed hour counts of one day: ``(sn, hours)``."""
        return [(r[0], bytes(r[1])) for r in await self._all("SELECT sn, hours FROM rollup_day WHERE day = ?", (day,))]

    async def rollup_sums(self, months: list[int], days: list[int], parts: list[tuple[int, int, int]],
                          sns: list[str] | None = None) -> dict[str, list[int]]:
        """Per-unit sums of whole months, whole days and hour slices ``(day, first hour, end hour)``."""
        out: dict[str, list[int]] = {}
        filt, fargs = "", []
        if sns is not None:
            chosen = list(sns) or [""]
            filt = f" AND sn IN ({','.join('?' * len(chosen))})"
            fargs = chosen

        def add(sn: str, s: int, i: int, o: int, d: int) -> None:
            acc = out.get(sn)
            if acc is None:
                out[sn] = [s, i, o, d]
            else:
                acc[0] += s
                acc[1] += i
                acc[2] += o
                acc[3] += d

        selects, args = [], []
        if months:
            selects.append(f"SELECT sn, service, intact, netok, nodata FROM rollup_month "
                           f"WHERE month IN ({','.join('?' * len(months))}){filt}")
            args += [*months, *fargs]
        if days:
            selects.append(f"SELECT sn, service, intact, netok, nodata FROM rollup_day "
                           f"WHERE day IN ({','.join('?' * len(days))}){filt}")
            args += [*days, *fargs]
        if selects:
            sql = ("SELECT sn, sum(service), sum(intact), sum(netok), sum(nodata) FROM ("
                   + " UNION ALL ".join(selects) + ") AS parts GROUP BY sn")
            for r in await self._all(sql, args):
                add(r[0], r[1], r[2], r[3], r[4])
        for day, a, b in parts:
            for sn, blob in await self._all(f"SELECT sn, hours FROM rollup_day WHERE day=?{filt}", [day, *fargs]):
                part = bytes(blob)[4 * a: 4 * b]
                add(sn, sum(part[0::4]), sum(part[1::4]), sum(part[2::4]), sum(part[3::4]))
        return out

    async def rollup_day_totals(self, first_day: int, last_day: int, sns: list[str] | None = None
                                ) -> dict[int, tuple[int, int, int, int]]:
        """Per local day (ordinal) in ``[first_day, last_day]``: (service, intact, netok, nodata) summed over the
        units (all, or ``sns``): the report's daily trend in one query instead of one figures request a day."""
        sql = "SELECT day, sum(service), sum(intact), sum(netok), sum(nodata) FROM rollup_day WHERE day BETWEEN ? AND ?"
        args: list[Any] = [first_day, last_day]
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        return {int(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in await self._all(sql + " GROUP BY day", args)}

    async def rollup_days(self, sn: str, first_day: int, last_day: int) -> list[tuple[int, int, int, int, int, bytes]]:
        rows = await self._quick(
            "SELECT day, service, intact, netok, nodata, hours FROM rollup_day WHERE sn=? AND day BETWEEN ? AND ? ORDER BY day",
            (sn, first_day, last_day))
        return [(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    async def slot_hours(self, sn: str, day: int) -> list[tuple[int, bytes, str | None, int]]:
        """The stored per-slot codes of one unit's local day: ``(hour index, codes, reasons JSON, samples)``."""
        rows = await self._quick("SELECT hour, codes, reasons, samples FROM slot_hour WHERE day=? AND sn=? ORDER BY hour",
                                 (day, sn))
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    async def unit_day(self, sn: str, day: int) -> tuple[list[tuple[int, bytes, str | None, int]],
                                                         list[StatusChange], tuple[int, int, int, int, bytes] | None]:
        """What a unit's drill-down for one local day rebuilds from the stored codes, in one statement: the day's
        per-slot codes as :meth:`slot_hours` gives them, the unit's status history as
        :meth:`~server.storage.registry.RegistryStore.status_histories` gives it, and the day's roll-up ``(service,
        intact, network ok, no data, packed hours)`` as :meth:`rollup_days` (None: not rolled up). Three round
        trips before, each waiting for a core twice on a busy PostgreSQL host (issue 15)."""
        array, group = self.json_fns  # type: ignore[attr-defined]
        hexed = self.hex_fn.format  # type: ignore[attr-defined]
        rows = await self._quick(  # type: ignore[attr-defined]
            f"SELECT (SELECT {group}({array}(hour, {hexed('codes')}, reasons, samples)) FROM slot_hour "
            f"WHERE day = ? AND sn = ?) AS hours_json, {self.history_json_sql('?')} AS history_json, "  # type: ignore[attr-defined]
            f"(SELECT {array}(service, intact, netok, nodata, {hexed('hours')}) FROM rollup_day "
            "WHERE day = ? AND sn = ?) AS day_json", (day, sn, sn, day, sn))
        row = rows[0]
        hours = sorted((int(h), bytes.fromhex(c), r, int(n)) for h, c, r, n in _json_decode(row[0] or "[]"))
        got = _json_decode(row[2]) if row[2] else None
        rolled = (int(got[0]), int(got[1]), int(got[2]), int(got[3]), bytes.fromhex(got[4])) if got else None
        return hours, history_from_json(row[1]), rolled

    async def slot_hours_of(self, sns: list[str], days: list[int]) -> list[tuple[str, int, int, bytes, str | None]]:
        """The stored per-slot codes of several units over several local days, ``(sn, day, hour index, codes,
        reasons JSON)`` in no set order: the flagged list's minutes by reason. Both key columns are probed with IN
        (a day range would walk every unit's hours of those days), 500 SNs a query."""
        out: list[tuple[str, int, int, bytes, str | None]] = []
        if not days:
            return out
        dq = ",".join("?" * len(days))
        for k in range(0, len(sns), 500):
            chunk = sns[k:k + 500]
            rows = await self._all(f"SELECT sn, day, hour, codes, reasons FROM slot_hour WHERE day IN ({dq}) AND sn IN "
                                   f"({','.join('?' * len(chunk))})", [*days, *chunk])
            out += [(r[0], int(r[1]), int(r[2]), bytes(r[3]), r[4]) for r in rows]
        return out

    async def purge_slot_hours(self, before_day: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM slot_hour WHERE day < ?", (before_day,))
        return cur.rowcount

    async def purge_rollups(self, before_day: int) -> int:
        from datetime import date

        d = date.fromordinal(before_day)
        async with self.write() as db:
            cur = await db.execute("DELETE FROM rollup_day WHERE day < ?", (before_day,))
            n = cur.rowcount
            months = (await db.execute("DELETE FROM rollup_month WHERE month < ?", (d.year * 12 + d.month - 1,))).rowcount
            await db.execute("DELETE FROM sla_day WHERE day < ?", (before_day,))
            await self._bump(db, "rollup_version")
            if n or months:  # sums cached over the purged days no longer hold (day 0: the purge's stamp)
                await db.execute("DELETE FROM rollup_stamps WHERE day > 0 AND day < ?", (before_day,))
                await self._stamp_days(db, [0])
        self._rollups_written()
        return n

    # network service levels per unit-day (server/availability/sla.py) -------------------------------------
    async def write_sla_days(self, rows: list[tuple[str, int, list[int]]]) -> None:
        """Store (or replace: a recount) ``(sn, day ordinal, counts of SLA_KEYS)`` in one transaction."""
        async with self.write() as db:
            await db.executemany(
                f"INSERT INTO sla_day VALUES ({','.join('?' * (2 + len(_SLA_COLS)))}) ON CONFLICT(day, sn) DO UPDATE "
                f"SET {', '.join(f'{c}=excluded.{c}' for c in _SLA_COLS)}",
                [(day, sn, *(int(v) for v in counts)) for sn, day, counts in rows])

    async def sla_sums(self, first_day: int, last_day: int, sns: list[str] | None = None
                       ) -> tuple[dict[str, list[int]], set[int]]:
        """Per unit, the SLA counts summed over the stored days in ``[first_day, last_day]`` (all units, or ``sns``);
        and which of those days are stored (a day is written for every unit counted when it closes)."""
        filt, args = "", [first_day, last_day]
        if sns is not None:
            chosen = list(sns) or [""]
            filt = f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        sums = {r[0]: [int(v) for v in r[1:]] for r in await self._all(
            f"SELECT sn, {', '.join(f'sum({c})' for c in _SLA_COLS)} FROM sla_day WHERE day BETWEEN ? AND ?{filt} "
            "GROUP BY sn", args)}
        days = {int(r[0]) for r in await self._all(
            "SELECT DISTINCT day FROM sla_day WHERE day BETWEEN ? AND ?", (first_day, last_day))}
        return sums, days

    # recounts kept with the commits (written by store_telemetry, drained by the leader's roll-up pass) --------
    async def recount_queue(self, limit: int = 10_000, after: int = 0) -> list[tuple[int, str, int, int]]:
        """The oldest ``(id, sn, from_ts, to_ts)`` spans committed samples touch, not yet recounted (with an id
        above ``after``: those up to it are taken already, their recount not yet finished)."""
        rows = await self._all("SELECT id, sn, from_ts, to_ts FROM recount_queue WHERE id > ? ORDER BY id LIMIT ?",
                               (after, limit))
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def recount_queue_done(self, up_to_id: int) -> None:
        """The spans up to ``up_to_id`` are recounted (called after the recount committed)."""
        async with self.write() as db:
            await db.execute("DELETE FROM recount_queue WHERE id <= ?", (up_to_id,))
