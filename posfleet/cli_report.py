"""``posfleet report ops``: the operations service report for a period, from the server's database.

Reads the stored roll-ups (the running server keeps them current); figures equal those of
``GET /api/v1/availability`` and ``GET /api/v1/reports/ops`` for the same period. ``--format pdf`` prints the
A4 HTML with headless Chromium (server/reports/pdf.py; ``[reports] chromium`` in the settings). Exit codes:
0 written, 2 bad option or configuration (the message names it; also no browser for the PDF), 1 the browser
failed or timed out (its stderr tail is shown).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click


async def _report(config_path: str, start: str, end: str, county: str | None, fmt: str, lang: str) -> bytes:
    from server.app import make_clock
    from server.availability.service import Availability
    from server.registry.models import FieldError
    from server.registry.service import Registry
    from server.reports.ops import build, render_csv, render_html
    from server.reports.pdf import ChromiumMissing, PdfError, html_to_pdf
    from server.settings import SettingsError, load
    from server.storage import open_storage

    try:
        settings = load(config_path)
    except SettingsError as err:
        raise click.UsageError(str(err)) from err
    clock = make_clock(settings)
    storage = open_storage(settings.storage.url, settings.base_dir)
    await storage.open()
    try:
        registry = Registry(settings, storage, clock.now)
        svc = Availability(settings, storage, registry, clock)
        await svc.load()
        try:
            a, b = svc.period(start, end)
        except FieldError as err:
            raise click.BadParameter(err.message, param_hint=f"--{err.field}") from err
        data = await build(svc, storage, a, b, county, lang)
    finally:
        await storage.close()
    if fmt == "csv":
        return render_csv(data)
    if fmt == "pdf":
        try:
            return await html_to_pdf(render_html(data), settings.reports.chromium, settings.reports.pdf_timeout_s)
        except ChromiumMissing as err:
            raise click.UsageError(f"--format pdf: {err}") from err
        except PdfError as err:
            raise click.ClickException(f"the PDF was not printed: {err}") from err
    return render_html(data).encode("utf-8")


@click.command("ops")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the server's TOML settings")
@click.option("--from", "start", required=True,
              help="first day (2026-10-01), or a whole hour in the fleet's time zone (2026-10-01T08:00) or with its "
                   "offset (2026-10-01T08:00:00+08:00)")
@click.option("--to", "end", required=True,
              help="last day, included (2026-10-31), or a whole hour as for --from, excluded")
@click.option("--county", default=None, help="only this county")
@click.option("--format", "fmt", type=click.Choice(["html", "csv", "pdf"]), default="html", show_default=True)
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="file to write (default: stdout)")
def command(config_path: str, start: str, end: str, county: str | None, fmt: str, lang: str, out: str | None) -> None:
    """Operations service report: fleet rates and tier, counties, institutions, flagged units, faults,
    carrier outages, swaps and repairs. Chinese labels unless --lang en; HTML prints on A4; pdf is that HTML printed by headless Chromium."""
    data = asyncio.run(_report(config_path, start, end, county, fmt, lang))
    if out:
        Path(out).write_bytes(data)
        click.echo(f"wrote {out} ({len(data)} bytes)", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
