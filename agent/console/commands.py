"""What the console can do. Read-only commands are open to anyone holding the cable; the
commands marked ``changes`` need an engineer credential (see credentials.py).

Every command takes the console, the session and its arguments (a dict from the laptop)
and returns a JSON-able dict. :class:`Usage` is a bad argument, :class:`Failed` a command
that ran and could not do its job; both reach the engineer as a message, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import platform
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.errors import DriverError
from wire.console import COMMANDS, SECRET_KEY

if TYPE_CHECKING:
    from .service import Console, Session

log = logging.getLogger(__name__)

NET_TIMEOUT_S = 5.0
MAX_LOG_LINES = 500
MAX_LOG_LINE = 400


class Usage(ValueError):
    """A bad argument: the message says what is expected."""


class Failed(Exception):
    """The command ran and could not do its job; the message says why."""


@dataclass(frozen=True)
class Command:
    name: str
    func: Callable[[Console, Session, dict[str, Any]], dict[str, Any]]
    help: str
    usage: str = ""
    changes: bool = False


REGISTRY: dict[str, Command] = {}


def command(name: str, help: str, usage: str = "", changes: bool = False) -> Callable[..., Any]:
    if name not in COMMANDS:  # the laptop knows the commands from wire.console
        raise ValueError(f"console command {name!r} is not in wire.console.COMMANDS")

    def register(func: Callable[[Console, Session, dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
        REGISTRY[name] = Command(name, func, help, usage, changes)
        return func

    return register


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError as err:
            raise Usage(f"{name}: expected a whole number, got {value!r}") from err
    if not lo <= value <= hi:
        raise Usage(f"{name}: must be between {lo} and {hi}")
    return value


def _bool_arg(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "yes", "true", "on"):
        return True
    if str(value).lower() in ("0", "no", "false", "off"):
        return False
    raise Usage(f"{name}: expected yes or no, got {value!r}")


def hide_secrets(obj: Any) -> Any:
    """Any key that names a secret shows only whether it is set."""
    if isinstance(obj, dict):
        return {k: ("***" if v else "") if SECRET_KEY.search(str(k)) and not isinstance(v, dict | list)
                else hide_secrets(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [hide_secrets(v) for v in obj]
    return obj


def _now_dt(console: Console) -> dt.datetime:
    return dt.datetime.fromtimestamp(console.agent.clock.now(), dt.timezone(dt.timedelta(hours=8)))


def _version() -> str:
    from wire import __version__

    return __version__


# ------------------------------------------------------------------------------ read-only
@command("help", "list the commands")
def cmd_help(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    return {"commands": [{"name": c.name, "help": c.help, "usage": c.usage, "changes": c.changes}
                         for c in REGISTRY.values()]}


@command("status", "health, each peripheral's check, link, outbox backlog, clock, last errors")
def cmd_status(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    from agent.logs import RING

    snap = console.agent.status_snapshot()
    errors = [line[:MAX_LOG_LINE] for line in list(RING.lines) if " ERROR " in line or " WARNING " in line][-5:]
    snap["last_errors"] = errors
    snap["console"] = {"session": session.id, "engineer": session.engineer.engineer if session.engineer else None,
                       "county": console.cfg.county}
    return snap


@command("selftest", "check every peripheral, print a test page, read a card on the reader (masked)",
         "selftest [print=no] [card=no]")
def cmd_selftest(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    print_page = _bool_arg(args, "print", True)
    read_card = _bool_arg(args, "card", True)
    agent = console.agent
    out: dict[str, Any] = {}
    for kind in list(agent.peripherals.ports):
        r: dict[str, Any] = {"state": "unknown", "reason": ""}
        try:
            with agent.peripherals.use(kind) as dev:
                chk = dev.check()
                r.update(state=chk.state, reason=chk.reason, detail=chk.detail)
                if kind == "printer" and print_page:
                    if chk.state == "ok":
                        dev.print_test_page(agent.sn, _now_dt(console), agent_version=_version())
                        r["test_page"] = "printed"
                    else:
                        r["test_page"] = f"not printed: {chk.reason}"
                if kind == "idcard" and chk.state == "ok":
                    r["self_test"] = dev.self_test(read=read_card)
                if kind == "modem" and chk.state == "ok":
                    r["modem"] = _modem_summary(dev.status().as_dict())
        except DriverError as err:
            r.update(state="fault", reason=str(err))
        out[kind] = r
    if not out:
        return {"peripherals": {}, "verdict": "no peripherals configured"}
    bad = [k for k, r in out.items() if r["state"] != "ok" or str(r.get("test_page", "printed")) != "printed"]
    return {"peripherals": out, "verdict": "all ok" if not bad else "problems: " + ", ".join(bad)}


def _modem_summary(st: dict[str, Any]) -> dict[str, Any]:
    return {k: st.get(k) for k in ("sim", "sim_error", "iccid", "imei", "operator", "registration", "signal", "model",
                                   "firmware", "radio")}


def _in_thread(func: Callable[[], Any], timeout: float) -> Any:
    """getaddrinfo has no timeout of its own."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = func()
        except OSError as err:
            box["error"] = err

    t = threading.Thread(target=run, daemon=True, name="console-dns")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


