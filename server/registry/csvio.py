"""CSV import and export of the registry, as administrators keep it in spreadsheets.

* Export: UTF-8 with a byte-order mark (so spreadsheet programs read the Chinese text), Chinese headers by
  default (``lang="en"`` gives the field codes), CRLF line ends.
* Import: UTF-8 with or without BOM (GB18030 accepted too: files saved by older spreadsheet programs); headers
  in Chinese or as field codes, in any order; Chinese words for codes are accepted (``在用`` = in_service). Each
  bad row is reported with its line number and field and the good rows are kept. Columns that only the export
  writes (SIM, last report...) are ignored on import, so an exported file imports back unchanged.
* A file may hold only some columns: each row gives only the fields of the columns the file has (the key
  column is required). A column the file lacks leaves that field as stored; an empty cell empties a field that
  may be empty (note, insurance SN, institution...) and leaves one that may not (status, link, type, name) as
  stored. A new record takes the defaults for what it lacks.

* Formula injection (a cell a spreadsheet would run: ``=``, ``+``, ``-``, ``@``, tab, CR first): the export
  writes such text cells with a leading ``'`` (shown as text, the ``'`` hidden); the import refuses the row,
  naming the column, unless the cell is quoted that same way (the ``'`` is dropped: an exported file imports
  back unchanged) or is a plain number or phone number (``+86 138 0000 0000``, ``-12.5``). Decision 013.
* Digit strings (ICCID, IMSI, codes with leading zeros) are written so Excel and WPS keep them as text (a
  leading tab) and XLSX is offered with typed cells: both by :mod:`server.exports`, which the import also reads
  (an XLSX upload's first sheet; the tab before digits is dropped).

Pure: bytes in, rows and errors out.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ..exports import (
    FORMULA_FIRST,
    Column,
    Sheet,
    cell_text,
    is_xlsx,
    neutralise,
    read_xlsx,
    write_csv,
    write_xlsx,
)
from .models import LABELS_ZH, Institution, UnitRecord

UNIT_COLUMNS: list[tuple[str, str]] = [
    ("sn", "终端SN"), ("insurance_sn", "医保终端编号"), ("terminal_type", "终端类型"), ("model", "型号"),
    ("vendor", "厂商"), ("institution", "所属机构编码"), ("stock_type", "库存类型"), ("status", "状态"),
    ("link_type", "接入方式"), ("note", "备注"),
]
UNIT_EXPORT_ONLY: list[tuple[str, str]] = [
    ("institution_name", "所属机构"), ("county", "区县"), ("agent_version", "监控代理版本"),
    ("carrier", "运营商"), ("imsi", "IMSI"), ("iccid", "ICCID"), ("sim_status", "SIM状态"),
    ("first_seen", "首次上报时间"), ("last_seen", "最后上报时间"),
]
INSTITUTION_COLUMNS: list[tuple[str, str]] = [
    ("code", "机构编码"), ("name", "机构名称"), ("county", "区县"), ("region", "统筹区"), ("type", "机构类型"),
    ("hours", "服务时间"), ("contact", "联系人"), ("level", "机构级别"),
]


_NUMBERISH = re.compile(r"[+-][0-9 ().\-/]*")  # +86 138 0000 0000, -12.5, (0731) 555-0100
__all__ = ["neutralise"]  # (re-exported: older callers import it from here)


def formula_problem(value: str) -> tuple[str, str | None]:
    """(the value to import, why it is refused or None). A quoted formula (``'=...``) is text: the quote goes;
    so does the tab (or ``="..."``) that keeps a digit string as text in a spreadsheet (:func:`cell_text`)."""
    if value.startswith("'") and value[1:2] and value[1] in "=+-@\t\r":
        return value[1:], None
    unmarked = cell_text(value)
    if unmarked != value:
        return unmarked, None
    text = value.lstrip(" ")
    if not text or not text.startswith(FORMULA_FIRST):
        return value, None
    if text[0] in "+-" and _NUMBERISH.fullmatch(text.rstrip()):
        return value, None
    first = {"\t": "a tab", "\r": "a carriage return"}.get(text[0], repr(text[0]))
    return value, (f"starts with {first}: a spreadsheet would run it as a formula; write it with a leading ' "
                   "to store it as text")


@dataclass
class ImportResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # each good row: its key and the fields it gives
    lines: list[int] = field(default_factory=list)  # line number of each good row
    errors: list[dict[str, Any]] = field(default_factory=list)  # {line, field, error}

    def reject(self, index: int, line: int, fld: str, error: str) -> None:
        """Move a good row to the errors (e.g. a reference the caller found unknown)."""
        self.errors.append({"line": line, "field": fld, "error": error})
        self.rows[index] = {}


def decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def _lines(data: bytes) -> Iterator[tuple[int, list[str] | str]]:
    """(first line number, cells) of each record of an upload, CSV or XLSX (its first sheet); a str instead of
    the cells says why the file cannot be read from there on."""
    if is_xlsx(data):
        try:
            rows = read_xlsx(data)
        except ValueError as err:
            yield 1, str(err)
            return
        yield from ((i, row) for i, row in enumerate(rows, 1))
        return
    try:
        text = decode(data)
    except UnicodeDecodeError as err:
        yield 1, f"not UTF-8 or GB18030 text: {err.reason}"
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 0
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield reader.line_num, f"not CSV: {err}"
            return
        line = reader.line_num
        yield start, values


def _parse(data: bytes, columns: Sequence[tuple[str, str]], ignored: Sequence[tuple[str, str]],
           model: type[BaseModel]) -> ImportResult:
    out = ImportResult()
    names = {code: code for code, _ in columns} | {zh: code for code, zh in columns}
    labels = dict(columns)
    skip = {c for pair in ignored for c in pair}
    records = _lines(data)
    xlsx = is_xlsx(data)
    first = next(records, None)
    if first is None:
        out.errors.append({"line": 1, "field": "", "error": "empty file"})
        return out
    if isinstance(first[1], str):
        out.errors.append({"line": first[0], "field": "", "error": first[1]})
        return out
    keys: list[str | None] = []
    for h in first[1]:
        h = h.strip()
        if h in names:
            keys.append(names[h])
        elif h in skip or not h or _zone_suffix(h) in skip:
            keys.append(None)
        else:
            out.errors.append({"line": 1, "field": h, "error": "unknown column"})
            return out
    required = [c for c, _ in columns[:1]]
    missing = [c for c in required if c not in keys]
    if missing:
        out.errors.append({"line": 1, "field": missing[0], "error": "required column missing"})
        return out
    present = {k for k in keys if k is not None}
    clearable = _clearable(model)
    fillers = _fillers(model, required[0])
    for start, values in records:
        if isinstance(values, str):
            out.errors.append({"line": start, "field": "", "error": values})
            break
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(keys) and any(v.strip() for v in values[len(keys):]):
            out.errors.append({"line": start, "field": "", "error": f"{len(values)} fields, header has {len(keys)}"})
            continue
        cells = {k: v for k, v in zip(keys, values, strict=False) if k is not None}
        raw = {k: v for k, v in cells.items() if v.strip() != ""}
        refused = None
        for k, v in raw.items():
            if xlsx:  # a string cell of a workbook is text, never run (a formula cell gives its value)
                continue
            raw[k], why = formula_problem(v)
            if why is not None:
                refused = (k, why)
                break
        if refused is not None:
            zh = labels.get(refused[0])
            out.errors.append({"line": start, "field": refused[0],
                               "error": f"{zh}: {refused[1]}" if zh else refused[1]})
            continue
        # a column the file has: its value (an empty cell clears a field that may be empty); a column it lacks, or
        # an empty cell in a field that may not be empty (status, type, name...), leaves the stored value as it is
        given = set(raw) | {k for k in present if k in clearable and k not in raw}
        try:
            rec = model.model_validate({**fillers, **raw})
        except ValidationError as err:
            e = err.errors()[0]
            fld = ".".join(str(x) for x in e["loc"]) or ""
            out.errors.append({"line": start, "field": fld, "error": e["msg"]})
            continue
        out.rows.append({k: v for k, v in rec.model_dump().items() if k in given})
        out.lines.append(start)
    return out


def _clearable(model: type[BaseModel]) -> set[str]:
    """Fields an empty cell empties: those whose default is empty ('' or none); the others keep their value."""
    return {name for name, f in model.model_fields.items() if not f.is_required() and f.default in ("", None)}


def _fillers(model: type[BaseModel], key: str) -> dict[str, Any]:
    """A stand-in for each required field the row does not give, so the row's own cells can be validated (the
    stand-in is never stored: a new record without such a field is refused by the caller)."""
    return {name: "-" for name, f in model.model_fields.items() if f.is_required() and name != key}


def _zone_suffix(header: str) -> str:
    """``最后上报时间 (UTC+08:00)`` (an XLSX export's time header) -> ``最后上报时间``."""
    return re.sub(r"\s*\(UTC[+-]\d\d:\d\d\)$", "", header)


def parse_units(data: bytes) -> ImportResult:
    return _parse(data, UNIT_COLUMNS, UNIT_EXPORT_ONLY, UnitRecord)


def parse_institutions(data: bytes) -> ImportResult:
    return _parse(data, INSTITUTION_COLUMNS, [], Institution)


_CODES = ("type", "status", "stock_type", "link_type", "level")
_TIMES = ("first_seen", "last_seen")


def _columns(pairs: Sequence[tuple[str, str]], lang: str) -> list[Column]:
    def word(code: str) -> str:
        return LABELS_ZH.get(code, code)

    return [Column(code, zh, code, kind="time" if code in _TIMES else "text",
                   label=word if lang == "zh" and code in _CODES else None) for code, zh in pairs]


def write_units(rows: Iterable[dict[str, Any]], lang: str = "zh", fmt: str = "csv", tz: str = "Asia/Shanghai") -> bytes:
    """The registry's units as CSV or XLSX (``fmt``); ``first_seen``/``last_seen`` in epoch seconds."""
    cols = _columns(UNIT_COLUMNS + UNIT_EXPORT_ONLY, lang)
    if fmt == "xlsx":
        return write_xlsx([Sheet("终端" if lang == "zh" else "units", cols, rows)], lang, tz)
    return write_csv(cols, rows, lang, tz)


def write_institutions(rows: Iterable[dict[str, Any]], lang: str = "zh", fmt: str = "csv",
                       tz: str = "Asia/Shanghai") -> bytes:
    cols = _columns(INSTITUTION_COLUMNS, lang)
    if fmt == "xlsx":
        return write_xlsx([Sheet("机构" if lang == "zh" else "institutions", cols, rows)], lang, tz)
    return write_csv(cols, rows, lang, tz)
