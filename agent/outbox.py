"""The on-disk outbox: every sample and event is here before it is sent, until the server commits it.

SQLite in WAL mode with ``synchronous=FULL`` survives a power cut after a commit. Rows are
deleted only on the *server's* acknowledgement (a broker PUBACK is not enough). The
outbox has a size cap: past it, the oldest rows lose their raw detail first (the
counting fields stay: time, interval, connected, round trip, each check's state), and
only when every row is already reduced are the oldest rows dropped; both are counted.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import msgspec

from wire.messages import CLOCK_CHECKED, CLOCK_CORRECTED, CLOCK_UNVERIFIED, Check, Event, Sample

log = logging.getLogger(__name__)

KIND_SAMPLE = "s"
KIND_EVENT = "e"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    clock INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    boottime REAL NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,
    lite INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
"""

_enc = msgspec.msgpack.Encoder()
_sample_dec = msgspec.msgpack.Decoder(Sample)
_event_dec = msgspec.msgpack.Decoder(Event)


class OutboxError(Exception):
    """The outbox could not be written (disk full, read-only, corrupt); the sample was not stored."""


@dataclass
class Row:
    seq: int
    kind: str
    ts: int
    clock: int
    item: Sample | Event


def lite_copy(s: Sample) -> Sample:
    """What is kept of a sample when the outbox is over its cap: enough to count its slot."""
    return Sample(
        seq=s.seq, ts=s.ts, interval=s.interval, clock=s.clock, connected=s.connected, rtt_ms=s.rtt_ms,
        checks={k: Check(c.state, c.reason[:24]) for k, c in s.checks.items()}, lite=True,
        cell_id=s.cell_id, data_bytes=s.data_bytes,
    )


