"""The database schema, written once in SQLite's dialect, and its versions (both backends).

Every table of the server is here, the command service's and the audit's included (they were created by those
domains until schema 3). SQLite runs these scripts as they are; PostgreSQL runs :func:`postgres_ddl` of them
(types mapped, ``samples`` partitioned by time, the audit's append-only rule as a trigger function), so the two
backends cannot drift apart column by column.

Schema versions: SQLite keeps its version in ``PRAGMA user_version``, PostgreSQL in the table
``posfleet_schema``. A database is brought up to :data:`SCHEMA_VERSION` when the server opens it, one step at a
time (each step one transaction with its version, on both backends: a step cut short by a crash left nothing and
is run again; the SQLite steps of before schema 12 are idempotent too, ``CREATE ... IF NOT EXISTS``, as a crash
could cut them then); a database written by a newer server is refused before anything
starts. A SQLite database from before versions existed is version 0: every table it has is kept as it is.
"""

from __future__ import annotations

import re

from .access import ACCESS_SCHEMA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    sn TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    state_ts REAL,
    state_reason TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    latest_ts INTEGER,
    latest TEXT,
    inventory TEXT,
    identity TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    sn TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    interval INTEGER NOT NULL,
    clock INTEGER NOT NULL,
    connected INTEGER NOT NULL,
    rtt_ms INTEGER,
    checks TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_sn_ts ON samples(sn, ts);
CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);
CREATE INDEX IF NOT EXISTS units_last_seen ON units(last_seen, sn);
CREATE TABLE IF NOT EXISTS events (
    sn TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_sn_ts ON events(sn, ts);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0  -- 0: in force; else when it was revoked (epoch seconds)
);
"""

# Registry, roll-ups, outages and alerts (issue 4).
_FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS institutions (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    county TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT '',
    hours TEXT NOT NULL DEFAULT '',
    contact TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS institutions_county ON institutions(county);
CREATE TABLE IF NOT EXISTS registry (
    sn TEXT PRIMARY KEY,
    insurance_sn TEXT NOT NULL DEFAULT '',
    terminal_type TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    vendor TEXT NOT NULL DEFAULT '',
    institution TEXT,
    stock_type TEXT NOT NULL DEFAULT 'deployed',
    status TEXT NOT NULL DEFAULT 'in_service',
    link_type TEXT NOT NULL DEFAULT '4g_vpdn',
    note TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'admin',
    registered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_institution ON registry(institution);
CREATE INDEX IF NOT EXISTS registry_filter ON registry(institution, status, link_type, stock_type, sn);
CREATE INDEX IF NOT EXISTS registry_insurance_sn ON registry(insurance_sn);
CREATE TABLE IF NOT EXISTS status_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sn TEXT NOT NULL,
    from_ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    by TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS status_history_sn ON status_history(sn, from_ts);
CREATE TABLE IF NOT EXISTS rollup_day (
    day INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service INTEGER NOT NULL,
    intact INTEGER NOT NULL,
    netok INTEGER NOT NULL,
    nodata INTEGER NOT NULL,
    hours BLOB NOT NULL,
    PRIMARY KEY (day, sn)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_day_sn ON rollup_day(sn, day);
CREATE TABLE IF NOT EXISTS rollup_month (
    month INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service INTEGER NOT NULL,
    intact INTEGER NOT NULL,
    netok INTEGER NOT NULL,
    nodata INTEGER NOT NULL,
    PRIMARY KEY (month, sn)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outages (
    county TEXT NOT NULL,
    minute INTEGER NOT NULL,
    units INTEGER NOT NULL,
    sns TEXT NOT NULL,
    PRIMARY KEY (county, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outages_minute ON outages(minute);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    sn TEXT,
    county TEXT,
    opened_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    closed_ts INTEGER,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    acked_by TEXT,
    acked_ts REAL,
    webhook TEXT NOT NULL DEFAULT 'none',
    webhook_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts(closed_ts, kind);
CREATE TABLE IF NOT EXISTS data_day (
    sn TEXT NOT NULL,
    day INTEGER NOT NULL,
    within INTEGER NOT NULL,
    carry INTEGER NOT NULL,
    resets INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    first_bytes INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    last_bytes INTEGER NOT NULL,
    PRIMARY KEY (sn, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS data_day_day ON data_day(day);
CREATE TABLE IF NOT EXISTS cell_outages (
    tac INTEGER NOT NULL,
    cell INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    county TEXT NOT NULL,
    units INTEGER NOT NULL,
    sns TEXT NOT NULL,
    PRIMARY KEY (tac, cell, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cell_outages_minute ON cell_outages(minute);
CREATE TABLE IF NOT EXISTS slot_hour (
    day INTEGER NOT NULL,
    sn TEXT NOT NULL,
    hour INTEGER NOT NULL,
    codes BLOB NOT NULL,
    reasons TEXT,
    samples INTEGER NOT NULL,
    PRIMARY KEY (day, sn, hour)
) WITHOUT ROWID;
"""

