"""The operations report as PDF: the A4 HTML printed by the distribution's headless Chromium.

No PDF library of our own: the HTML (with its ``@page { size: A4 }`` CSS) is already the printable report, so the
PDF is that page printed, and the two cannot disagree. Chromium runs as a subprocess
(``asyncio.create_subprocess_exec``, so the event loop is never blocked) in its own temporary directory (the HTML
file, a throw-away profile, the output) and its own process group, killed whole on the deadline.

The binary is ``[reports] chromium`` in the server settings: empty looks up ``chromium``, ``chromium-browser``
and ``google-chrome`` on PATH; otherwise a path or a name on PATH. Chinese text needs a CJK font
(Debian: ``fonts-wqy-microhei``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", "--no-first-run",
         "--disable-dev-shm-usage", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--mute-audio"]
INSTALL_HINT = "install the Debian packages 'chromium' and 'fonts-wqy-microhei'"


class ChromiumMissing(RuntimeError):  # noqa: N818 - a condition, not a failure of ours
    """No browser to print with; the message names the setting and the package."""


class PdfError(RuntimeError):
    """The browser failed or ran out of time; the message ends with the tail of its stderr."""


def find_chromium(setting: str = "") -> str:
    """The browser to run: the ``reports.chromium`` setting (path or name), else the first candidate on PATH."""
    if setting:
        found = shutil.which(setting)
        if found is None:
            raise ChromiumMissing(f"reports.chromium = {setting!r} is not an executable; fix the setting or "
                                  f"leave it empty to look up {', '.join(CANDIDATES)} on PATH ({INSTALL_HINT})")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(f"no browser to print the PDF with: none of {', '.join(CANDIDATES)} is on PATH and "
                          f"reports.chromium is not set; {INSTALL_HINT}, or set reports.chromium to its path")


def _tail(raw: bytes, lines: int = 15) -> str:
    # Chromium logs a dozen harmless D-Bus complaints on a server without a bus; they would hide the real error
    text = [t for t in raw.decode("utf-8", "replace").strip().splitlines() if "dbus" not in t]
    return "\n".join(text[-lines:]) or "(no output)"


async def html_to_pdf(html: str, chromium: str = "", timeout_s: float = 60.0) -> bytes:
    """Print ``html`` (a whole document) to PDF bytes with headless Chromium.

    Raises :class:`ChromiumMissing` when no browser is found, :class:`PdfError` when it fails, exits without
    a PDF, or takes longer than ``timeout_s`` (then its whole process group is killed).
    """
    exe = find_chromium(chromium)
    # the files (the HTML, Chromium's profile of a few hundred files, the PDF) are written, read and removed
    # in a worker thread: on a busy disk that is tens of milliseconds the event loop would otherwise wait
    tmp = await asyncio.to_thread(_prepare, html)
    try:
        return await _print(exe, Path(tmp), timeout_s)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _prepare(html: str) -> str:
    tmp = tempfile.mkdtemp(prefix="pf-pdf-")
    (Path(tmp) / "report.html").write_text(html, encoding="utf-8")
    return tmp


async def _print(exe: str, tmp: Path, timeout_s: float) -> bytes:
    src, out = tmp / "report.html", tmp / "report.pdf"
    proc = await asyncio.create_subprocess_exec(
        exe, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--print-to-pdf={out}", src.as_uri(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    buf, timed_out = bytearray(), False

    async def drain() -> None:  # stderr read as it comes, so a timed-out browser's tail is kept too
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            buf.extend(chunk)

    reader = asyncio.create_task(drain())
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:  # on the deadline, when the request is cancelled, and after a normal exit: no helper left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 5)
        reader.cancel()
    err = bytes(buf)
    if timed_out:
        raise PdfError(f"{exe} did not finish printing the PDF within {timeout_s:g} s; its stderr:\n"
                       f"{_tail(err)}")
    data = await asyncio.to_thread(lambda: out.read_bytes() if out.exists() else b"")
    if proc.returncode != 0 or not data.startswith(b"%PDF"):
        raise PdfError(f"{exe} exited with status {proc.returncode} and "
                       f"{'no PDF' if not data else 'no valid PDF'}; its stderr:\n{_tail(err)}")
    return data