@command("netcheck", "modem, SIM, registration, signal; DNS of the broker; TCP and TLS to it, round trip")
def cmd_netcheck(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    from agent.link import tls_context

    agent, cfg = console.agent, console.agent.cfg
    host, port = cfg.link.host, cfg.link.port
    steps: dict[str, Any] = {}
    first_fault = ""

    def fault(step: str, reason: str) -> None:
        nonlocal first_fault
        steps[step] = {"ok": False, "reason": reason}
        first_fault = first_fault or f"{step}: {reason}"

    if "modem" in agent.peripherals.ports:
        try:
            with agent.peripherals.use("modem") as modem:
                st = _modem_summary(modem.status().as_dict())
            steps["modem"] = {"ok": True, **st}
            if st.get("sim") != "ready":
                fault("sim", f"SIM {st.get('sim')}")
            else:
                steps["sim"] = {"ok": True, "state": "ready"}
            reg = st.get("registration") or {}
            if reg.get("registered"):
                steps["registration"] = {"ok": True, **reg}
            else:
                fault("registration", f"not registered ({reg.get('state')})")
            sig = st.get("signal") or {}
            steps["signal"] = {"ok": sig.get("csq") not in (None, 99), **{k: sig.get(k) for k in
                               ("csq", "rssi_dbm", "rsrp_dbm", "rsrq_db", "sinr", "rscp_dbm", "ecio_db")}}
        except DriverError as err:
            fault("modem", str(err))
    else:
        steps["modem"] = {"ok": None, "reason": "no modem configured"}

    t0 = time.monotonic()
    addrs: list[str] = []
    try:
        infos = _in_thread(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), NET_TIMEOUT_S)
        addrs = sorted({str(i[4][0]) for i in infos})
        steps["dns"] = {"ok": True, "host": host, "addresses": addrs, "ms": round((time.monotonic() - t0) * 1000, 1)}
    except (OSError, TimeoutError) as err:
        fault("dns", f"{host}: {err}")

    if addrs:
        t0 = time.monotonic()
        try:
            sock = socket.create_connection((host, port), timeout=NET_TIMEOUT_S)
        except OSError as err:
            fault("tcp", f"{host}:{port}: {err}")
        else:
            with sock:
                steps["tcp"] = {"ok": True, "peer": f"{host}:{port}", "connect_ms": round((time.monotonic() - t0) * 1000, 1)}
                try:
                    ctx = tls_context(cfg.path(cfg.link.ca_file), cfg.path(cfg.link.cert_file),
                                      cfg.path(cfg.link.key_file), cfg.link.key_passphrase, cfg.link.tls_min_version)
                    t1 = time.monotonic()
                    with ctx.wrap_socket(sock, server_hostname=host) as tls:
                        tls_ms = round((time.monotonic() - t1) * 1000, 1)
                        accepted = _client_cert_accepted(tls)
                        steps["tls"] = {"ok": accepted is not False, "version": tls.version(),
                                        "handshake_ms": tls_ms, "client_certificate_accepted": accepted}
                        if accepted is False:
                            first_fault = first_fault or "tls: the broker refused this terminal's certificate"
                except (ssl.SSLError, OSError, ValueError) as err:
                    fault("tls", str(err))
    info = agent.link.tcp_info() if agent.link.connected else None
    steps["link"] = {"ok": agent.link.connected, "connected": agent.link.connected, "last_error": agent.link.last_error,
                     "rtt_ms": None if info is None else round(info.rtt_ms, 1)}
    return {"steps": steps, "verdict": "network ok" if not first_fault else first_fault}