class Outbox:
    def __init__(self, path: Path, max_bytes: int = 50 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.reduced_total = 0
        self.dropped_total = 0
        self._since_cap_check = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # a file that cannot be created (read-only filesystem on a fresh terminal) fails here, not later
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5)
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {path}: {err}") from err
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None:
                self.epoch = random.SystemRandom().randrange(1, 2**31)
                self._db.execute("INSERT INTO meta(key, value) VALUES ('epoch', ?)", (str(self.epoch),))
            else:
                self.epoch = int(row[0])
        except sqlite3.Error as err:
            self._db.close()
            raise OutboxError(f"cannot open outbox {path}: {err}") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # writing -----------------------------------------------------------------
    def add(self, item: Sample | Event, *, boot_id: str, boottime: float, held: bool | None = None) -> int:
        """Store durably; returns the sequence number. Raises OutboxError when the disk refuses.

        ``held`` rows are not sent until the clock has been checked and they are re-dated
        (default: a sample whose clock is unverified)."""
        kind = KIND_SAMPLE if isinstance(item, Sample) else KIND_EVENT
        clock = item.clock if isinstance(item, Sample) else CLOCK_CHECKED
        if held is None:
            held = clock == CLOCK_UNVERIFIED
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO outbox(kind, ts, clock, boot_id, boottime, held, body) VALUES (?,?,?,?,?,?,?)",
                    (kind, item.ts, clock, boot_id, boottime, int(held), _enc.encode(item)),
                )
            except sqlite3.Error as err:
                raise OutboxError(f"outbox write failed: {err}") from err
            seq = int(cur.lastrowid or 0)
            self._since_cap_check += 1
            if self._since_cap_check >= 50:
                self._since_cap_check = 0
                self._enforce_cap()
        return seq

    def delete(self, ranges: list[tuple[int, int]]) -> int:
        """Remove committed rows; returns how many were removed."""
        n = 0
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for lo, hi in ranges:
                    n += self._db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise OutboxError(f"outbox delete failed: {err}") from err
        return n

    def redate(self, boot_id: str, now: float, boottime_now: float) -> int:
        """The clock offset became known: re-date this boot's unchecked rows from their boot-time reading."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, kind, boottime, body FROM outbox WHERE held=1 AND boot_id=?", (boot_id,),
                ).fetchall()
                if not rows:
                    return 0
                self._db.execute("BEGIN")
                for seq, kind, bt, body in rows:
                    ts = int(round(now - (boottime_now - bt)))
                    item = _decode(kind, body)
                    if isinstance(item, Sample):
                        # samples are taken on the interval grid: keep them on it
                        ts = int(round(ts / item.interval)) * item.interval
                        item.clock = CLOCK_CORRECTED
                    item.ts = ts
                    self._db.execute(
                        "UPDATE outbox SET ts=?, clock=?, held=0, body=? WHERE seq=?",
                        (ts, CLOCK_CORRECTED, _enc.encode(item), seq),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise OutboxError(f"outbox re-date failed: {err}") from err
        return len(rows)

    def release_old_boots(self, boot_id: str) -> int:
        """Rows from earlier boots whose clock was never checked: send them, marked unverified."""
        with self._lock:
            try:
                cur = self._db.execute("UPDATE outbox SET held=0 WHERE held=1 AND boot_id<>?", (boot_id,))
            except sqlite3.Error as err:
                raise OutboxError(f"outbox update failed: {err}") from err
            return cur.rowcount

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # reading -------------------------------------------------------------------
    def pending(self, limit: int, *, exclude: set[int] | frozenset[int] = frozenset(), newest: bool = False) -> list[Row]:
        """Sendable rows (clock resolved), oldest first (or the newest one when ``newest``)."""
        order = "DESC" if newest else "ASC"
        with self._lock:
            try:
                cur = self._db.execute(
                    f"SELECT seq, kind, ts, clock, body FROM outbox WHERE held=0 ORDER BY seq {order} LIMIT ?",
                    (limit + len(exclude),),
                )
                raw = cur.fetchall()
            except sqlite3.Error as err:
                raise OutboxError(f"outbox read failed: {err}") from err
        out: list[Row] = []
        for seq, kind, ts, clock, body in raw:
            if seq in exclude:
                continue
            item = _decode(kind, body)
            item.seq = seq
            out.append(Row(seq, kind, ts, clock, item))
            if len(out) >= limit:
                break
        return out

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_ts(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT min(ts) FROM outbox").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def size_bytes(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT coalesce(sum(length(body)), 0) + 48 * count(*) FROM outbox").fetchone()
        return int(row[0])

    # the cap --------------------------------------------------------------------
    def enforce_cap(self) -> None:
        with self._lock:
            self._enforce_cap()

    def _enforce_cap(self) -> None:
        try:
            size = int(self._db.execute(
                "SELECT coalesce(sum(length(body)), 0) + 48 * count(*) FROM outbox").fetchone()[0])
            if size <= self.max_bytes:
                return
            target = int(self.max_bytes * 0.9)
            # 1. reduce the oldest full samples to their counting fields
            while size > target:
                rows = self._db.execute(
                    "SELECT seq, body FROM outbox WHERE kind=? AND lite=0 ORDER BY seq LIMIT 500", (KIND_SAMPLE,)
                ).fetchall()
                if not rows:
                    break
                self._db.execute("BEGIN")
                for seq, body in rows:
                    lite = _enc.encode(lite_copy(_sample_dec.decode(body)))
                    size -= len(body) - len(lite)
                    self._db.execute("UPDATE outbox SET lite=1, body=? WHERE seq=?", (lite, seq))
                    self.reduced_total += 1
                    if size <= target:
                        break
                self._db.execute("COMMIT")
            # 2. still too big: drop the oldest rows
            while size > target:
                rows = self._db.execute("SELECT seq, length(body) FROM outbox ORDER BY seq LIMIT 500").fetchall()
                if not rows:
                    break
                gone = 0
                while gone < len(rows) and size > target:  # the oldest rows, just enough of them
                    size -= rows[gone][1] + 48
                    gone += 1
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (rows[gone - 1][0],))
                self.dropped_total += gone
            if self.dropped_total or self.reduced_total:
                log.warning("outbox over its cap: %d samples reduced to counting fields, %d rows dropped so far",
                            self.reduced_total, self.dropped_total)
        except sqlite3.Error as err:
            self._rollback()
            log.error("outbox cap enforcement failed: %s", err)


def _decode(kind: str, body: bytes) -> Sample | Event:
    return _sample_dec.decode(body) if kind == KIND_SAMPLE else _event_dec.decode(body)