# Ingest's dead letters: a message that passed the boundary but could not be stored even alone. Kept (bounded)
# with its reason and its validated rows, so nothing is lost and an administrator can see and replay it.
_DEAD_LETTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    sn TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
"""

# The command service's tables: ``cmd_commands``, one row per (command, unit): the signed payload that is (re)sent
# as is, the state with its timestamps, the agent's bounded output; ``cmd_jobs``: a command to many units, with its
# pacing, abort threshold and waves; ``cmd_packages``: signed update packages.
_COMMANDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS cmd_jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL,
    total INTEGER NOT NULL,
    rate_per_min REAL,
    abort_pct REAL,
    min_executed INTEGER NOT NULL DEFAULT 1,
    off_hours INTEGER NOT NULL DEFAULT 0,
    canary INTEGER NOT NULL DEFAULT 0,
    wave_size INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    released INTEGER NOT NULL DEFAULT 0,
    started_mono REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS cmd_commands (
    id TEXT PRIMARY KEY,
    job TEXT,
    wave INTEGER NOT NULL DEFAULT 0,
    sn TEXT NOT NULL,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL,
    issued INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    payload BLOB NOT NULL,
    released INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    sends INTEGER NOT NULL DEFAULT 0,
    sent REAL,
    last_sent_mono REAL,
    delivered REAL,
    started REAL,
    finished REAL,
    code INTEGER,
    output TEXT NOT NULL DEFAULT '',
    token TEXT,
    package TEXT
);
CREATE INDEX IF NOT EXISTS cmd_commands_state ON cmd_commands(state, released);
CREATE INDEX IF NOT EXISTS cmd_commands_sn ON cmd_commands(sn, state);
CREATE INDEX IF NOT EXISTS cmd_commands_job ON cmd_commands(job, wave);
CREATE UNIQUE INDEX IF NOT EXISTS cmd_commands_token ON cmd_commands(token) WHERE token IS NOT NULL;
CREATE TABLE IF NOT EXISTS cmd_packages (
    id TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    version TEXT NOT NULL,
    models TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    signature BLOB NOT NULL,
    endorsement BLOB NOT NULL,
    path TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created REAL NOT NULL
);
"""

# The audit trail. Append-only is enforced by the database itself: triggers abort any UPDATE or DELETE, so a bug
# (or a hurried operator with the API) cannot rewrite history.
_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    status INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, ts);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, ts);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target, ts);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""

