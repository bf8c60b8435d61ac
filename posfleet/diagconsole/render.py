"""Console replies for people: short tables, Chinese text kept intact and aligned.

Every label comes from ``posfleet.cli_diag_common.LABELS`` in the language asked (``lang``, Chinese by default);
the terminal's own values (reasons, log lines, configuration) are shown as sent, known reasons translated.
No cell holds raw JSON: nested values are written out as ``key value`` text.
Colour goes through ``click.style``; ``click.echo`` drops it when the output is not a
terminal, so piped output and files stay plain.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable
from typing import Any

import click

from posfleet.cli_diag_common import DEFAULT_LANG, LABELS, reason, say

_STATE_NAMES = {0: "ok", 1: "fault", 2: "unknown"}  # wire.messages OK, FAULT, UNKNOWN
STATE_COLOURS = {"ok": "green", "fault": "red", "unknown": "yellow", True: "green", False: "red", None: "yellow"}


def width(text: str) -> int:
    """Columns a string takes on a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1 for ch in text)


def _pad(text: str, cols: int) -> str:
    return text + " " * max(0, cols - width(text))


def table(headers: list[str], rows: list[list[Any]], colour: dict[int, Callable[[Any], str | None]] | None = None,
          lang: str = DEFAULT_LANG, shown: dict[int, Callable[[Any], str]] | None = None) -> str:
    """Rows of raw values: ``colour`` picks a column's colour from the raw value, ``shown`` its text."""
    cells = [[shown[i](v) if shown and i in shown else _cell(v, lang) for i, v in enumerate(row)] for row in rows]
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


def _cell(v: Any, lang: str = DEFAULT_LANG) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return say(lang, "word.yes" if v else "word.no")
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x, lang)}" for k, x in v.items() if x not in (None, "", [], {}))
    if isinstance(v, list):
        return ", ".join(_cell(x, lang) for x in v)
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


def kv(rows: list[tuple[str, Any]], lang: str = DEFAULT_LANG) -> str:
    w = max((width(k) for k, _ in rows), default=0)
    return "\n".join(f"{_pad(k, w)}  {_cell(v, lang)}" for k, v in rows)


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


# ------------------------------------------------------------------------------ per command
def _cols(lang: str, *names: str) -> list[str]:
    return [say(lang, f"console.col.{n}") for n in names]


