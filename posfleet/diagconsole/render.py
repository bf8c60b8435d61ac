"""Console replies for people: short tables, Chinese text kept intact and aligned.

Colour goes through ``click.style``; ``click.echo`` drops it when the output is not a
terminal, so piped output and files stay plain.
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Callable
from typing import Any

import click

_STATE_NAMES = {0: "ok", 1: "fault", 2: "unknown"}  # wire.messages OK, FAULT, UNKNOWN
STATE_COLOURS = {"ok": "green", "fault": "red", "unknown": "yellow", True: "green", False: "red", None: "yellow"}


def width(text: str) -> int:
    """Columns a string takes on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1 for ch in text)


def _pad(text: str, cols: int) -> str:
    return text + " " * max(0, cols - width(text))


def table(headers: list[str], rows: list[list[Any]], colour: dict[int, Callable[[Any], str | None]] | None = None) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    cols = [max([width(h)] + [width(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(_pad(h, cols[i]) for i, h in enumerate(headers)).rstrip(),
             "  ".join("-" * c for c in cols)]
    for raw, row in zip(rows, cells, strict=True):
        parts = []
        for i, text in enumerate(row):
            padded = _pad(text, cols[i]) if i < len(row) - 1 else text
            fg = colour[i](raw[i]) if colour and i in colour else None
            parts.append(click.style(padded, fg=fg) if fg else padded)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _state(v: Any) -> str | None:
    return STATE_COLOURS.get(v) if isinstance(v, str | bool) or v is None else None


def _ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def kv(rows: list[tuple[str, Any]]) -> str:
    w = max((width(k) for k, _ in rows), default=0)
    return "\n".join(f"{_pad(k, w)}  {_cell(v)}" for k, v in rows)


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


# ------------------------------------------------------------------------------ per command
def status(d: dict[str, Any]) -> str:
    link, ob, clock = d.get("link") or {}, d.get("outbox") or {}, d.get("clock") or {}
    now = clock.get("now")
    head = kv([
        ("terminal", d.get("sn")), ("county", (d.get("console") or {}).get("county") or "-"),
        ("agent", d.get("version")),
        ("clock", f"{_ts(now)} ({'checked' if clock.get('checked') else 'NOT checked'})"),
        ("link", f"{'connected' if link.get('connected') else 'DISCONNECTED'} to {link.get('host')}:{link.get('port')}"
                 + (f" (last error: {link['last_error']})" if link.get("last_error") else "")),
        ("outbox", f"{ob.get('count')} waiting, oldest {_ts(ob.get('oldest_ts'))}"
                   + (f" ({_age(now - ob['oldest_ts'])} ago)" if now and ob.get("oldest_ts") else "")
                   + (f"; ERROR {ob['error']}" if ob.get("error") else "")),
    ])
    checks = d.get("checks") or {}
    parts = [head]
    if checks:
        parts.append(table(["check", "state", "reason"],
                           [[k, _STATE_NAMES.get(c.get("state"), c.get("state")), c.get("reason")]
                            for k, c in checks.items()], {1: _state}))
    else:
        parts.append("checks: no sample taken yet")
    health = d.get("health") or {}
    if health:
        parts.append(kv([(k, health.get(k)) for k in ("cpu", "load1", "mem_used_mb", "mem_avail_mb", "uptime_s",
                                                        "signal_dbm", "csq", "rtt_ms") if k in health]))
    ident = d.get("identity") or {}
    if ident:
        parts.append(kv([(k, v) for k, v in ident.items()]))
    if d.get("last_errors"):
        parts.append("last errors:\n" + "\n".join(f"  {line}" for line in d["last_errors"]))
    return "\n\n".join(parts)


def selftest(d: dict[str, Any]) -> str:
    rows = []
    for kind, r in (d.get("peripherals") or {}).items():
        extra = []
        if "test_page" in r:
            extra.append(f"test page {r['test_page']}")
        st = r.get("self_test") or {}
        if st:
            extra.append(f"SAM {'ok' if st.get('sam_ok') else 'FAULT'} {st.get('sam_id') or ''}".strip())
            card = st.get("card") or {}
            if card.get("present"):
                extra.append(f"card {card.get('type')}: {card.get('name_masked')} {card.get('id_masked')}")
            elif card:
                extra.append("no card on the reader")
        m = r.get("modem") or {}
        if m:
            sig = m.get("signal") or {}
            extra.append(f"SIM {m.get('sim')}, {(m.get('operator') or {}).get('name')}, CSQ {sig.get('csq')}")
        rows.append([kind, r.get("state"), r.get("reason") or "", "; ".join(extra)])
    verdict = d.get("verdict", "")
    return (table(["peripheral", "state", "reason", "detail"], rows, {1: _state}) + "\n\n"
            + click.style(verdict, fg="green" if verdict == "all ok" else "red"))


def netcheck(d: dict[str, Any]) -> str:
    rows = []
    for step, r in (d.get("steps") or {}).items():
        detail = {k: v for k, v in r.items() if k not in ("ok", "reason", "raw")}
        text = r.get("reason") or ", ".join(f"{k} {_cell(v)}" for k, v in detail.items() if v not in (None, "", []))
        rows.append([step, r.get("ok"), text])
    verdict = d.get("verdict", "")
    return (table(["step", "ok", "detail"], rows, {1: _state}) + "\n\n"
            + click.style(verdict, fg="green" if verdict == "network ok" else "red"))


def logs(d: dict[str, Any]) -> str:
    lines = d.get("lines") or []
    foot = f"({d.get('shown')} of {d.get('matching')} matching lines; the terminal keeps the last {d.get('kept')})"
    return "\n".join(lines + [foot])


def config_show(d: dict[str, Any]) -> str:
    out = kv(flatten(d.get("config") or {}))
    if d.get("pending_change"):
        out += "\n\npending change (rolled back unless the server is reached): " + _cell(d["pending_change"])
    return out


def versions(d: dict[str, Any]) -> str:
    return kv(flatten(d))


def outbox(d: dict[str, Any]) -> str:
    head = f"{d.get('count')} entries waiting, oldest {_ts(d.get('oldest_ts'))}"
    rows = [[e["seq"], e["kind"], _ts(e["ts"]), _age(e.get("age_s")), e.get("bytes"), e.get("held"),
             e.get("in_flight")] for e in d.get("entries") or []]
    if d.get("error"):
        head += f"; ERROR {d['error']}"
    return head + ("\n" + table(["seq", "kind", "time", "age", "bytes", "held", "in flight"], rows) if rows else "")


def help_(d: dict[str, Any]) -> str:
    rows = [[c["usage"] or c["name"], "credential" if c["changes"] else "", c["help"]] for c in d.get("commands") or []]
    return table(["command", "needs", "what"], rows)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "status": status, "selftest": selftest, "netcheck": netcheck, "logs": logs, "config show": config_show,
    "versions": versions, "outbox": outbox, "help": help_,
}


def render(cmd: str, data: Any) -> str:
    fn = RENDERERS.get(cmd)
    if fn is not None and isinstance(data, dict):
        return fn(data)
    if isinstance(data, dict):
        return kv(flatten(data))
    return _cell(data)