def _client_cert_accepted(tls: ssl.SSLSocket) -> bool | None:
    """With TLS 1.3 the broker's verdict on our certificate arrives after the handshake: a
    broker that accepted it waits silently for MQTT CONNECT, one that refused sends an alert."""
    tls.settimeout(0.5)
    try:
        data = tls.recv(1)
    except TimeoutError:
        return True
    except ssl.SSLError as err:
        log.info("broker refused the terminal certificate: %s", err)
        return False
    except OSError:
        return None
    return True if data else False


@command("logs", "the agent's recent log lines (redacted)", "logs [lines=100] [grep=TEXT]")
def cmd_logs(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    from agent.logs import RING

    n = _int_arg(args, "lines", 100, 1, MAX_LOG_LINES)
    grep = str(args.get("grep", ""))
    lines = [line[:MAX_LOG_LINE] for line in list(RING.lines) if grep.lower() in line.lower()]
    budget = console.cfg.max_reply_bytes // 2
    out: list[str] = []
    for line in reversed(lines[-n:]):
        budget -= len(line.encode()) + 4
        if budget < 0:
            break
        out.append(line)
    out.reverse()
    return {"lines": out, "shown": len(out), "matching": len(lines), "kept": RING.lines.maxlen}


@command("config show", "the agent's configuration, secrets hidden")
def cmd_config_show(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    agent = console.agent
    pending = getattr(getattr(agent, "guard", None), "pending", None)
    return {"config": hide_secrets(agent.cfg.redacted()), "file": str(getattr(agent, "config_path", "") or ""),
            "pending_change": hide_secrets(pending) if pending else None}


@command("versions", "agent, Python, OS, components, peripheral models and firmware")
def cmd_versions(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    from agent.collectors import read_component_version

    agent = console.agent
    ident = agent.peripherals.identity()
    return {
        "agent": _version(), "python": platform.python_version(), "os": platform.platform(),
        "components": {name: read_component_version(src.file, src.command, src.pattern)
                       for name, src in agent.cfg.components.items()},
        "peripherals": {kind: {"port": p.cfg.port, "profile": p.cfg.profile} for kind, p in agent.peripherals.ports.items()},
        "modem": {"model": ident.get("modem_model"), "firmware": ident.get("modem_firmware")},
    }


@command("outbox", "the oldest entries waiting to be sent (held: waiting for a checked clock)", "outbox [limit=10]")
def cmd_outbox(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    import sqlite3

    agent = console.agent
    limit = _int_arg(args, "limit", 10, 1, 100)
    path = agent.data_dir / "outbox.sqlite"
    # A read-only connection of our own (WAL lets it read beside the agent's writer); it sees the
    # held rows too, which the sending path does not list.
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            rows = db.execute("SELECT seq, kind, ts, held, lite, length(body) FROM outbox ORDER BY seq LIMIT ?",
                              (limit,)).fetchall()
            count, oldest = db.execute("SELECT count(*), min(ts) FROM outbox").fetchone()
        finally:
            db.close()
    except sqlite3.Error as err:
        raise Failed(f"outbox unreadable: {err}") from err
    now = agent.clock.now()
    return {"count": count, "oldest_ts": oldest, "error": agent.outbox_error, "entries": [
        {"seq": seq, "kind": "sample" if kind == "s" else "event", "ts": ts, "age_s": int(now - ts),
         "held": bool(held), "reduced": bool(lite), "bytes": size, "in_flight": seq in agent.inflight}
        for seq, kind, ts, held, lite, size in rows]}


# ------------------------------------------------------------------------------ changing
@command("outbox clear", "drop one stuck outbox entry (it is never sent)", "outbox clear seq=N", changes=True)
def cmd_outbox_clear(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    from agent.outbox import OutboxError

    agent = console.agent
    if "seq" not in args:
        raise Usage("seq: which entry (see `outbox`)")
    seq = _int_arg(args, "seq", 0, 1, 2**62)
    if agent.outbox is None:
        raise Failed(f"outbox unavailable: {agent.outbox_error or 'not open'}")
    try:
        n = agent.outbox.delete([(seq, seq)])
    except OutboxError as err:
        raise Failed(str(err)) from err
    if not n:
        raise Failed(f"no outbox entry {seq}")
    log.warning("outbox entry %d cleared from the console by %s", seq, session.who)
    return {"cleared": seq}


@command("config set", "change one setting; restarts the agent, rolled back if the server is not reached",
         "config set KEY VALUE [minutes=N]", changes=True)
def cmd_config_set(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    import tomllib

    from agent.config import ConfigError
    from agent.config_guard import stage_change

    agent = console.agent
    key, raw = str(args.get("key", "")), args.get("value")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key) or raw is None:
        raise Usage("config set KEY VALUE: KEY is dotted (link.host), VALUE a TOML value or plain text")
    if key.startswith("console.") or key == "console":
        raise Usage(f"{key}: the console's own settings are changed with the agent's configuration updates, "
                    "not from the console")
    if agent.config_path is None:
        raise Failed("the agent was not started from a configuration file")
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # plain text: a string
    minutes = float(args.get("minutes", agent.cfg.commands.rollback_minutes))
    if not 0.05 <= minutes <= 1440:
        raise Usage("minutes: between 0.05 and 1440")
    cid = f"console-{session.id}-{session.commands}"
    try:
        summary = stage_change(agent.config_path, cid, {key: value}, minutes, agent.clock.now())
    except ConfigError as err:
        raise Usage(f"refused, nothing changed: {err}") from err
    except OSError as err:
        raise Failed(f"cannot write the configuration: {err}") from err
    digest = hashlib.sha256(agent.config_path.read_bytes()).hexdigest()
    console.track_change(cid, key, digest)
    console.after_reply(lambda: agent.events.put(("restart", cid)))
    return {"change": cid, "summary": summary, "restart": True, "rollback_minutes": minutes}


@command("reboot", "reboot the terminal (the configured reboot command)", changes=True)
def cmd_reboot(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    argv = list(console.agent.cfg.commands.reboot_command)
    if not argv:
        raise Failed("no reboot command configured ([commands] reboot_command)")

    def go() -> None:
        log.warning("reboot requested from the console by %s", session.who)
        try:
            subprocess.Popen(argv, start_new_session=True)  # noqa: S603 - configured by the operator
        except OSError as err:
            log.error("reboot command %s failed: %s", argv[0], err)

    console.after_reply(go)
    return {"reboot": " ".join(argv)}


@command("reenrol", "new terminal key and CSR (the key stays here); take the CSR to the fleet CA", changes=True)
def cmd_reenrol(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    from agent.enroll import make_key_and_csr

    agent = console.agent
    stage = agent.data_dir / "reenrol"
    try:
        _key, csr = make_key_and_csr(agent.sn, stage, passphrase=str(agent.cfg.link.key_passphrase))
    except (OSError, ValueError) as err:
        raise Failed(f"cannot make a key: {err}") from err
    return {"sn": agent.sn, "csr": csr.read_text(), "key": str(_key)}


@command("reenrol install", "install the certificate signed for the CSR from `reenrol`; restarts the agent",
         "reenrol install cert=PEM", changes=True)
def cmd_reenrol_install(console: Console, session: Session, args: dict[str, Any]) -> dict[str, Any]:
    import os
    import shutil

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    agent, cfg = console.agent, console.agent.cfg
    stage = agent.data_dir / "reenrol"
    try:
        cert = x509.load_pem_x509_certificate(str(args.get("cert", "")).encode())
        password = str(cfg.link.key_passphrase).encode() or None
        key = serialization.load_pem_private_key((stage / "terminal.key").read_bytes(), password)
        ca = x509.load_pem_x509_certificate(cfg.path(cfg.link.ca_file).read_bytes())
    except FileNotFoundError as err:
        raise Failed("no key waiting: run `reenrol` first") from err
    except (ValueError, OSError) as err:
        raise Usage(f"cert: not a PEM certificate ({err})") from err
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
        raise Failed("this certificate is not for the key made by `reenrol` here")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != agent.sn:
        raise Failed(f"this certificate is not for {agent.sn}")
    ca_key = ca.public_key()
    try:
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, AssertionError) as err:
        raise Failed("this certificate is not signed by the fleet CA") from err
    cert_path, key_path = cfg.path(cfg.link.cert_file), cfg.path(cfg.link.key_file)
    stamp = time.strftime("%Y%m%d%H%M%S")
    try:
        for p in (cert_path, key_path):
            if p.exists():
                shutil.copy2(p, p.with_name(f"{p.name}.bak-{stamp}"))
        tmp = cert_path.with_name(cert_path.name + ".new")
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.replace(tmp, cert_path)
        os.replace(stage / "terminal.key", key_path)
    except OSError as err:
        raise Failed(f"cannot install: {err}") from err
    console.after_reply(lambda: agent.events.put(("restart", f"console-{session.id}-reenrol")))
    return {"installed": str(cert_path), "not_after": cert.not_valid_after_utc.isoformat(), "restart": True}