# Named users, their dashboard sessions, and what API tokens gained with them (issue 18; server/storage/accounts.py,
# docs/decisions/031-users-scopes-sign-in.md). ``token_details`` sits beside ``tokens`` (a token without a row there
# is an old one: no owner, the province, no expiry) so that the step stays idempotent in SQLite.
_ACCOUNTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT 'province',
    password TEXT NOT NULL,
    totp_secret TEXT NOT NULL DEFAULT '',
    totp_pending TEXT NOT NULL DEFAULT '',
    totp_step INTEGER NOT NULL DEFAULT 0,
    recovery TEXT NOT NULL DEFAULT '[]',
    disabled INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_login REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL,
    expires REAL NOT NULL,
    client TEXT NOT NULL DEFAULT '',
    ended REAL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_name, ended);
CREATE TABLE IF NOT EXISTS token_details (
    hash TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    scope TEXT NOT NULL DEFAULT 'province',
    expires REAL,
    last_used REAL,
    last_client TEXT NOT NULL DEFAULT ''
);
"""

# Hours to recount, written in the same transaction as the samples that touch them (unit, first ts, end of the
# last sample): a process that dies between its commit and its recount loses nothing; the leader drains it.
_RECOUNT_QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS recount_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sn TEXT NOT NULL,
    from_ts INTEGER NOT NULL,
    to_ts INTEGER NOT NULL
);
"""

# Network service levels per unit and local day (issue 17, decision 029): seconds of service time, and of it
# measured / within each clause limit, and with the link down (server/availability/sla.py), kept by the roll-up
# pass so a report covers a quarter after the raw samples are gone.
_SLA_SCHEMA = """
CREATE TABLE IF NOT EXISTS sla_day (
    day INTEGER NOT NULL,
    sn TEXT NOT NULL,
    service_s INTEGER NOT NULL,
    lat_in INTEGER NOT NULL,
    lat_meas INTEGER NOT NULL,
    jit_in INTEGER NOT NULL,
    jit_meas INTEGER NOT NULL,
    loss_in INTEGER NOT NULL,
    loss_meas INTEGER NOT NULL,
    down INTEGER NOT NULL,
    PRIMARY KEY (day, sn)
) WITHOUT ROWID;
"""

# The report files' bytes (issue 17, decision 029): any server process answers a download, not only the host that
# made the report (server/storage/reportfiles.py).
_REPORT_FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS report_files (
    name TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    made REAL NOT NULL,
    body BLOB NOT NULL
);
"""

# When each local day's roll-ups last changed (issue 15/18, decision 032): the ``rollup_version`` of the write that
# touched the day's rows (``rollup_day``, and so its month's ``rollup_month``); day 0 holds the last purge's. The
# availability service keeps per-unit sums of months, days and hours between requests and checks them against
# these stamps, so a write to today's hours leaves last quarter's months cached (server/availability/vectors.py).
_ROLLUP_STAMPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_stamps (
    day INTEGER PRIMARY KEY,
    stamp INTEGER NOT NULL
);
"""

