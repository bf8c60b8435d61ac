"""Tables for spreadsheets: CSV that Excel and WPS open without damage, and XLSX with typed cells (issue 14).

One writer for every export the server offers (the registry's units and institutions, the reports, the
dashboard's downloads) and one reader for what comes back (CSV or XLSX uploads), so that the rules below hold
everywhere:

* **Long digit strings stay text.** Excel and WPS turn a CSV cell of digits into a number: an ICCID
  (19-20 digits), an IMEI (15), an IMSI (15) or a numeric SN loses its digits after the 15th and is shown as
  ``8.98604E+19``; an institution code ``0042`` loses its zeros. A *text* column (:class:`Column` ``kind="text"``)
  whose value is all digits is written with a leading tab (``"\t89860012345678901234"``): both programs then
  keep the cell as text and show every digit (the tab is invisible), LibreOffice too. A formula
  (``="8986..."``) would also work in Excel and WPS but is shown literally by LibreOffice and is a formula all
  the same: the tab is not. :func:`cell_text` undoes it on import (a tab before digits only; any other tab
  first is refused as a would-be formula, decision 013). Docs: docs/api.md "Spreadsheets".
* **Formula injection**: text a spreadsheet would run (``=``, ``+``, ``-``, ``@``, tab, CR first) is written
  with a leading ``'`` in CSV (decision 013) and as a plain string cell in XLSX (never a formula).
* **XLSX cells are typed**: numbers are numbers, fractions are numbers with a percent format, times are dates in
  the fleet's time zone (Excel has no zones: the header says which), text columns have the text format ``@``
  so a digit string stays text when edited.
* CSV is UTF-8 with a BOM (Excel would read UTF-8 without one as the ANSI code page) and CRLF line ends;
  uploads may be UTF-8 (with or without BOM) or GB18030.

Pure: rows in, bytes out (and back).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

Kind = Literal["text", "number", "fraction", "time"]

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMULA_FIRST = ("=", "+", "-", "@", "\t", "\r")
TEXT_MARK = "\t"  # before a digit string in a CSV text cell: Excel and WPS keep it as text
_DIGITS = re.compile(r"[0-9]+")
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # XLSX cannot hold these characters


@dataclass(frozen=True)
class Column:
    """One column of an export: the row's ``key``, its headers, and what kind of cell it is.

    ``text``: an identifier or words (digit strings kept as text); ``number``: an int or float; ``fraction``:
    a rate 0..1 (XLSX: a number shown as a percentage; CSV: the fraction); ``time``: epoch seconds or an ISO
    8601 string (CSV: ISO 8601 with the fleet's offset; XLSX: a date-time in the fleet's zone).
    ``label``: turns a stored code into the words shown (e.g. Chinese labels), for ``text`` columns."""

    key: str
    zh: str
    en: str = ""
    kind: Kind = "text"
    label: Callable[[str], str] | None = None

    def header(self, lang: str) -> str:
        return self.zh if lang == "zh" else (self.en or self.key)


def neutralise(value: str) -> str:
    """A CSV text cell as exported: one a spreadsheet would take for a formula gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_FIRST) else value


def protect(value: str) -> str:
    """A CSV text cell as written: digit strings with :data:`TEXT_MARK`, formulas neutralised."""
    if _DIGITS.fullmatch(value):
        return TEXT_MARK + value
    return neutralise(value)


def cell_text(value: str) -> str:
    """An uploaded cell as text: the tab Excel or WPS kept before a digit string goes (also ``="123"``, the
    other form people use to keep digits as text). Anything else is returned unchanged."""
    if value.startswith(TEXT_MARK) and _DIGITS.fullmatch(value[1:].strip()):
        return value[1:].strip()
    if value.startswith('="') and value.endswith('"') and _DIGITS.fullmatch(value[2:-1]):
        return value[2:-1]
    return value


def _time(value: Any, tz: ZoneInfo) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz)
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=tz)


def _csv_value(col: Column, value: Any, tz: ZoneInfo) -> Any:
    if value is None:
        return ""
    if col.kind == "time":
        dt = _time(value, tz)
        return "" if dt is None else dt.astimezone(tz).isoformat(timespec="seconds")
    if col.kind in ("number", "fraction") and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value)
    if col.label is not None:
        text = col.label(text)
    return protect(text)


