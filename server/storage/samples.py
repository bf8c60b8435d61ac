"""The samples' store: ingest's one transaction a batch (samples, events, the units' first/last seen and newest
sample, the hours to recount), the raw samples and events as the domains read them, ingest's dead letters, and
retention of events.

One domain store of the storage (issue 15's split of ``sqlite.py``), on whichever engine the storage has, in the SQL
both backends run; ``SqlStore`` inherits it. Retention of samples is the engine's (``purge_samples``: SQLite
deletes rows, PostgreSQL drops whole day partitions), and so is the bulk insert that skips duplicates
(``insert_ignore``).

It hands out facts only: which cell a link-down minute is put on is the availability domain's
(``server/availability/outages.py``), from :meth:`SampleStore.link_down_cell_samples` and
:meth:`SampleStore.serving_cells`.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple, TypedDict

from .base import EventRow, SampleRow

# Ingest's dead letters: a message that passed the boundary but could not be stored even alone. Kept (bounded)
# with its reason and its validated rows, so nothing is lost and an administrator can see and replay it.
DEAD_LETTERS_KEPT = 10_000


class DeadLetter(TypedDict):
    id: int
    received_at: float
    sn: str
    topic: str
    reason: str
    size: int
    sha256: str
    body: str


class StoredEvent(TypedDict):
    """An event of some unit (:meth:`SampleStore.events_between`)."""
    sn: str
    ts: int
    kind: str
    data: dict[str, Any]


class UnitEvent(TypedDict):
    """An event of one unit (:meth:`SampleStore.unit_events`)."""
    ts: int
    kind: str
    data: dict[str, Any]
    received_at: float


class DownSample(NamedTuple):
    """A sample taken with the link down, and the cell its modem reported then (often none, or a neighbour)."""
    sn: str
    ts: int
    interval: int
    tac: int | None
    cell: int | None


class ServingCell(NamedTuple):
    """The cell a unit's modem reported in a sample taken with the link up."""
    ts: int
    tac: int | None
    cell: int


class NetworkSample(NamedTuple):
    sn: str
    ts: int
    interval: int
    connected: bool
    rtt_ms: int | None
    rtt_var_ms: int | None
    retrans: int | None
    segs_out: int | None