def status(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    link, ob, clock = d.get("link") or {}, d.get("outbox") or {}, d.get("clock") or {}
    now = clock.get("now")
    where = {"host": link.get("host"), "port": link.get("port")}
    head = kv([
        (say(lang, "console.terminal"), d.get("sn")),
        (say(lang, "console.county"), (d.get("console") or {}).get("county") or "-"),
        (say(lang, "console.agent"), d.get("version")),
        (say(lang, "console.clock"), f"{_ts(now)} ({say(lang, 'console.clock.checked' if clock.get('checked') else 'console.clock.unchecked')})"),
        (say(lang, "console.link"), say(lang, "console.link.connected" if link.get("connected")
                                        else "console.link.disconnected", **where)
         + (say(lang, "console.link.last_error", error=link["last_error"]) if link.get("last_error") else "")),
        (say(lang, "console.outbox"), say(lang, "console.outbox.value", count=ob.get("count"),
                                          oldest=_ts(ob.get("oldest_ts")))
         + (say(lang, "console.outbox.age", age=_age(now - ob["oldest_ts"])) if now and ob.get("oldest_ts") else "")
         + (say(lang, "console.outbox.error", error=ob["error"]) if ob.get("error") else "")),
    ], lang)
    checks = d.get("checks") or {}
    parts = [head]
    if checks:
        parts.append(table(_cols(lang, "check", "state", "reason"),
                           [[k, _STATE_NAMES.get(c.get("state"), c.get("state")), reason(lang, c.get("reason"))
                             if c.get("reason") else ""] for k, c in checks.items()], {1: _state}, lang,
                           {0: lambda v: _label(lang, "kind", v), 1: lambda v: reason(lang, v)}))
    else:
        parts.append(say(lang, "console.checks.none"))
    health = d.get("health") or {}
    if health:
        parts.append(kv([(k, health.get(k)) for k in ("cpu", "load1", "mem_used_mb", "mem_avail_mb", "uptime_s",
                                                        "signal_dbm", "csq", "rscp_dbm", "ecio_db", "rtt_ms")
                         if k in health and (health.get(k) is not None or k not in ("rscp_dbm", "ecio_db"))], lang))
    ident = d.get("identity") or {}
    if ident:
        parts.append(kv([(k, v) for k, v in ident.items()], lang))
    if d.get("last_errors"):
        parts.append(say(lang, "console.last_errors") + "\n" + "\n".join(f"  {line}" for line in d["last_errors"]))
    return "\n\n".join(parts)


def selftest(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    rows = []
    for kind, r in (d.get("peripherals") or {}).items():
        extra = []
        if "test_page" in r:
            extra.append(say(lang, "console.selftest.test_page", result=r["test_page"]))
        st = r.get("self_test") or {}
        if st:
            extra.append(say(lang, "console.selftest.sam", state="ok" if st.get("sam_ok") else "FAULT",
                             sam_id=st.get("sam_id") or "").strip())
            if st.get("sam_error"):
                extra.append(reason(lang, st["sam_error"].get("reason")))
            card = st.get("card") or {}
            if card.get("present"):
                extra.append(say(lang, "console.selftest.card", type=card.get("type"), name=card.get("name_masked"),
                                 id=card.get("id_masked")))
            elif card:
                extra.append(say(lang, "console.selftest.no_card"))
        m = r.get("modem") or {}
        if m:
            sig = m.get("signal") or {}
            extra.append(say(lang, "console.selftest.modem", sim=reason(lang, m.get("sim")),
                             operator=(m.get("operator") or {}).get("name") or "-", csq=_cell(sig.get("csq"), lang)))
        rows.append([kind, r.get("state"), reason(lang, r.get("reason")) if r.get("reason") else "", "; ".join(extra)])
    verdict = d.get("verdict", "")
    return (table(_cols(lang, "peripheral", "state", "reason", "detail"), rows, {1: _state}, lang,
                  {0: lambda v: _label(lang, "kind", v), 1: lambda v: reason(lang, v)}) + "\n\n"
            + click.style(_verdict(verdict, lang), fg="green" if verdict == "all ok" else "red"))


def _label(lang: str, group: str, name: Any) -> str:
    """``group.name`` from the label table when there is one (a step, a peripheral), else the name as sent."""
    return say(lang, f"{group}.{name}") if f"{group}.{name}" in LABELS else _cell(name, lang)


def _verdict(verdict: str, lang: str) -> str:
    if verdict == "all ok":
        return say(lang, "console.verdict.all_ok")
    if verdict == "network ok":
        return say(lang, "console.verdict.network_ok")
    if verdict.startswith("problems: "):
        return say(lang, "console.verdict.problems", what=verdict.removeprefix("problems: "))
    return reason(lang, verdict)


def _dash(v: Any) -> str:
    return "-" if v is None or v == "" else f"{v:g}" if isinstance(v, float) else str(v)


def _net_step(step: str, r: dict[str, Any], lang: str) -> str:
    """One netcheck step as a short sentence: the fields an engineer reads, never the raw reply."""
    if r.get("reason"):
        return reason(lang, r["reason"])
    if step == "modem":
        op = r.get("operator") or {}
        text = say(lang, "console.net.modem", sim=reason(lang, r.get("sim")), model=_dash(r.get("model")),
                   firmware=_dash(r.get("firmware")), imei=_dash(r.get("imei")))
        if op.get("name") or op.get("mcc_mnc"):
            text += "; " + say(lang, "console.net.operator", name=_dash(op.get("name")), mcc_mnc=_dash(op.get("mcc_mnc")),
                               carrier=_dash(op.get("carrier")))
        return text
    if step == "sim":
        return say(lang, "console.net.sim", state=reason(lang, r.get("state")))
    if step == "registration":
        return say(lang, "console.net.registration", state=reason(lang, r.get("state")),
                   technology=_dash(r.get("technology")), tac=_dash(r.get("tac")), cell=_dash(r.get("cell_id")))
    if step == "signal":
        parts = [f"CSQ {_dash(r.get('csq'))} ({_dash(r.get('rssi_dbm'))} dBm)"]
        for label, key, unit in (("RSRP", "rsrp_dbm", "dBm"), ("RSRQ", "rsrq_db", "dB"), ("SINR", "sinr", "dB"),
                                 ("RSCP", "rscp_dbm", "dBm"), ("Ec/Io", "ecio_db", "dB")):
            if r.get(key) is not None:
                parts.append(f"{label} {_dash(r[key])} {unit}")
        return ", ".join(parts)
    if step == "dns":
        return say(lang, "console.net.dns", host=_dash(r.get("host")), addresses=", ".join(r.get("addresses") or []),
                   ms=_dash(r.get("ms")))
    if step == "tcp":
        return say(lang, "console.net.tcp", peer=_dash(r.get("peer")), ms=_dash(r.get("connect_ms")))
    if step == "tls":
        acc = r.get("client_certificate_accepted")
        return say(lang, "console.net.tls", version=_dash(r.get("version")), ms=_dash(r.get("handshake_ms")),
                   accepted=say(lang, "console.net.tls." + ("accepted" if acc else "refused" if acc is False
                                                           else "unknown")))
    if step == "link":
        text = say(lang, "console.net.link", state=say(lang, "console.net.link." + ("up" if r.get("connected")
                                                                                  else "down")), rtt=_dash(r.get("rtt_ms")))
        if r.get("last_error"):
            text += say(lang, "console.link.last_error", error=r["last_error"])
        return text
    detail = {k: v for k, v in r.items() if k not in ("ok", "reason", "raw")}
    return _cell(detail, lang)


def netcheck(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    rows = [[step, r.get("ok"), _net_step(step, r, lang)] for step, r in (d.get("steps") or {}).items()]
    verdict = d.get("verdict", "")
    return (table(_cols(lang, "step", "ok", "detail"), rows, {1: _state}, lang, {0: lambda v: _label(lang, "console.step", v)})
            + "\n\n"
            + click.style(_verdict(verdict, lang), fg="green" if verdict == "network ok" else "red"))


def logs(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    lines = d.get("lines") or []
    foot = say(lang, "console.logs.foot", shown=d.get("shown"), matching=d.get("matching"), kept=d.get("kept"))
    return "\n".join(lines + [foot])


def config_show(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    out = kv(flatten(d.get("config") or {}), lang)
    if d.get("pending_change"):
        out += "\n\n" + say(lang, "console.config.pending") + _cell(d["pending_change"], lang)
    return out


def versions(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    return kv(flatten(d), lang)


def outbox(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    head = say(lang, "console.outbox.head", count=d.get("count"), oldest=_ts(d.get("oldest_ts")))
    rows = [[e["seq"], e["kind"], _ts(e["ts"]), _age(e.get("age_s")), e.get("bytes"), e.get("held"),
             e.get("in_flight")] for e in d.get("entries") or []]
    if d.get("error"):
        head += say(lang, "console.outbox.error", error=d["error"])
    return head + ("\n" + table(_cols(lang, "seq", "kind", "time", "age", "bytes", "held", "in_flight"), rows,
                                lang=lang) if rows else "")


def help_(d: dict[str, Any], lang: str = DEFAULT_LANG) -> str:
    rows = [[c["usage"] or c["name"], say(lang, "console.needs.credential") if c["changes"] else "", c["help"]]
            for c in d.get("commands") or []]
    return table(_cols(lang, "command", "needs", "what"), rows, lang=lang)


RENDERERS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "status": status, "selftest": selftest, "netcheck": netcheck, "logs": logs, "config show": config_show,
    "versions": versions, "outbox": outbox, "help": help_,
}


def render(cmd: str, data: Any, lang: str = DEFAULT_LANG) -> str:
    fn = RENDERERS.get(cmd)
    if fn is not None and isinstance(data, dict):
        return fn(data, lang)
    if isinstance(data, dict):
        return kv(flatten(data), lang)
    return _cell(data, lang)