def write_csv(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], lang: str = "zh",
              tz: str = "Asia/Shanghai") -> bytes:
    """A header row and one row per item: UTF-8 with BOM, CRLF, text safe for Excel and WPS."""
    zone = ZoneInfo(tz)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.header(lang) for c in columns])
    for r in rows:
        w.writerow([_csv_value(c, r.get(c.key), zone) for c in columns])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


@dataclass
class Sheet:
    """One worksheet of :func:`write_xlsx`: a title, columns and rows (and lines of text above the table)."""

    title: str
    columns: Sequence[Column]
    rows: Iterable[Mapping[str, Any]]
    notes: Sequence[str] = ()


def write_xlsx(sheets: Sequence[Sheet], lang: str = "zh", tz: str = "Asia/Shanghai") -> bytes:
    """An XLSX workbook (openpyxl, write-only: memory stays flat on 50,000 rows) with typed cells: see the
    module's docstring. Time columns say their zone in the header (``最后上报时间 (UTC+08:00)``)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    zone = ZoneInfo(tz)
    wb = Workbook(write_only=True)
    bold = Font(bold=True)
    for sheet in sheets:
        ws = wb.create_sheet(_sheet_title(sheet.title))
        for note in sheet.notes:
            ws.append([_string(ws, note, WriteOnlyCell)])
        heads = []
        for c in sheet.columns:
            text = c.header(lang)
            if c.kind == "time":
                text += f" ({_zone_label(zone)})"
            cell = _string(ws, text, WriteOnlyCell)
            cell.font = bold
            heads.append(cell)
        ws.append(heads)
        for i, c in enumerate(sheet.columns):
            ws.column_dimensions[_letter(i)].width = max(10, min(40, len(c.header(lang)) * 2 + 4))
        for r in sheet.rows:
            ws.append([_xlsx_cell(ws, c, r.get(c.key), zone, WriteOnlyCell) for c in sheet.columns])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _letter(i: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(i + 1)  # type: ignore[no-any-return]


def _sheet_title(title: str) -> str:
    return re.sub(r"[\[\]:*?/\\]", " ", title)[:31] or "Sheet"


def _zone_label(zone: ZoneInfo) -> str:
    off = datetime.now(zone).utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _string(ws: Any, text: str, make: Any) -> Any:
    cell = make(ws, value=_ILLEGAL_XML.sub("", text))
    cell.data_type = "s"  # never a formula, whatever it starts with
    return cell


def _xlsx_cell(ws: Any, col: Column, value: Any, zone: ZoneInfo, make: Any) -> Any:
    if value is None or value == "":
        return None
    if col.kind == "time":
        dt = _time(value, zone)
        cell = make(ws, value=dt.astimezone(zone).replace(tzinfo=None) if dt is not None else None)
        cell.number_format = "yyyy-mm-dd hh:mm:ss"
        return cell
    if col.kind in ("number", "fraction") and isinstance(value, int | float) and not isinstance(value, bool):
        cell = make(ws, value=value)
        if col.kind == "fraction":
            cell.number_format = "0.00%"
        return cell
    text = str(value)
    if col.label is not None:
        text = col.label(text)
    cell = _string(ws, text, make)
    cell.number_format = "@"
    return cell


def read_xlsx(data: bytes) -> list[list[str]]:
    """The first worksheet of an uploaded XLSX as rows of text (numbers as written: ``12`` not ``12.0``;
    dates as ISO 8601), for the same importer as CSV. Raises ``ValueError`` if it is not an XLSX file."""
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, OSError, ValueError) as err:
        raise ValueError(f"not an XLSX workbook: {err}") from err
    try:
        ws = wb.worksheets[0]
        out = []
        for row in ws.iter_rows(values_only=True):
            out.append([_text(v) for v in row])
        return out
    finally:
        wb.close()


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, datetime):
        return v.isoformat(timespec="seconds")
    return str(v)


def is_xlsx(data: bytes) -> bool:
    """An upload's kind by its first bytes (XLSX is a ZIP archive)."""
    return data[:4] == b"PK\x03\x04"
