"""The meta store: small named values in ``meta`` (key -> text) that several domains keep there: the roll-ups'
progress, renewal records (``renewals.py``), backups (``selfcheck.py``), scheduled reports' claims.

One domain store of the storage (issue 15's split of ``sqlite.py``), on whichever engine the storage has, in the SQL
both backends run; ``SqlStore`` inherits it. The version rows every writer bumps (``registry_version``,
``rollup_version``, ...) are the engine's (``Engine._bump``, ``Engine.versions``), and so is ``meta_set_apart``.
"""

from __future__ import annotations


class MetaStore:
    async def meta_get(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def meta_set(self, key: str, value: str) -> None:
        async with self.write() as db:
            await db.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, value))
        self._rollups_written()

    async def meta_claim(self, key: str, value: str) -> bool:
        """Set ``key`` only if it is not set yet; whether this call set it (one process wins, whatever the
        backend: a scheduled report is made and sent once per period)."""
        async with self.write() as db:
            cur = await db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value))
            return bool(cur.rowcount == 1)

    async def meta_replace(self, key: str, expected: str, value: str) -> bool:
        """Set ``key`` to ``value`` only if it still holds ``expected`` (compare and set); whether it did."""
        async with self.write() as db:
            cur = await db.execute("UPDATE meta SET value=? WHERE key=? AND value=?", (value, key, expected))
            return bool(cur.rowcount == 1)

    async def meta_prefix(self, prefix: str) -> dict[str, str]:
        rows = await self._all("SELECT key, value FROM meta WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))
        return {str(r[0]): str(r[1]) for r in rows}
