"""The outbox: durable, deleted only on acknowledgement, bounded by its cap."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Outbox
from wire.messages import CLOCK_CHECKED, CLOCK_CORRECTED, CLOCK_UNVERIFIED, Check, Event, FsStat, Sample


def full_sample(ts: int, state: int = 0) -> Sample:
    return Sample(seq=0, ts=ts, cpu=12.5, load1=0.3, mem_used_mb=300, mem_avail_mb=700, uptime_s=1000,
                  fs=[FsStat("/", 8000, 4000, True), FsStat("/data", 16000, 2000, True)], connected=True, rtt_ms=80,
                  checks={"printer": Check(state, "paper out" if state else ""), "storage": Check(0)},
                  signal_dbm=-80, csq=16)


def test_rows_survive_reopen_and_go_only_on_ack(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    seqs = [ob.add(full_sample(60 * i), boot_id="b", boottime=float(i)) for i in range(10)]
    epoch = ob.epoch
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob.epoch == epoch, "the epoch is stable across restarts"
    rows = ob.pending(100)
    assert [r.seq for r in rows] == seqs, "oldest first"
    assert ob.pending(1, newest=True)[0].seq == seqs[-1]
    assert ob.delete([(seqs[0], seqs[4])]) == 5
    assert [r.seq for r in ob.pending(100)] == seqs[5:]
    assert [r.seq for r in ob.pending(100, exclude={seqs[5]})] == seqs[6:]


def test_cap_reduces_detail_first_and_keeps_counting_fields(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=60_000)
    for i in range(400):
        ob.add(full_sample(60 * i, state=1 if i % 7 == 0 else 0), boot_id="b", boottime=0.0)
    ob.enforce_cap()
    assert ob.size_bytes() <= 60_000
    assert ob.count() == 400, "nothing dropped while reducing detail is enough"
    rows = ob.pending(400)
    lite = [r.item for r in rows if r.item.lite]
    assert lite, "the oldest samples lost their detail"
    assert not rows[-1].item.lite, "the newest keep theirs"
    for s in lite:
        assert s.cpu is None and s.fs == []
        assert s.connected is True and s.rtt_ms == 80 and s.interval == 60
        assert set(s.checks) == {"printer", "storage"}
    assert [s.checks["printer"].state for s in lite] == [1 if (s.ts // 60) % 7 == 0 else 0 for s in lite]
    assert ob.reduced_total == len(lite) and ob.dropped_total == 0


def test_cap_drops_oldest_when_reduction_is_not_enough(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=20_000)
    for i in range(800):
        ob.add(full_sample(60 * i), boot_id="b", boottime=0.0)
    ob.enforce_cap()
    assert ob.size_bytes() <= 20_000
    assert ob.dropped_total > 0
    rows = ob.pending(1000)
    assert rows[-1].item.ts == 60 * 799, "the newest are kept"
    assert rows[0].item.ts > 0, "the oldest went"


def test_unchecked_clock_rows_are_held_then_redated_onto_their_slot(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    # the terminal booted believing it is early 1970; samples on its (wrong) minute grid
    for i in range(3):
        ob.add(Sample(seq=0, ts=600 + 60 * i, clock=CLOCK_UNVERIFIED), boot_id="boot1", boottime=100.0 + 60 * i)
    ob.add(Event(seq=0, ts=650, kind="inventory"), boot_id="boot1", boottime=150.0, held=True)
    assert ob.pending(10) == [], "nothing is sent before the clock is checked"
    # the server says it is 1,795,000,000 when boot time reads 400.0
    assert ob.redate("boot1", 1_795_000_000.0, 400.0) == 4
    rows = ob.pending(10)
    samples = [r.item for r in rows if r.kind == "s"]
    # 1,795,000,000 - (400 - 100) = 1,794,999,700, snapped to the minute grid: ...720
    assert [s.ts for s in samples] == [1_794_999_720, 1_794_999_780, 1_794_999_840]
    assert all(s.clock == CLOCK_CORRECTED for s in samples)
    assert [r.item.ts for r in rows if r.kind == "e"] == [1_794_999_750], "events re-dated too, not snapped"


def test_rows_of_an_earlier_boot_are_released_unverified(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.add(Sample(seq=0, ts=1000, clock=CLOCK_UNVERIFIED), boot_id="old", boottime=5.0)
    ob.add(Sample(seq=0, ts=1060, clock=CLOCK_CHECKED), boot_id="new", boottime=5.0)
    assert len(ob.pending(10)) == 1
    assert ob.release_old_boots("new") == 1
    rows = ob.pending(10)
    assert len(rows) == 2 and rows[0].item.clock == CLOCK_UNVERIFIED


def test_outbox_on_a_read_only_file_raises_outbox_error(tmp_path: Path) -> None:
    import sqlite3

    from agent.outbox import OutboxError

    ob = Outbox(tmp_path / "o.sqlite")
    ob._db.execute("PRAGMA query_only=ON")  # as the disk would refuse writes
    try:
        ob.add(full_sample(0), boot_id="b", boottime=0.0)
    except OutboxError as err:
        assert "write failed" in str(err)
    else:
        raise AssertionError("a refused write must raise OutboxError")
    assert isinstance(ob._db, sqlite3.Connection)


def test_outbox_is_wal_with_full_sync(tmp_path: Path) -> None:
    """Survives a power cut: write-ahead log, and every commit synced to the disk (synchronous=FULL)."""
    import sqlite3

    ob = Outbox(tmp_path / "o.sqlite")
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2, "FULL"
    ob.close()
    other = sqlite3.connect(tmp_path / "o.sqlite")
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal", "WAL is recorded in the file"
    other.close()


def test_an_unreadable_row_is_dropped_and_counted_not_fatal(tmp_path: Path) -> None:
    """A row whose body was damaged inside an otherwise sound page (SQLite has no checksum to see it): reading,
    re-dating and the cap drop that row and count it, instead of raising at every start of the agent."""
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=4_000)
    seqs = [ob.add(full_sample(60 * i), boot_id="b", boottime=0.0) for i in range(5)]
    held = ob.add(Sample(seq=0, ts=600, clock=CLOCK_UNVERIFIED), boot_id="b", boottime=1.0)
    ob._db.execute("UPDATE outbox SET body=? WHERE seq IN (?, ?)", (b"\xc1garbage", seqs[1], held))
    assert [r.seq for r in ob.pending(10)] == [seqs[0], *seqs[2:]]
    assert ob.redate("b", 1_800_000_000.0, 10.0) == 1  # the held row was damaged: nothing left to re-date
    ob._db.execute("UPDATE outbox SET body=? WHERE seq=?", (b"\xc1", seqs[2]))
    for i in range(40):
        ob.add(full_sample(6000 + 60 * i), boot_id="b", boottime=0.0)
    ob.enforce_cap()
    assert ob.unreadable_total == 3
    assert ob.count() == 6 + 40 - 3 - ob.dropped_total
