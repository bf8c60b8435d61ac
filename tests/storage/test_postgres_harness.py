"""The tests' own PostgreSQL: made with initdb from the installed binaries on a free loopback port, C collation,
and gone (process and folder) after stop()."""

from __future__ import annotations

from simulator.postgres import Postgres


def test_own_cluster_starts_collates_bytewise_and_is_removed() -> None:
    pg = Postgres().start()
    try:
        url = pg.create("probe")
        assert url.endswith(f":{pg.port}/probe")
        assert pg.psql("SELECT current_setting('port')", "probe") == str(pg.port)
        # byte-wise order as in SQLite: an SN prefix is an index range, and sort orders agree between backends
        assert pg.psql("SELECT string_agg(x, ',' ORDER BY x) FROM (VALUES ('b'), ('B'), ('a')) v(x)", "probe") == "B,a,b"
        proc, folder = pg.proc, pg.dir
    finally:
        pg.stop()
    assert proc is not None and proc.poll() is not None
    assert not folder.exists()
