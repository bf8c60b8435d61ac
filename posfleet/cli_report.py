"""``posfleet report ops``: the operations service report for a period, from the server's database.

Reads the stored roll-ups (the running server keeps them current); figures equal those of
``GET /api/v1/availability`` and ``GET /api/v1/reports/ops`` for the same period (``--month 2026-11``,
``--quarter 2026Q4`` or ``--from 2026-10-01 --to 2026-10-31``, days in the fleet's zone, the last included).
``--format pdf`` prints the A4 HTML with headless Chromium (server/reports/pdf.py; ``[reports] chromium`` in the settings). Exit codes:
0 written, 2 bad option or configuration (the message names it; also no browser for the PDF), 1 the browser
failed or timed out (its stderr tail is shown).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click


async def _report(config_path: str, period_args: dict[str, str | None], county: str | None, fmt: str,
                  lang: str | None, part: str) -> bytes:
    from server.app import make_clock
    from server.availability.service import Availability
    from server.registry.models import FieldError
    from server.registry.service import Registry
    from server.reports.ops import build, render
    from server.reports.pdf import ChromiumMissing, PdfError
    from server.reports.periods import resolve
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
            period = resolve(svc, **period_args)
        except FieldError as err:
            raise click.BadParameter(err.message, param_hint=f"--{err.field}") from err
        data = await build(svc, storage, period.start, period.end, county, lang or settings.reports.lang,
                           period=period, part=part)
    finally:
        await storage.close()
    try:
        return await render(data, fmt, settings)
    except ChromiumMissing as err:
        raise click.UsageError(f"--format pdf: {err}") from err
    except PdfError as err:
        raise click.ClickException(f"the PDF was not printed: {err}") from err


@click.command("ops")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the server's TOML settings")
@click.option("--month", default=None, help="a calendar month in the fleet's time zone: 2026-11")
@click.option("--quarter", default=None, help="a calendar quarter: 2026Q4")
@click.option("--from", "start", default=None,
              help="first day (2026-10-01), or a whole hour in the fleet's time zone (2026-10-01T08:00) or with its "
                   "offset (2026-10-01T08:00:00+08:00); with --to")
@click.option("--to", "end", default=None,
              help="last day, included (2026-10-31), or a whole hour as for --from, excluded")
@click.option("--county", default=None, help="only this county (no contract tier: it is province-wide)")
@click.option("--format", "fmt", type=click.Choice(["html", "csv", "xlsx", "pdf"]), default="html", show_default=True)
@click.option("--lang", type=click.Choice(["zh", "en"]), default=None, help="[reports] lang by default (zh)")
@click.option("--appendix", is_flag=True, help="only the inspection appendix (per county files for a large fleet)")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="file to write (default: stdout)")
def command(config_path: str, month: str | None, quarter: str | None, start: str | None, end: str | None,
            county: str | None, fmt: str, lang: str | None, appendix: bool, out: str | None) -> None:
    """Operations service report for one period (--month, --quarter, or --from and --to): cover, counting rule and
    tier clause, fleet, counties, institutions, charts, network service levels, flagged units, faults, carrier
    outages, swaps and repairs, SIM data use, spare stock, recommendations, signatures, inspection appendix.
    Chinese unless --lang en; HTML prints on A4; pdf is that HTML printed by headless Chromium; xlsx has typed cells."""
    period = {"month": month, "quarter": quarter, "start": start, "end": end}
    data = asyncio.run(_report(config_path, period, county, fmt, lang, "appendix" if appendix else "report"))
    if out:
        Path(out).write_bytes(data)
        click.echo(f"wrote {out} ({len(data)} bytes)", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
