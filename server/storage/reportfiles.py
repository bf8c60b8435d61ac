"""The stored report files' bytes (issue 17 / issue 15, decision 029): every server process answers a download,
whichever host made the report.

One domain store of the storage, on whichever engine the storage has, in the SQL both backends run; ``SqlStore``
inherits it. A file is written once under its name (a period made again replaces it) and read whole: a report file
is bounded by ``[reports] stored_max_mb`` before it gets here.
"""

from __future__ import annotations

from typing import Any


class ReportFileStore:
    async def put_report_file(self, name: str, fmt: str, body: bytes, sha256: str, made: float) -> None:
        async with self.write() as db:
            await db.execute("INSERT INTO report_files VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                             "format=excluded.format, size=excluded.size, sha256=excluded.sha256, "
                             "made=excluded.made, body=excluded.body", (name, fmt, len(body), sha256, made, body))

    async def report_file(self, name: str) -> tuple[bytes, str, str] | None:
        """A stored file's ``(bytes, format, sha256)``, or None."""
        rows: list[Any] = await self._all(
            "SELECT body, format, sha256 FROM report_files WHERE name=?", (name,))
        return (bytes(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None
