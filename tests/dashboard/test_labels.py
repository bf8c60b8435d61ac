"""Every code the server and the terminals can put on the dashboard has a Chinese label in labels.js.

The codes are enumerated from where they are made, not copied: alert kinds (server/alerts), security events
(server/ingest), peripherals (settings' critical checks and the agent's peripheral kinds), the reason codes the
counter writes (server/availability), the drivers' check reasons (read from the drivers' source), the SIM states,
the demo's fault reasons, carriers (server/analytics/live.py). A new code without a label fails here."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from drivers.modem.device import SIM_FAULTS, SimQuery
from posfleet.demo import DEVICE_FAULTS
from server.alerts.service import KINDS
from server.analytics.live import _NAMES, MNC_CARRIER
from server.settings import AvailabilitySettings

REPO = Path(__file__).resolve().parents[2]
LABELS_JS = REPO / "server" / "dashboard" / "static" / "labels.js"


def labels() -> dict[str, dict[str, str]]:
    text = LABELS_JS.read_text(encoding="utf-8")
    start = text.index("{", text.index("const LABELS ="))
    return json.loads(text[start: text.rindex("}") + 1])


def _calls(path: Path, owner: str, names: tuple[str, ...]) -> list[ast.expr]:
    out = []
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in names \
                and isinstance(n.func.value, ast.Name) and n.func.value.id == owner and n.args:
            out.append(n.args[0] if owner == "CheckResult" else n.args[1])
    return out


def driver_reasons() -> tuple[set[str], set[str]]:
    """The reasons the drivers' checks give: whole texts, and the fixed start of texts that go on with details."""
    whole, starts = set(SIM_FAULTS.values()), {"SIM state "}
    # a SIM query's reason as the driver words it, with the +CME ERROR code when it says nothing about the SIM
    # ("SIM state unknown (+CME ERROR: 100 unknown)"): the text up to its "(" is the label's prefix
    for state in SIM_FAULTS:
        text = SimQuery(state, 100).reason()
        if "(" in text:
            starts.add(text[: text.index("(") + 1])
        else:
            whole.add(text)
    for path in [*sorted((REPO / "drivers").rglob("*.py")), REPO / "agent" / "peripherals.py"]:
        for arg in _calls(path, "CheckResult", ("fault", "unknown")):
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                whole.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                starts.add(str(arg.values[0].value))
    return whole, starts


def auth_security_events() -> set[str]:
    """What the sign-in and behaviour watch's ``security`` alerts are about (server/auth): the ``"what"`` of their
    data dicts and the ``what`` argument of watch.py's ``_count``."""
    out: set[str] = set()
    for path in sorted((REPO / "server" / "auth").glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Dict):
                for k, v in zip(n.keys, n.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "what" and isinstance(v, ast.Constant):
                        out.add(v.value)
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_count" \
                    and len(n.args) > 6 and isinstance(n.args[6], ast.Constant):
                out.add(n.args[6].value)
    assert {"signin_failures", "token_new_address", "mass_export", "night_commands"} <= out, out
    return out


def zh_for_carrier(zh: dict[str, str], name: str) -> str | None:
    """As the page looks a carrier up: without regard to case."""
    return next((v for k, v in zh.items() if k.lower() == f"carrier.{name}".lower()), None)


def test_every_code_has_a_chinese_label() -> None:
    zh = labels()["zh"]
    missing: list[str] = []

    def need(key: str) -> None:
        if not re.search(r"[\u4e00-\u9fff]", zh.get(key, "")):
            missing.append(key)

    for kind in KINDS:
        need(f"kind.{kind}")
        need(f"alert.{kind}")
    for what in {a.value for a in _calls(REPO / "server" / "ingest" / "service.py", "self", ("_security",))
                 if isinstance(a, ast.Constant)}:
        need(f"security.{what}")
    for what in auth_security_events():
        need(f"security.{what}")
    peripherals = set(AvailabilitySettings().critical_checks) | {"printer", "idcard", "modem", "storage"}
    for name in peripherals:
        need(f"check.{name}")
    # what the counter and the figures write (server/availability: rollups.judge, reasons by minute)
    for code in ("missing", "unknown", "fault", "link_down", "latency", "rtt", "no_data", "device_fault", "network",
                 "link_down_carrier_outage"):
        need(f"reason.{code}")
    for _check, reason in DEVICE_FAULTS.values():
        need(f"reason.{reason}")
    whole, starts = driver_reasons()
    assert len(whole) >= 20 and "paper out" in whole, "the drivers' reasons were found"
    for text in whole:
        need(f"reason.{text}")
    for start in starts:
        need(f"prefix.{start}")
    # what the server writes in a unit's status history (storage) and a swap's note (registry)
    storage = "\n".join(f.read_text(encoding="utf-8") for f in sorted((REPO / "server" / "storage").glob("*.py")))
    inserts = [storage[m.end(): m.end() + 300] for m in re.finditer("INSERT INTO status_history", storage)]
    notes = {n for chunk in inserts for n in re.findall(r', "([a-z ]+)"\)', chunk)}
    assert notes >= {"registered", "first seen"}, notes
    swap = (REPO / "server" / "registry" / "service.py").read_text(encoding="utf-8")
    notes |= set(re.findall(r'note or "([a-z ]+)"', swap)) | set(re.findall(r'\((replaced by|replaces) \{', swap))
    for note in notes:
        need(f"note.{note}")
    for by in {b for chunk in inserts for b in re.findall(r', "([a-z]+)", "[a-z ]+"\)', chunk)}:
        need(f"by.{by}")
    from server.alerts.service import RESOURCES

    for r in RESOURCES:
        need(f"resource.{r}")
    inspection = (REPO / "server" / "inspection" / "service.py").read_text(encoding="utf-8")
    for check in set(re.findall(r'"check": "([a-z_]+)"', inspection)) | {"certificate"}:
        need(f"inspect.{check}")
    for name in {*MNC_CARRIER.values(), *_NAMES, "unknown"}:
        if not zh_for_carrier(zh, name):
            missing.append(f"carrier.{name}")
    assert not missing, f"codes without a Chinese label in {LABELS_JS.name}: {sorted(missing)}"


def test_alert_templates_name_only_what_the_page_fills() -> None:
    app = (REPO / "server" / "dashboard" / "static" / "app.js").read_text(encoding="utf-8")
    filled = set(re.findall(r"\b(sn|threshold|device|network|minutes|check|reason|mount|pct|old|new|place|units|used|plan|"
                            r"projected|what|resource|mean|peak|days|ip|link|from|to)\b", app))
    for lang, table in labels().items():
        for key, tpl in table.items():
            if key.startswith("alert."):
                assert set(re.findall(r"\{(\w+)\}", tpl)) <= filled, (lang, key, tpl)
