"""The accounts' store (issue 18): named users, their dashboard sessions, and API tokens with owner, scope,
expiry and last use. One implementation for both backends, on the engine's surface (``engine.py``), mixed into
:class:`~server.storage.sqlite.SqliteStorage` and :class:`~server.storage.postgres.PostgresStorage`.

Nothing here is cached: a disabled user, an ended session or a revoked token is refused by the next request in
every server process (decision 010). Requests checking their tokens or sessions at once share one statement sent
after each of them asked (decision 042). Passwords, TOTP secrets' checks and recovery codes are hashed by
``server/auth/accounts.py``; this store keeps what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

USER_FIELDS = ("role", "scope", "password", "totp_secret", "totp_pending", "totp_step", "recovery", "disabled",
               "failures", "locked_until", "last_login")
_USER_COLS = ("name, role, scope, password, totp_secret, totp_pending, totp_step, recovery, disabled, failures, "
              "locked_until, created, last_login")


# a request's token or session check (AccountStore._checked): the key first; {stamp}, {cond} filled in there
_TOKEN_SQL = ("SELECT t.hash, t.name, t.role, t.revoked, d.owner, d.scope, d.expires, d.last_used, d.last_client, "
              "{stamp} FROM tokens t LEFT JOIN token_details d ON d.hash = t.hash WHERE {cond}")
_SESSION_SQL = ("SELECT s.id, s.user_name, s.csrf, s.created, s.last_seen, s.expires, s.client, u.role, u.scope, "
                "u.disabled, {stamp} FROM sessions s JOIN users u ON u.name = s.user_name "
                "WHERE {cond} AND s.ended IS NULL")

Within = tuple[tuple[str, ...], tuple[str, ...]] | None  # (cities, counties) of a scope; None: the province


def places_sql(within: Within, prefix: str = "") -> tuple[str, list[Any]]:
    """A condition on ``institutions`` (columns ``prefix``county / region) true for those in ``within``, and its
    arguments: the one query filter every domain applies for a scoped caller (issue 18)."""
    if within is None:
        return "1 = 1", []
    cities, counties = within
    conds, args = [], []
    if counties:
        conds.append(f"{prefix}county IN ({','.join('?' * len(counties))})")
        args += list(counties)
    if cities:
        conds.append(f"{prefix}region IN ({','.join('?' * len(cities))})")
        args += list(cities)
    return f"({' OR '.join(conds) or '1 = 0'})", args


InScope = Callable[[str], tuple[str, list[Any]]]  # a column -> a condition true for a scope's registered SNs


def units_within_sql(within: Within, sn_col: str = "sn") -> tuple[str, list[Any]]:
    """A condition on ``sn_col`` true for the units whose institution lies in ``within`` (a unit without an
    institution belongs to the province alone)."""
    cond, args = places_sql(within)
    if within is None:
        return cond, args
    return (f"{sn_col} IN (SELECT r.sn FROM registry r WHERE r.institution IN (SELECT code FROM institutions "
            f"WHERE {cond}))"), args


def jobs_within_sql(within: Within, id_col: str = "cmd_jobs.id", in_scope: InScope | None = None
                    ) -> tuple[str, list[Any]]:
    """A condition on a job id column (``cmd_jobs.id``) true for the jobs whose every command is to a unit in
    ``within`` (and that have one): a scoped caller's jobs. A job reaching one unit outside is the province's.
    ``in_scope``: the units' condition (default :func:`units_within_sql`; the audit passes the scope's kept SNs)."""
    if within is None:
        return "1 = 1", []
    cond, args = in_scope("c.sn") if in_scope is not None else units_within_sql(within, "c.sn")
    return (f"(EXISTS (SELECT 1 FROM cmd_commands c WHERE c.job = {id_col}) AND NOT EXISTS "
            f"(SELECT 1 FROM cmd_commands c WHERE c.job = {id_col} AND NOT {cond}))"), args


def audit_within_sql(within: Within, target_col: str = "audit.target", in_scope: InScope | None = None
                     ) -> tuple[str, list[Any]]:
    """A condition on the audit's ``target`` true for the rows about a scoped caller's units: a unit's SN (a
    command, its states) or one of its jobs (created, aborted, finished). Other rows (API requests by path,
    sign-ins, users, tokens, alerts, packages) are the province's (decision 031). ``in_scope``: a condition true
    for the scope's registered SNs on a given column, the scope's kept SNs as one set (``AuditStore``, decision
    036); default: :func:`units_within_sql`'s subquery on the registry and the institutions, the same SNs."""
    if within is None:
        return "1 = 1", []
    units, uargs = in_scope(target_col) if in_scope is not None else units_within_sql(within, target_col)
    jobs, jargs = jobs_within_sql(within, "j.id", in_scope)
    return f"({units} OR {target_col} IN (SELECT j.id FROM cmd_jobs j WHERE {jobs}))", [*uargs, *jargs]


