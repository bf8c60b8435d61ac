"""The on-disk outbox: every sample and event is here before it is sent, until the server commits it.

SQLite in WAL mode with ``synchronous=FULL`` survives a power cut after a commit. Rows are
deleted only on the *server's* acknowledgement (a broker PUBACK is not enough). The
outbox has a size cap: past it, the oldest rows lose their raw detail first (the
counting fields stay: time, interval, connected, round trip, each check's state), and
only when every row is already reduced are the oldest rows dropped; both are counted.

A damaged outbox (an empty file, a truncated or overwritten one, a garbage write-ahead log, a
directory where the file should be; or "database disk image is malformed" found later, on a
write or a read) is never fatal and never deleted: the file is renamed aside as
``outbox.sqlite.corrupt-<UTC time>`` (with its ``-wal``/``-shm``), a fresh outbox with a new epoch
is created in its place, and :attr:`Outbox.reset` says why, for the agent's ``buffer_reset`` event.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import struct
import threading
import time
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


#: SQLITE_CORRUPT, SQLITE_NOTADB: the file's content is damaged (not the disk refusing a write)
_CORRUPT_CODES = (11, 26)
#: quarantined outboxes kept next to the fresh one; older ones are removed, so a disk that keeps corrupting
#: files cannot fill itself with copies (each may be up to the cap)
KEEP_QUARANTINED = 3
_SQLITE_MAGIC = b"SQLite format 3\0"
_WAL_MAGIC = (0x377F0682, 0x377F0683)


class OutboxError(Exception):
    """The outbox could not be written (disk full, read-only, corrupt); the sample was not stored.

    ``corrupt``: the file itself is damaged (SQLite said malformed / not a database): quarantine it and
    start a fresh one, rather than retrying the same file for ever."""

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


def _is_corrupt(err: BaseException) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        return True
    text = str(err).lower()
    return "malformed" in text or "not a database" in text


def _failed(what: str, err: sqlite3.Error) -> OutboxError:
    return OutboxError(f"{what}: {err}", corrupt=_is_corrupt(err))


def _wal_header_ok(head: bytes) -> bool:
    """The 32-byte WAL header: magic, format 3007000 and the header checksum (sqlite.org/fileformat2.html)."""
    if len(head) < 32:
        return False
    magic, version = struct.unpack(">II", head[:8])
    if magic not in _WAL_MAGIC or version != 3007000:
        return False
    fmt = ">" if magic & 1 else "<"
    s0 = s1 = 0
    for i in range(0, 24, 8):
        x0, x1 = struct.unpack(fmt + "II", head[i:i + 8])
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return struct.unpack(">II", head[24:32]) == (s0, s1)


def damage(path: Path) -> str:
    """Why the outbox at ``path`` is visibly damaged before SQLite opens it ("" when it looks sound or is absent).

    What SQLite itself would not report: an empty file (a power cut on some filesystems leaves the file, not
    its content) would be taken for a new database, a garbage write-ahead log silently discarded (and with it
    the commits it held, so sequence numbers the server already has would be used again), and a directory
    cannot be told from a read-only filesystem ("unable to open database file")."""
    try:
        if path.is_dir():
            return "a directory is where the outbox file should be"
        if not path.exists():
            return ""
        if not path.is_file():
            return "not a regular file"
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(100)
        if len(head) < 100 or head[:16] != _SQLITE_MAGIC:
            return f"not an SQLite database (bad header, {size} bytes)"
        wal = path.with_name(path.name + "-wal")
        if wal.is_dir():
            return "a directory is where the write-ahead log (-wal) should be"
        if wal.is_file() and wal.stat().st_size > 0:
            with open(wal, "rb") as f:
                if not _wal_header_ok(f.read(32)):
                    return f"garbage write-ahead log (-wal, {wal.stat().st_size} bytes, bad header)"
    except OSError as err:  # unreadable: not ours to judge; opening will say what is wrong
        log.debug("outbox %s not inspected: %s", path, err)
    return ""


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
        self.unreadable_total = 0
        self._since_cap_check = 0
        #: set when a damaged outbox was quarantined and replaced: {"reason", "quarantined"}
        self.reset: dict[str, object] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        why = damage(path)
        if why:
            self._quarantine(why, "start")
        try:
            self._open()
        except OutboxError as err:
            if not err.corrupt:
                raise
            self._quarantine(str(err), "start")  # SQLite found it: not a database, malformed
            self._open()

    def _open(self) -> None:
        path = self.path
        try:
            # a file that cannot be created (read-only filesystem on a fresh terminal) fails here, not later
            db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5)
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {path}: {err}") from err
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # every page of every table read once (0.06 s for a 54 MB outbox in the page cache; a cold 50 MB read
            # from a terminal's eMMC, some tenths of a second): damage found now, at
            # start, rather than by the first write that reaches the damaged page
            check = str(db.execute("PRAGMA quick_check(1)").fetchone()[0])
            if check != "ok":
                raise OutboxError(f"cannot open outbox {path}: quick_check: {check[:200]}", corrupt=True)
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            if row is None:
                epoch = random.SystemRandom().randrange(1, 2**31)
                db.execute("INSERT INTO meta(key, value) VALUES ('epoch', ?)", (str(epoch),))
            else:
                epoch = int(row[0])
        except (sqlite3.Error, ValueError) as err:
            db.close()
            raise OutboxError(f"cannot open outbox {path}: {err}", corrupt=_is_corrupt(err)) from err
        except OutboxError:
            db.close()
            raise
        self._db, self.epoch = db, epoch

    def _quarantine(self, reason: str, when: str) -> None:
        """Rename the damaged outbox (and its -wal, -shm) aside, never deleting it; raises OutboxError when the
        rename itself fails (a read-only filesystem: the agent holds samples in memory meanwhile)."""
        path = self.path
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while any(os.path.lexists(f"{target}{s}") for s in ("", "-wal", "-shm")):
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        try:
            size = path.stat().st_size if path.is_file() else 0
        except OSError:
            size = 0
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{path}{suffix}")
                if os.path.lexists(src):
                    os.replace(src, f"{target}{suffix}")
        except OSError as err:
            raise OutboxError(f"outbox damaged ({reason}) and cannot be moved aside: {err}") from err
        log.error("outbox damaged (%s): moved aside as %s (%d bytes); starting a fresh outbox", reason, target.name, size)
        # the buffer_reset event's data (wire.boundary.BufferResetData): the file's name, not the folder's path
        why = ("found while running: " if when == "running" else "") + reason.replace(str(path), path.name)
        self.reset = {"reason": why[:200], "quarantined": target.name}
        self._prune_quarantined()

    def _prune_quarantined(self) -> None:
        old = sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*"), key=lambda p: p.name)
        old = [p for p in old if not p.name.endswith(("-wal", "-shm"))]
        for p in old[:-KEEP_QUARANTINED] if len(old) > KEEP_QUARANTINED else []:
            for suffix in ("", "-wal", "-shm"):
                q = Path(f"{p}{suffix}")
                try:
                    if q.is_dir() and not q.is_symlink():
                        import shutil

                        shutil.rmtree(q)
                    elif os.path.lexists(q):
                        q.unlink()
                except OSError as err:
                    log.warning("cannot remove old quarantined outbox %s: %s", q.name, err)
            log.warning("removed the oldest quarantined outbox %s (keeping the newest %d)", p.name, KEEP_QUARANTINED)

    def replace_corrupt(self, reason: str) -> None:
        """Damage found while running: quarantine this file and continue on a fresh outbox (new epoch).
        Raises OutboxError when no fresh outbox can be made (the agent then holds samples in memory)."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._quarantine(reason, "running")
            self._open()

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
                raise _failed("outbox write failed", err) from err
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
                raise _failed("outbox delete failed", err) from err
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
                    item = self._readable(seq, kind, body)
                    if item is None:
                        continue
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
                raise _failed("outbox re-date failed", err) from err
        return len(rows)

    def release_old_boots(self, boot_id: str) -> int:
        """Rows from earlier boots whose clock was never checked: send them, marked unverified."""
        with self._lock:
            try:
                cur = self._db.execute("UPDATE outbox SET held=0 WHERE held=1 AND boot_id<>?", (boot_id,))
            except sqlite3.Error as err:
                raise _failed("outbox update failed", err) from err
            return cur.rowcount

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # reading -------------------------------------------------------------------
    def pending(self, limit: int, *, exclude: set[int] | frozenset[int] = frozenset(), newest: bool = False,
                kind: str | None = None) -> list[Row]:
        """Sendable rows (clock resolved), oldest first (or the newest ones when ``newest``); ``kind``: of that kind
        only (``KIND_SAMPLE``, ``KIND_EVENT``)."""
        order = "DESC" if newest else "ASC"
        only, args = ("AND kind=? ", [kind]) if kind is not None else ("", [])
        with self._lock:
            try:
                cur = self._db.execute(
                    f"SELECT seq, kind, ts, clock, body FROM outbox WHERE held=0 {only}ORDER BY seq {order} LIMIT ?",
                    (*args, limit + len(exclude)),
                )
                raw = cur.fetchall()
            except sqlite3.Error as err:
                raise _failed("outbox read failed", err) from err
        out: list[Row] = []
        for seq, kind, ts, clock, body in raw:
            if seq in exclude:
                continue
            with self._lock:
                item = self._readable(seq, kind, body)
            if item is None:
                continue
            item.seq = seq
            out.append(Row(seq, kind, ts, clock, item))
            if len(out) >= limit:
                break
        return out

    def _readable(self, seq: int, kind: str, body: bytes) -> Sample | Event | None:
        """The row's item, or None after dropping a row whose body no longer decodes (damage inside a sound page,
        which no check of SQLite's sees): one row lost and counted, rather than an agent that fails on it at
        every start. Under the lock."""
        try:
            return _decode(kind, body)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as err:
            self.unreadable_total += 1
            log.error("outbox row %d unreadable (%s): dropped (%d so far)", seq, err, self.unreadable_total)
            try:
                self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            except sqlite3.Error as del_err:
                log.error("cannot drop unreadable outbox row %d: %s", seq, del_err)
            return None

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
                    full = self._readable(seq, KIND_SAMPLE, body)
                    if not isinstance(full, Sample):
                        continue
                    lite = _enc.encode(lite_copy(full))
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