class SampleStore:
    # ingest --------------------------------------------------------------------
    async def store_telemetry(self, samples: list[SampleRow], events: list[EventRow]) -> int:
        now = time.time()
        stored = 0
        async with self.write() as db:
            stored += await self.insert_ignore(db, "samples", [
                (s.sn, s.epoch, s.seq, s.ts, s.interval, s.clock, int(s.connected), s.rtt_ms,
                 json.dumps(s.checks, ensure_ascii=False, separators=(",", ":")),
                 json.dumps(s.body, ensure_ascii=False, separators=(",", ":")), s.received_at)
                for s in samples])
            stored += await self.insert_ignore(db, "events", [
                (e.sn, e.epoch, e.seq, e.ts, e.kind, json.dumps(e.data, ensure_ascii=False), e.received_at)
                for e in events])
            # registry: first/last seen, newest sample, inventory
            latest: dict[str, SampleRow] = {}
            for s in samples:
                if s.sn not in latest or s.ts > latest[s.sn].ts:
                    latest[s.sn] = s
            sns = sorted({s.sn for s in samples} | {e.sn for e in events})  # sorted: two processes lock rows in
            # the same order, so their transactions cannot deadlock on units
            grew = await self.units_new(db, sns)
            await db.executemany(  # one batch of statements (PostgreSQL: one round trip), not one per unit
                "INSERT INTO units(sn, first_seen, last_seen) VALUES (?,?,?) "
                "ON CONFLICT(sn) DO UPDATE SET last_seen=excluded.last_seen", [(sn, now, now) for sn in sns])
            await db.executemany(
                "UPDATE units SET latest_ts=?, latest=? WHERE sn=? AND (latest_ts IS NULL OR latest_ts <= ?)",
                [(s.ts, json.dumps(s.body, ensure_ascii=False), sn, s.ts) for sn, s in sorted(latest.items())])
            for e in events:
                if e.kind == "inventory":
                    await db.execute("UPDATE units SET inventory=? WHERE sn=?", (json.dumps(e.data, ensure_ascii=False), e.sn))
                if e.kind in ("inventory", "identity", "sim_changed"):
                    ident = {k: e.data.get(k) for k in ("iccid", "imsi", "imei", "carrier", "mcc_mnc",
                                                          "modem_model", "modem_firmware") if e.data.get(k)}
                    if ident:
                        await db.execute("UPDATE units SET identity=? WHERE sn=?", (json.dumps(ident), e.sn))
            spans: dict[str, list[int]] = {}  # the hours these samples touch, kept with them (recount_queue)
            for s in samples:
                span = spans.setdefault(s.sn, [s.ts, s.ts + s.interval])
                span[0], span[1] = min(span[0], s.ts), max(span[1], s.ts + s.interval)
            if spans:  # last in the transaction: on PostgreSQL it holds the queue's order lock until the commit
                await self.queue_in_commit_order(db)
                await db.executemany("INSERT INTO recount_queue(sn, from_ts, to_ts) VALUES (?,?,?)",
                                     [(sn, a, b) for sn, (a, b) in sorted(spans.items())])
            if grew:  # a unit heard for the first time: the kept lists' stamp moves (last: see units_grew)
                await self.units_grew(db)
        return stored

    # samples ---------------------------------------------------------------------
    async def recent_samples(self, sn: str, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        if before is None:
            rows = await self._all("SELECT body FROM samples WHERE sn=? ORDER BY ts DESC LIMIT ?", (sn, limit))
        else:
            rows = await self._all(
                "SELECT body FROM samples WHERE sn=? AND ts < ? ORDER BY ts DESC LIMIT ?", (sn, before, limit))
        return [json.loads(r[0]) for r in rows]

    async def samples_between(self, sns: list[str] | None, start: int, end: int) -> list[SampleRow]:
        sql = "SELECT sn, epoch, seq, ts, interval, clock, connected, rtt_ms, checks, received_at FROM samples WHERE ts < ? AND ts + interval > ?"
        args: list[Any] = [end, start]
        if sns is not None:
            sql += f" AND sn IN ({','.join('?' * len(sns))})"
            args.extend(sns)
        return [
            SampleRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], json.loads(r[8]), {}, r[9])
            for r in await self._all(sql + " ORDER BY sn, ts", args)
        ]

    async def count_samples(self) -> int:
        return int((await self._one("SELECT count(*) FROM samples"))[0])

    async def unit_samples_window(self, sn: str, start: int, end: int) -> list[dict[str, Any]]:
        """Full sample bodies of one unit in ``[start, end)``, oldest first."""
        rows = await self._all("SELECT body FROM samples WHERE sn=? AND ts >= ? AND ts < ? ORDER BY ts", (sn, start, end))
        return [json.loads(r[0]) for r in rows]

    async def sample_facts(self, sns: list[str], start: int, end: int) -> list[tuple[str, int, int, int, int | None, str]]:
        """What counting needs of the samples touching ``[start, end)``: (sn, ts, interval, connected, rtt_ms,
        checks as stored JSON text), unparsed (the caller memoises the parse: most samples say the same)."""
        chosen = list(sns) or [""]
        return await self._all(
            f"SELECT sn, ts, interval, connected, rtt_ms, checks FROM samples WHERE sn IN ({','.join('?' * len(chosen))}) "
            "AND ts < ? AND ts >= ? - 3600 AND ts + interval > ?", [*chosen, end, start, start])

    async def count_samples_touching(self, sn: str, start: int, end: int) -> tuple[int, int]:
        """How many samples of one unit :meth:`sample_facts` may read for ``[start, end)``, and how many of them
        are dated in it (index only): a late sample or a purge changes them, so they key the drill-down cache."""
        row = await self._quick_one("SELECT count(*), count(*) FILTER (WHERE ts >= ?) FROM samples "
                                    "WHERE sn = ? AND ts < ? AND ts >= ? - 3600", (start, sn, end, start))
        return int(row[0]), int(row[1])

    async def link_down_samples(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """(sn, ts, interval) of samples taken with the link down that touch ``[start, end)``."""
        rows = await self._all(
            "SELECT sn, ts, interval FROM samples WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0",
            (end, start, start))
        return [(r[0], r[1], r[2]) for r in rows]

    async def link_down_cell_samples(self, start: int, end: int) -> list[DownSample]:
        """The samples taken with the link down that touch ``[start, end)``, with the cell each reported, by unit
        then time."""
        body, (tac_, cell_) = self.json_ints("body", ("tac", "cell_id"))
        rows = await self._all(
            f"SELECT sn, ts, interval, {tac_}, {cell_} FROM samples{body} "
            "WHERE ts < ? AND ts >= ? - 3600 AND ts + interval > ? AND connected = 0 ORDER BY sn, ts",
            (end, start, start))
        return [DownSample(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def serving_cells(self, sns: list[str], start: int, end: int) -> dict[str, list[ServingCell]]:
        """Per unit of ``sns``: the cells reported by its samples taken with the link up and dated in
        ``[start, end)``, oldest first (samples that report no cell left out)."""
        body, (tac_, cell_) = self.json_ints("body", ("tac", "cell_id"))
        out: dict[str, list[ServingCell]] = {}
        chosen = sorted(set(sns))
        for i in range(0, len(chosen), 500):
            chunk = chosen[i: i + 500]
            rows = await self._all(
                f"SELECT sn, ts, {tac_}, {cell_} FROM samples{body} "
                f"WHERE sn IN ({','.join('?' * len(chunk))}) AND ts >= ? AND ts < ? AND connected = 1 "
                f"AND {cell_} IS NOT NULL ORDER BY sn, ts",
                [*chunk, start, end])
            for sn, ts, tac, cell in rows:
                out.setdefault(sn, []).append(ServingCell(ts, tac, cell))
        return out

    async def network_samples(self, start: int, end: int, sns: list[str] | None = None) -> list[NetworkSample]:
        """(sn, ts, interval, connected, rtt_ms, rtt_var_ms, retrans, segs_out) of the raw samples dated in
        ``[start, end)``, by unit then time: what the report's network service-level section counts."""
        body, (var_, retrans_, segs_) = self.json_ints("body", ("rtt_var_ms", "retrans", "segs_out"))
        sql = (f"SELECT sn, ts, interval, connected, rtt_ms, {var_}, {retrans_}, {segs_} FROM samples{body} "
               "WHERE ts >= ? AND ts < ?")
        args: list[Any] = [start, end]
        if sns is not None:
            sql += f" AND sn IN ({','.join('?' * len(sns))})"
            args.extend(sns)
        return [NetworkSample(r[0], int(r[1]), int(r[2]), bool(r[3]), r[4], r[5], r[6], r[7])
                for r in await self._all(sql + " ORDER BY sn, ts", args)]

    # events ------------------------------------------------------------------------
    async def events_between(self, start: int, end: int, kinds: list[str] | None = None,
                             sns: list[str] | None = None) -> list[StoredEvent]:
        sql = "SELECT sn, ts, kind, data FROM events WHERE ts >= ? AND ts < ?"
        args: list[Any] = [start, end]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        if sns is not None:
            chosen = list(sns) or [""]
            sql += f" AND sn IN ({','.join('?' * len(chosen))})"
            args += chosen
        rows = await self._all(sql + " ORDER BY ts", args)
        return [{"sn": r[0], "ts": r[1], "kind": r[2], "data": json.loads(r[3])} for r in rows]

    async def unit_events(self, sn: str, kinds: list[str] | None, limit: int, before: int | None = None
                          ) -> list[UnitEvent]:
        """One unit's events, newest first (``before``: dated before that second)."""
        sql, args = "SELECT ts, kind, data, received_at FROM events WHERE sn = ?", [sn]
        if before is not None:
            sql += " AND ts < ?"
            args.append(before)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        rows = await self._all(sql + " ORDER BY ts DESC, epoch DESC, seq DESC LIMIT ?", [*args, limit])
        return [{"ts": r[0], "kind": r[1], "data": json.loads(r[2]), "received_at": r[3]} for r in rows]

    async def purge_events(self, before_ts: int) -> int:
        async with self.write() as db:
            cur = await db.execute("DELETE FROM events WHERE ts < ?", (before_ts,))
        return cur.rowcount

    # dead letters --------------------------------------------------------------------
    async def add_dead_letter(self, received_at: float, sn: str, topic: str, reason: str, size: int, sha256: str,
                              body: str) -> None:
        """Keep one message ingest could not store; only the newest :data:`DEAD_LETTERS_KEPT` are kept."""
        async with self.write() as db:
            cur = await db.execute(
                "INSERT INTO dead_letters(received_at, sn, topic, reason, size, sha256, body) VALUES (?,?,?,?,?,?,?) "
                "RETURNING id", (received_at, sn, topic, reason[:500], size, sha256, body))
            new_id = int((await cur.fetchone())[0])
            if new_id % 100 == 0:
                await db.execute("DELETE FROM dead_letters WHERE id <= ?", (new_id - DEAD_LETTERS_KEPT,))

    async def dead_letters(self, limit: int = 100, sn: str | None = None) -> tuple[int, list[DeadLetter]]:
        where, args = ("WHERE sn = ?", [sn]) if sn else ("", [])
        total = int((await self._one(f"SELECT count(*) FROM dead_letters {where}", args))[0])
        rows = await self._all(f"SELECT id, received_at, sn, topic, reason, size, sha256, body FROM dead_letters {where} "
                               "ORDER BY id DESC LIMIT ?", [*args, limit])
        return total, [dict(r) for r in rows]  # type: ignore[misc]