def _user(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["recovery"] = json.loads(d["recovery"] or "[]")
    d["disabled"] = bool(d["disabled"])
    return d


class AccountStore:
    """Users, sessions, tokens (a scope's jobs: ``CommandStore.jobs_within``, server/storage/commands.py)."""

    # users ---------------------------------------------------------------------------------------------------
    async def add_user(self, name: str, role: str, scope: str, password: str, created: float) -> bool:
        """False when a user of that name exists already."""
        async with self.write() as db:  # type: ignore[attr-defined]
            cur = await db.execute("INSERT INTO users(name, role, scope, password, created) VALUES (?,?,?,?,?) "
                                   "ON CONFLICT(name) DO NOTHING", (name, role, scope, password, created))
            return bool(cur.rowcount == 1)

    async def get_user(self, name: str) -> dict[str, Any] | None:
        row = await self._quick_one(f"SELECT {_USER_COLS} FROM users WHERE name=?", (name,))  # type: ignore[attr-defined]
        return _user(row) if row else None

    async def list_users(self) -> list[dict[str, Any]]:
        return [_user(r) for r in await self._all(f"SELECT {_USER_COLS} FROM users ORDER BY name")]  # type: ignore[attr-defined]

    async def update_user(self, name: str, **fields: Any) -> bool:
        """Set some of :data:`USER_FIELDS`; False when there is no such user."""
        bad = set(fields) - set(USER_FIELDS)
        if bad or not fields:
            raise ValueError(f"update_user: not a user field: {', '.join(sorted(bad)) or '(none)'}")
        if "recovery" in fields:
            fields["recovery"] = json.dumps(fields["recovery"])
        if "disabled" in fields:
            fields["disabled"] = int(bool(fields["disabled"]))
        sets = ", ".join(f"{k}=?" for k in fields)
        async with self.write() as db:  # type: ignore[attr-defined]
            cur = await db.execute(f"UPDATE users SET {sets} WHERE name=?", (*fields.values(), name))
            return bool(cur.rowcount)

    async def sign_in_failed(self, name: str, now: float, max_failures: int, lock_s: float) -> tuple[int, float]:
        """One more failure for ``name`` (one transaction: two processes cannot both miss one): (failures in a
        row, locked until: 0 when not locked). Reaching ``max_failures`` locks for ``lock_s`` and starts the count
        again."""
        async with self.write() as db:  # type: ignore[attr-defined]
            cur = await db.execute("UPDATE users SET failures = failures + 1 WHERE name=? RETURNING failures, "
                                   "locked_until", (name,))
            row = await cur.fetchone()
            if row is None:
                return 0, 0.0
            failures, locked = int(row[0]), float(row[1])
            if failures >= max_failures:
                locked = now + lock_s
                await db.execute("UPDATE users SET failures=0, locked_until=? WHERE name=?", (locked, name))
            return failures, locked if locked > now else 0.0

    # sessions ------------------------------------------------------------------------------------------------
    async def add_session(self, sid: str, user: str, csrf: str, created: float, expires: float,
                          client: str) -> None:
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.execute("INSERT INTO sessions(id, user_name, csrf, created, last_seen, expires, client) "
                             "VALUES (?,?,?,?,?,?,?)", (sid, user, csrf, created, created, expires, client[:100]))

    async def find_session(self, sid: str, now: float) -> dict[str, Any] | None:
        """The session in force (not ended, not expired at ``now``) with its user's role, scope and disabled flag.
        Read as :meth:`find_token`: never cached, one statement for the sessions checked at once, with the
        registry's stamp."""
        d = await self._checked("session", sid, _SESSION_SQL, "s.id")
        return d if d is not None and d["expires"] > now else None

    async def touch_session(self, sid: str, now: float, expires: float) -> None:
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.execute("UPDATE sessions SET last_seen=?, expires=? WHERE id=? AND ended IS NULL "
                             "AND last_seen <= ?", (now, expires, sid, now))  # (a late older write: no effect)

    async def end_sessions(self, now: float, sid: str | None = None, user: str | None = None) -> int:
        """End one session, or every session of ``user``; how many were in force."""
        where, args = ("id=?", (sid,)) if sid is not None else ("user_name=?", (user,))
        async with self.write() as db:  # type: ignore[attr-defined]
            cur = await db.execute(f"UPDATE sessions SET ended=? WHERE {where} AND ended IS NULL", (now, *args))
            return int(cur.rowcount)

    async def list_sessions(self, now: float, user: str | None = None) -> list[dict[str, Any]]:
        """Sessions in force, newest first (never their id)."""
        sql = ("SELECT user_name, created, last_seen, expires, client FROM sessions WHERE ended IS NULL AND "
               "expires > ?")
        args: list[Any] = [now]
        if user is not None:
            sql += " AND user_name=?"
            args.append(user)
        return [dict(r) for r in await self._all(sql + " ORDER BY created DESC", args)]  # type: ignore[attr-defined]

    # tokens --------------------------------------------------------------------------------------------------
    async def add_token(self, name: str, role: str, token_hash: str, created: float, owner: str = "",
                        scope: str = "province", expires: float | None = None) -> None:
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.execute("INSERT INTO tokens(hash, name, role, created) VALUES (?,?,?,?)",
                             (token_hash, name, role, created))
            await db.execute("INSERT INTO token_details(hash, owner, scope, expires) VALUES (?,?,?,?)",
                             (token_hash, owner, scope, expires))

    async def find_token(self, token_hash: str) -> dict[str, Any] | None:
        """Read on every request, never cached: a revocation committed by any process (``posfleet server token
        revoke``) is refused by the next request in every server process. Requests checking their tokens at once
        share one statement (:meth:`Engine.read_together`, decision 042), which reads the registry's stamp too
        (:func:`stamp_once`). None: unknown or revoked (an expired token is returned with its ``expires``: the
        caller says why it is refused)."""
        d = await self._checked("token", token_hash, _TOKEN_SQL, "t.hash")
        if d is None or d.pop("revoked"):
            return None
        del d["hash"]
        d["owner"] = d["owner"] or ""
        d["scope"] = d["scope"] or "province"
        d["last_client"] = d["last_client"] or ""
        return d

    async def _checked(self, kind: str, key: str, select: str, column: str) -> dict[str, Any] | None:
        """``key``'s row of ``select`` (its first column; ``{cond}``: ``column`` is one of the keys asked for at once,
        ``{stamp}``: the registry's stamp), in one statement with the keys other requests of this process ask for
        at the same moment (:meth:`Engine.read_together`); the stamp taken for this request (:func:`stamp_once`).
        None: no such row."""

        def statement(keys: list[str]) -> tuple[str, list[Any]]:
            cond, args = self.in_set_sql(column, keys, lookup=True)  # type: ignore[attr-defined]
            version, units = self._stamp_sql()  # type: ignore[attr-defined]
            return select.format(stamp=f"{version} AS stamp_version, {units} AS stamp_units", cond=cond), args

        rows = await self.read_together(kind, key, statement)  # type: ignore[attr-defined]
        row = next((r for r in rows if r[0] == key), None)
        if row is None:
            return None
        d = dict(row)
        self.stamp_seen(d.pop("stamp_version"), d.pop("stamp_units"))  # type: ignore[attr-defined]
        return d

    async def token_used(self, token_hash: str, ts: float, client: str) -> None:
        """Note the last use (the caller writes at most once a minute per token, or at once from a new address). An
        older use written after a newer one (two processes, or two writes under way) leaves the newer."""
        async with self.write() as db:  # type: ignore[attr-defined]
            await db.execute("INSERT INTO token_details(hash, last_used, last_client) VALUES (?,?,?) "
                             "ON CONFLICT(hash) DO UPDATE SET last_used=excluded.last_used, "
                             "last_client=excluded.last_client WHERE token_details.last_used IS NULL "
                             "OR token_details.last_used <= excluded.last_used", (token_hash, ts, client[:100]))

    async def list_tokens(self) -> list[dict[str, Any]]:
        """Every token (name, role, created, revoked_at: None while in force, owner, scope, expires, last_used,
        last_client), never the hash; oldest first."""
        rows = await self._all(  # type: ignore[attr-defined]
            "SELECT t.name, t.role, t.created, t.revoked, d.owner, d.scope, d.expires, d.last_used, d.last_client "
            "FROM tokens t LEFT JOIN token_details d ON d.hash = t.hash ORDER BY t.created, t.rowid")
        return [{"name": r["name"], "role": r["role"], "created": r["created"],
                 "revoked_at": float(r["revoked"]) if r["revoked"] else None, "owner": r["owner"] or "",
                 "scope": r["scope"] or "province", "expires": r["expires"], "last_used": r["last_used"],
                 "last_client": r["last_client"] or ""} for r in rows]

    async def revoke_tokens(self, name: str, ts: float) -> tuple[int, int]:
        """``revoked`` holds the revocation time (whole epoch seconds, at least 1); 0 is a token in force."""
        async with self.write() as db:  # type: ignore[attr-defined]
            cur = await db.execute("UPDATE tokens SET revoked=? WHERE name=? AND revoked=0", (max(1, int(ts)), name))
            done = cur.rowcount
            rows = list(await db.execute_fetchall("SELECT count(*) FROM tokens WHERE name=? AND revoked<>0", (name,)))
        return done, int(rows[0][0]) - done
