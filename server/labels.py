"""The labels of the codes the server and the terminals emit, for server-side documents (the report).

One table serves the dashboard and the report: ``server/dashboard/static/labels.js``, whose ``LABELS`` object is
JSON (the dashboard loads the file as it is; this module reads the same object). A code added there is labelled
in both places; tests/dashboard/test_labels.py checks every code has a Chinese label.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

LABELS_JS = Path(__file__).parent / "dashboard" / "static" / "labels.js"


@functools.cache
def table() -> dict[str, dict[str, str]]:
    text = LABELS_JS.read_text(encoding="utf-8")
    start = text.index("{", text.index("const LABELS"))
    data: dict[str, dict[str, str]] = json.loads(text[start: text.rindex("}") + 1])
    return data


def label(key: str, lang: str = "zh", **fill: Any) -> str | None:
    """The label of ``key`` (``reason.link_down``, ``check.printer``, ...) with its {placeholders} filled, or None."""
    text = table().get(lang, {}).get(key)
    if text is None:
        return None
    for k, v in fill.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def _reason_text(code: str, lang: str) -> str:
    got = label(f"reason.{code}", lang)
    if got is not None:
        return got
    for key, words in table().get(lang, {}).items():  # a driver's reason text with details after a known start
        if key.startswith("prefix.") and code.startswith(key[7:]):
            return words + code[len(key) - 7:]
    return code.replace("_", " ") if lang == "en" else code


def reason(code: str, lang: str = "zh") -> str:
    """A reason code as people read it: ``link_down`` -> 断网, ``printer=paper_out`` -> 打印机：缺纸,
    ``rtt=612`` -> 时延 612 ms; an unknown code is shown as it is (never dropped)."""
    if code.startswith("rtt="):
        return label("reason.rtt", lang, ms=code[4:]) or code
    if "=" in code:
        check, why = code.split("=", 1)
        sep = "：" if lang == "zh" else ": "
        return f"{peripheral(check, lang)}{sep}{_reason_text(why, lang)}"
    return _reason_text(code, lang)


def peripheral(check: str, lang: str = "zh") -> str:
    return label(f"check.{check}", lang) or check


def carrier(name: str, lang: str = "zh") -> str:
    return label(f"carrier.{name}", lang) or name