# The SIM-change rule's memory (decision 030): per unit, the ICCID it last took and the agent's time of that report.
# The leader's alert pass reads the identity reports every process stored (``events``, by ``received_at``: the
# partial index keeps that read to the three kinds that carry an ICCID) and compares them with this, so a SIM change
# is raised once, whichever process received it and whichever process leads (server/storage/simwatch.py).
_SIM_WATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_known (
    sn TEXT PRIMARY KEY,
    iccid TEXT NOT NULL,
    ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_identity ON events(received_at) WHERE kind IN ('inventory', 'identity', 'sim_changed');
"""

# The institutions' level (issue 18, decision 028 "Institution levels"): '' when not given. A column added to an
# existing table: SQLite cannot make ALTER TABLE idempotent, so the engine runs each step with its version in one
# transaction (server/storage/engine.py ``_migrate``); PostgreSQL's steps are one transaction each already.
_INSTITUTION_LEVEL_SCHEMA = """
ALTER TABLE institutions ADD COLUMN level TEXT NOT NULL DEFAULT '';
"""

# For the statistics (decision 032): the units not online now, which the map reads each request (a few thousand of
# 50,000 on a normal day) instead of scanning every unit's live row (7 ms of the map's 12 ms of CPU at 50,000
# units); a city's counties, which every statistics request of a city user asks first (a scan of 20,000
# institutions, ~5 ms).
_STATISTICS_INDEXES = """
CREATE INDEX IF NOT EXISTS units_not_online ON units(sn) WHERE online <> 1;
CREATE INDEX IF NOT EXISTS institutions_region ON institutions(region, county);
"""

# A small scope's units by last seen (decision 034): a county's registry list by last seen reads its ~355 units'
# ``last_seen`` from this index alone (one lookup each) and sorts them, instead of walking ``units_last_seen`` over
# ~7,000 other units to find its 50 newest. Every ingest commit that moves a unit's ``last_seen`` updates it too
# (its cost measured in docs/performance-scope.md run 8).
_UNITS_SN_LAST_SEEN = """
CREATE INDEX IF NOT EXISTS units_sn_last_seen ON units(sn, last_seen);
"""

SCHEMA_VERSION = 15
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "the schema of issues 2-11 (units, samples, events, registry, roll-ups, alerts, ...)", (_SCHEMA, _FLEET_SCHEMA)),
    (2, "issue 12: ingest dead letters, events by time (retention)", (_DEAD_LETTER_SCHEMA,)),
    (3, "issue 15: the commands' and the audit's tables belong to storage", (_COMMANDS_SCHEMA, _AUDIT_SCHEMA)),
    (4, "issue 18: named users, sessions, token owners, scopes and expiry", (_ACCOUNTS_SCHEMA,)),
    (5, "issue 18: IP pools, access applications, business interfaces, service statistics", (ACCESS_SCHEMA,)),
    (6, "issue 15: the hours to recount kept with the samples' commit", (_RECOUNT_QUEUE_SCHEMA,)),
    (7, "issue 17: network service levels per unit and day", (_SLA_SCHEMA,)),
    (8, "issue 17: the stored report files' bytes, for every server process", (_REPORT_FILES_SCHEMA,)),
    (9, "issue 15: a sample stored once by (sn, epoch, seq) whatever its ts (PostgreSQL's sample_keys)", ()),
    (10, "issues 15/18: when each day's roll-ups last changed (the figures' cached sums)", (_ROLLUP_STAMPS_SCHEMA,)),
    (11, "issue 15: SIM changes raised from what any process stored (the rule's memory in the database)",
     (_SIM_WATCH_SCHEMA,)),
    (12, "issue 18: the institutions' level", (_INSTITUTION_LEVEL_SCHEMA,)),
    (13, "issue 18: indexes for the statistics (the units not online, a city's counties)", (_STATISTICS_INDEXES,)),
    (14, "issue 18: a small scope's units by last seen from an index (sn, last_seen)", (_UNITS_SN_LAST_SEEN,)),
    # no DDL: from 15 on, every process storing a unit for the first time on PostgreSQL moves meta 'units_heard'
    # (PgEngine.units_grown_sql); the version keeps a server from before it (which would not) off the database
    (15, "issue 15: PostgreSQL notes each unit first stored in meta (the kept lists' stamp)", ()),
]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer server: refused, never downgraded."""


def newer_sentence(v: int) -> str:
    return (f"database schema version {v} is newer than this server's {SCHEMA_VERSION} (written by a newer "
            "posfleet): upgrade the server, or restore the backup taken before the upgrade")


# PostgreSQL ---------------------------------------------------------------------------------------------------
_PG_SAMPLES_KEY = "PRIMARY KEY (sn, epoch, seq)\n) WITHOUT ROWID;\nCREATE INDEX IF NOT EXISTS samples_sn_ts"
_PG_AUDIT_GUARD = """
CREATE OR REPLACE FUNCTION posfleet_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'audit is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_no_change ON audit;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION posfleet_audit_append_only();
"""


# Steps that only PostgreSQL needs (SQLite's step of that version is empty). 9: ``samples``' key there holds ts (a
# partitioned table's key must hold the partition column), so a sample re-dated by its agent after a clock
# correction and resent met no conflict and was stored twice; ``sample_keys`` (unpartitioned) is the sample's
# identity, claimed before the row is inserted (server/storage/postgres.py, decision 024), and the partitioned key
# (sn, epoch, seq, ts) goes: no query used it, and one index less keeps ingest's cost where it was. A database that
# already holds a sample twice keeps the copy stored first (the one SQLite keeps) and loses the later ones.
_PG_SAMPLE_KEYS = """
CREATE TABLE IF NOT EXISTS sample_keys (
    sn TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (sn, epoch, seq)
);
INSERT INTO sample_keys (sn, epoch, seq, ts)
SELECT DISTINCT ON (sn, epoch, seq) sn, epoch, seq, ts FROM samples ORDER BY sn, epoch, seq, received_at, ts
ON CONFLICT DO NOTHING;
DELETE FROM samples s WHERE NOT EXISTS (
    SELECT 1 FROM sample_keys k WHERE k.sn = s.sn AND k.epoch = s.epoch AND k.seq = s.seq AND k.ts = s.ts);
CREATE INDEX IF NOT EXISTS sample_keys_ts ON sample_keys(ts);
ALTER TABLE samples DROP CONSTRAINT IF EXISTS samples_pkey;
"""
_PG_ONLY = {9: _PG_SAMPLE_KEYS}


def postgres_ddl(script: str) -> str:
    """One SQLite script in PostgreSQL's dialect: INTEGER -> BIGINT, REAL -> DOUBLE PRECISION, BLOB -> BYTEA,
    AUTOINCREMENT keys -> identity columns, no WITHOUT ROWID; ``samples`` partitioned by range of ``ts`` (its key
    would hold ``ts``: schema 9 drops it and keeps a sample's identity in ``sample_keys``); the tables ordered by
    insertion (tokens, commands) get an identity ``rowid``; SQLite's audit triggers become one trigger function."""
    s = script.replace(_PG_SAMPLES_KEY, "PRIMARY KEY (sn, epoch, seq, ts)\n) PARTITION BY RANGE (ts);\n"
                       "CREATE INDEX IF NOT EXISTS samples_sn_ts")
    s = re.sub(r"CREATE TRIGGER IF NOT EXISTS audit_no_\w+ .*?END;", "", s, flags=re.S)
    s = s.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    s = re.sub(r"\)\s*WITHOUT ROWID", ")", s)
    s = re.sub(r"\bINTEGER\b", "BIGINT", s)
    s = re.sub(r"\bREAL\b", "DOUBLE PRECISION", s)
    s = re.sub(r"\bBLOB\b", "BYTEA", s)
    s = re.sub(r"^(\s*)interval\b", r'\1"interval"', s, flags=re.M)
    for table in ("tokens", "cmd_commands"):  # last: positional INSERTs stay as in SQLite
        if f"CREATE TABLE IF NOT EXISTS {table} (" in s:
            s += f"\nALTER TABLE {table} ADD COLUMN IF NOT EXISTS rowid BIGINT GENERATED BY DEFAULT AS IDENTITY;\n"
    if "CREATE TABLE IF NOT EXISTS audit" in script:
        s += _PG_AUDIT_GUARD
    return s


# the same steps for PostgreSQL (a database there started at version 3, which held every table then)
PG_MIGRATIONS: list[tuple[int, str, str]] = [
    (3, "every table (schema 3), samples partitioned by day", "\n".join(
        postgres_ddl(s) for n, _w, scripts in MIGRATIONS if n <= 3 for s in scripts)),
    *[(n, what, "\n".join([*(postgres_ddl(s) for s in scripts), _PG_ONLY.get(n, "")]))
      for n, what, scripts in MIGRATIONS if n > 3],
]
