"""The 4G modem as a small typed API over :class:`drivers.transport.Transport`.

One :class:`Modem` owns one AT port. Every exchange is serialised, runs under a timeout
taken from the firmware profile, and reads until the final result code of *that*
command; URCs seen meanwhile go to a queue (:meth:`Modem.pop_urcs`). After a timeout the
driver sends ``AT`` and drains, so a late reply is not taken for the next command's.
If the port vanishes (USB re-enumeration) the next call reopens it and re-runs
:meth:`Modem.init` once the modem answers again.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import msgspec

from drivers import profiles
from drivers.errors import DeviceFault, DeviceNotFound, DriverError, NotSupported, ProtocolError, Timeout
from drivers.health import CheckResult
from drivers.transport import Transport

from . import codec
from .codec import Final, Registration, ResponseReader

log = logging.getLogger(__name__)

_SYNC_CMD = b"AT+CMEE?\r"  # resync after a timeout: its "+CMEE:" reply marks where the stale data ends
_SYNC_MARK = "+CMEE:"


# --------------------------------------------------------------------------------------
# firmware profile

class ModemTimeouts(msgspec.Struct, forbid_unknown_fields=True):
    default: float
    probe: float
    boot: float
    boot_retry: float
    iccid: float
    cops: float
    cfun: float
    signal: float
    cell: float
    counters: float
    sim_busy: float


class ModemCommands(msgspec.Struct, forbid_unknown_fields=True):
    imei: str
    imsi: str
    iccid: str
    iccid_prefix: str
    signal: str
    signal_dialect: Literal["cesq", "qcsq", "cpsi", "hcsq", "gtccinfo", "none"]
    cell: str
    cell_dialect: Literal["qeng", "cpsi", "gtccinfo", "none"]
    counters: str
    counters_dialect: Literal["qgdcnt", "none"]


class ModemFeatures(msgspec.Struct, forbid_unknown_fields=True):
    cesq: bool
    vendor_signal: bool
    serving_cell: bool
    counters: bool
    c5greg: bool
    qinistat: bool


class ModemQuirks(msgspec.Struct, forbid_unknown_fields=True):
    crcrlf: bool
    boot_banner: str
    iccid_swapped: bool
    cpsi_tenths: bool
    command_not_support: bool


class ModemProfile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    vendor: str
    model: str
    baud: int
    bytesize: int
    parity: Literal["N", "E", "O", "M", "S"]
    stopbits: float
    rtscts: bool
    framing: Literal["crlf", "crcrlf"]
    # Model names this profile serves, as the modem gives them in ATI / AT+CGMM (case-insensitive substrings;
    # the longest match over all profiles wins). Empty: never picked by detection (the generic fallback).
    identities: list[str]
    init: list[str]
    timeouts: ModemTimeouts
    commands: ModemCommands
    features: ModemFeatures
    quirks: ModemQuirks


def load_profile(name: str) -> ModemProfile:
    """Load ``firmware_profiles/modems/<name>.toml`` (merged over what it inherits)."""
    return profiles.load("modem", name, ModemProfile)


def profile_for_identity(*answers: str | None) -> str | None:
    """The profile whose ``identities`` match the modem's own answers (ATI lines, AT+CGMM), or None.

    Each pattern is a case-insensitive regular expression searched in the answers; when several profiles
    match, the longest pattern wins (the most specific name)."""
    text = " ".join(a for a in answers if a)
    best: tuple[int, str] | None = None
    for name in profiles.available("modem"):
        for pattern in load_profile(name).identities:
            if pattern and re.search(pattern, text, re.IGNORECASE) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), name)
    return best[1] if best else None


# --------------------------------------------------------------------------------------
# errors and results

class ATError(DeviceFault):
    """The modem answered a command with an error final code (ERROR, +CME ERROR, ...)."""

    def __init__(self, command: str, final: Final) -> None:
        super().__init__(f"{command!r} answered {final.line!r}", code=final.line)
        self.command = command
        self.final = final

    @property
    def cme(self) -> int | None:
        return self.final.code if self.final.kind == "cme" else None


SIM_FAULTS = {
    "absent": "SIM not inserted",
    "pin": "SIM PIN required",
    "puk": "SIM PUK required",
    "pin2": "SIM PIN2 required",
    "puk2": "SIM PUK2 required",
    "ph_sim_pin": "PH-SIM PIN required",
    "ph_net_pin": "network personalization PIN required",
    "ph_net_puk": "network personalization PUK required",
    "error": "SIM failure",
    "wrong": "SIM wrong",
    "not_ready": "SIM not ready",
    "unknown": "SIM state unknown",
}


@dataclass(frozen=True)
class SimQuery:
    """The answer to ``AT+CPIN?``: the SIM state, and the ``+CME ERROR`` code when that was the answer."""

    state: str
    cme: int | None = None

    @property
    def error(self) -> dict[str, Any] | None:
        """``{"code": 100, "meaning": "unknown"}`` (27.007 §9.2) when the modem answered +CME ERROR."""
        return None if self.cme is None else {"code": self.cme, "meaning": codec.cme_meaning(self.cme)}

    def reason(self) -> str:
        """What a check says: the state; for a code that says nothing about the SIM, the code and its meaning
        too ("SIM state unknown (+CME ERROR: 100 unknown)")."""
        text = SIM_FAULTS.get(self.state, f"SIM state {self.state}")
        if self.cme is not None and self.state == "unknown":
            return f"{text} (+CME ERROR: {self.cme} {codec.cme_meaning(self.cme)})"
        return text


@dataclass
class OperatorInfo:
    mcc_mnc: str | None = None
    name: str | None = None
    carrier: str | None = None


@dataclass
class RegistrationInfo:
    state: str | None = None  # home, roaming, searching, denied, not_registered, ...
    registered: bool | None = None
    source: str | None = None  # which of CEREG/CGREG/CREG/C5GREG decided
    technology: str | None = None
    tac: int | None = None
    cell_id: int | None = None


@dataclass
class SignalInfo:
    csq: int | None = None
    rssi_dbm: float | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr: float | None = None
    rscp_dbm: float | None = None  # 3G (WCDMA/UMTS): CPICH RSCP
    ecio_db: float | None = None  # 3G: Ec/Io
    raw: list[str] = field(default_factory=list)


@dataclass
class ModemStatus:
    """Everything the modem told us; a value it did not give is None, never guessed."""

    iccid: str | None = None
    imsi: str | None = None
    imei: str | None = None
    sim: str | None = None
    sim_error: dict[str, Any] | None = None  # the +CME ERROR the SIM query got: {"code": 100, "meaning": "unknown"}
    operator: OperatorInfo = field(default_factory=OperatorInfo)
    registration: RegistrationInfo = field(default_factory=RegistrationInfo)
    signal: SignalInfo = field(default_factory=SignalInfo)
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    radio: int | None = None  # +CFUN: 1 full, 0 minimum, 4 flight mode
    counters: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(status: ModemStatus) -> CheckResult:
    """ok when the SIM is ready (the modem answered, or there would be no status)."""
    detail = {"sim": status.sim, "registration": status.registration.state, "csq": status.signal.csq}
    if status.sim == "ready":
        return CheckResult.ok(**detail)
    cme = (status.sim_error or {}).get("code")
    return CheckResult.fault(SimQuery(status.sim or "unknown", cme).reason(), **detail)


# --------------------------------------------------------------------------------------
# the device

class Modem:
    def __init__(self, url: str, profile: str | ModemProfile, *, baudrate: int | None = None) -> None:
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        p = self.profile
        self.url = url
        self._transport = Transport(
            url, baudrate or p.baud, bytesize=p.bytesize, parity=p.parity, stopbits=p.stopbits, rtscts=p.rtscts
        )
        self._lock = threading.RLock()
        self._urcs: deque[str] = deque(maxlen=512)
        self._pending = b""
        self._initialised = False
        self._lost = False
        self._rebooted = False  # the modem printed its boot banner: its settings are gone
        self.inits = 0  # how many times init has run: a new one means a new boot (firmware, even another modem)
        self._sync_pending = False  # a timed-out command may still answer: resync before trusting a reply
        # Called while waiting for an answer: (command, seconds waited so far, seconds it will wait at most).
        # The diag command shows progress with it; the driver itself never prints.
        self.on_wait: Callable[[str, float, float], None] | None = None

    # lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            self._transport.open()
            self._lost = False

    def close(self) -> None:
        with self._lock:
            self._transport.close()
            self._pending = b""

    def __enter__(self) -> Modem:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def init(self) -> None:
        """Wait for boot (AT every ``boot_retry`` s until OK), then ATE0, AT+CMEE=1, profile init."""
        with self._lock:
            self._ensure_open()
            self._init_locked()

    def _init_locked(self) -> None:
        self._wait_boot()
        t = self.profile.timeouts
        for cmd in ("ATE0", "AT+CMEE=1", *self.profile.init):
            try:
                self._exchange(cmd, t.default)
            except ATError as err:
                log.warning("%s: init command %s refused: %s", self.url, cmd, err.final.line)
        self._initialised = True
        self._rebooted = False
        self.inits += 1

    def _wait_boot(self) -> None:
        t = self.profile.timeouts
        started = self._transport.monotonic()
        deadline = started + t.boot
        tries = 0
        while True:
            tries += 1
            slot_end = self._transport.monotonic() + t.boot_retry
            self._write(b"AT\r")
            reader = ResponseReader("AT")
            reader.feed(self._pending)
            self._pending = b""
            while not reader.done and self._transport.monotonic() < slot_end:
                self._waiting("AT", started, t.boot)
                reader.feed(self._read())
            self._urcs.extend(reader.response.urcs)
            if reader.response.ok:
                self._urcs.extend(reader.response.trailing)
                self._pending = reader.remainder
                log.debug("%s: modem answered AT after %d tries", self.url, tries)
                return
            final = reader.response.final
            noise = reader.response.echo + reader.response.lines + ([final.line] if final is not None else [])
            if noise:
                log.debug("%s: boot noise %r", self.url, noise)
            if self._transport.monotonic() >= deadline:
                if noise:  # it talks, but never OK: not the same as a modem that says nothing
                    raise ProtocolError(f"no OK to AT within {t.boot:g} s, only", "\n".join(noise).encode())
                raise Timeout("AT (boot)", t.boot)
            self._transport.sleep(max(0.0, slot_end - self._transport.monotonic()))

    # raw I/O ---------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._lost or not self._transport.is_open:
            was_lost = self._lost
            self._transport.open()
            self._lost = False
            self._pending = b""
            self._sync_pending = False
            if was_lost and self._initialised:
                log.info("%s: port is back, re-initialising the modem", self.url)
                self._init_locked()
        if self._rebooted and self._initialised:
            log.info("%s: modem rebooted, re-initialising", self.url)
            self._rebooted = False
            self._init_locked()

    def _write(self, data: bytes) -> None:
        try:
            self._transport.write(data)
        except DeviceNotFound:
            self._lost = True
            raise

    def _read(self) -> bytes:
        try:
            return self._transport.read_available()
        except DeviceNotFound:
            self._lost = True
            raise

    def pop_urcs(self) -> list[str]:
        """URCs received since the last call (oldest first)."""
        with self._lock:
            out = list(self._urcs)
            self._urcs.clear()
            return out

    # exchanges -------------------------------------------------------------------------
    def command(self, cmd: str, timeout: float | None = None, *, expect: tuple[str, ...] = ()) -> list[str]:
        """Send ``cmd`` and return its information lines; raise :class:`ATError` on an error code.

        ``expect``: prefixes of this command's info lines (so a ``+CEREG:`` reply to
        ``AT+CEREG?`` is not taken for a URC)."""
        with self._lock:
            self._ensure_open()
            return self._exchange(cmd, timeout if timeout is not None else self.profile.timeouts.default, expect)

    def _exchange(self, cmd: str, timeout: float, expect: tuple[str, ...] = ()) -> list[str]:
        resp = self._transact(cmd, timeout, expect)
        assert resp.final is not None
        if not resp.final.ok:
            raise ATError(cmd, resp.final)
        return resp.lines

    def _transact(self, cmd: str, timeout: float, expect: tuple[str, ...]) -> codec.Response:
        if self._sync_pending and not self._resync():
            raise Timeout(cmd, self.profile.timeouts.probe)
        reader = ResponseReader(cmd, expect)
        self._write(cmd.encode("ascii") + b"\r")
        got = bytearray(self._pending)
        reader.feed(self._pending)
        self._pending = b""
        started = self._transport.monotonic()
        deadline = started + timeout
        while not reader.done:
            self._waiting(cmd, started, timeout)
            if self._transport.monotonic() >= deadline:
                self._note_urcs(reader.response.urcs)
                log.debug("%s: %s timed out after %r", self.url, cmd, bytes(got))
                self._sync_pending = True
                self._resync()
                raise Timeout(cmd, timeout, bytes(got))
            chunk = self._read()
            got += chunk
            reader.feed(chunk)
        resp = reader.response
        self._note_urcs(resp.urcs + resp.trailing)
        if self._initialised and resp.echo and resp.echo[-1].upper() == cmd.upper():
            self._rebooted = True  # echo is back on: the modem lost the settings init made
        self._pending = reader.remainder
        log.debug("%s: %s -> %r %s", self.url, cmd, resp.lines, resp.final.line if resp.final else None)
        return resp

    def _waiting(self, cmd: str, started: float, limit: float) -> None:
        if self.on_wait is not None:
            self.on_wait(cmd, self._transport.monotonic() - started, limit)

    def _note_urcs(self, lines: list[str]) -> None:
        self._urcs.extend(lines)
        banner = self.profile.quirks.boot_banner
        if banner and banner in lines:
            self._rebooted = True

    def _resync(self) -> bool:
        """After a timeout a late answer may still come. Send ``AT+CMEE?`` and skip everything up
        to its ``+CMEE:`` reply (and any further sync replies), within the probe timeout.
        True when in step again; otherwise the next exchange tries again first."""
        try:
            self._write(_SYNC_CMD)
            reader = ResponseReader()
            reader.feed(self._pending)
            self._pending = b""
            deadline = self._transport.monotonic() + self.profile.timeouts.probe
            synced_at: float | None = None
            while self._transport.monotonic() < deadline:
                if synced_at is not None and self._transport.monotonic() - synced_at >= 0.2:
                    break
                reader.feed(self._read())
                if reader.done:
                    resp = reader.response
                    self._note_urcs(resp.urcs)
                    log.debug("%s: skipped after timeout: %r %s", self.url, resp.lines, resp.final)
                    if any(line.startswith(_SYNC_MARK) for line in resp.lines):
                        synced_at = self._transport.monotonic()
                    rest = reader.remainder
                    reader = ResponseReader()
                    reader.feed(rest)
            if synced_at is None:
                return False
            self._note_urcs(reader.response.urcs + reader.response.lines)
            self._pending = reader.remainder
            self._sync_pending = False
            return True
        except DeviceNotFound:
            self._lost = True
            raise

    def _with_sim_retry(self, cmd: str, timeout: float, expect: tuple[str, ...] = ()) -> list[str]:
        """Retry ``+CME ERROR: 14`` (SIM busy right after READY) with doubling backoff."""
        end = self._transport.monotonic() + self.profile.timeouts.sim_busy
        delay = 0.1
        while True:
            try:
                return self.command(cmd, timeout, expect=expect)
            except ATError as err:
                if err.cme != 14 or self._transport.monotonic() + delay > end:
                    raise
                log.debug("%s: SIM busy on %s, retrying in %.1f s", self.url, cmd, delay)
                self._transport.sleep(delay)
                delay = min(delay * 2, 1.6)

    # typed queries -----------------------------------------------------------------------
    def probe(self) -> None:
        """A plain ``AT`` with the short probe timeout."""
        self.command("AT", self.profile.timeouts.probe)

    def imei(self) -> str:
        c = self.profile.commands
        return codec.parse_imei(self.command(c.imei, expect=("+CGSN:",)))

    def imsi(self) -> str:
        c = self.profile.commands
        return codec.parse_imsi(self._with_sim_retry(c.imsi, self.profile.timeouts.default, ("+CIMI:",)))

    def iccid(self) -> str:
        c = self.profile.commands
        lines = self._with_sim_retry(c.iccid, self.profile.timeouts.iccid, (c.iccid_prefix,))
        if c.iccid_prefix.upper() == "+CRSM:":
            crsm = codec.parse_crsm(codec.find_line(lines, "+CRSM:"))
            if not crsm.ok:
                raise DeviceFault(f"reading EF_ICCID failed: sw {crsm.sw1:02X}{crsm.sw2:02X}", code="crsm")
            return codec.parse_iccid(crsm.data)
        return codec.parse_iccid(codec.find_line(lines, c.iccid_prefix))

    def sim_state(self) -> str:
        """ready, absent, pin, puk, pin2, puk2, ph_*, not_ready, wrong, error (SIM failure) or unknown."""
        return self.sim_query().state

    def sim_query(self) -> SimQuery:
        """``AT+CPIN?``. A ``+CME ERROR`` answer is read by 27.007 §9.2 (10 absent, 13 SIM failure, ...);
        a code that says nothing about the SIM (100 unknown, 3 not allowed, ...) is state "unknown" with the
        code kept, never "SIM failure"; a bare ERROR is "unknown" too."""
        try:
            lines = self.command("AT+CPIN?", expect=("+CPIN:",))
        except ATError as err:
            cme = err.cme
            return SimQuery(codec.SIM_FROM_CME.get(cme, "unknown") if cme is not None else "unknown", cme)
        return SimQuery(codec.parse_cpin(codec.find_line(lines, "+CPIN:")))

    def radio(self) -> int:
        lines = self.command("AT+CFUN?", self.profile.timeouts.cfun, expect=("+CFUN:",))
        return codec.parse_cfun(codec.find_line(lines, "+CFUN:"))

    def csq(self) -> codec.Csq:
        return codec.parse_csq(codec.find_line(self.command("AT+CSQ", expect=("+CSQ:",)), "+CSQ:"))

    def operator(self) -> OperatorInfo:
        t = self.profile.timeouts
        self.command("AT+COPS=3,2", t.cops)
        numeric = codec.parse_cops(codec.find_line(self.command("AT+COPS?", t.cops, expect=("+COPS:",)), "+COPS:"))
        self.command("AT+COPS=3,0", t.cops)
        named = codec.parse_cops(codec.find_line(self.command("AT+COPS?", t.cops, expect=("+COPS:",)), "+COPS:"))
        mcc_mnc = f"{numeric.mcc}{numeric.mnc}" if numeric.mcc and numeric.mnc else None
        return OperatorInfo(mcc_mnc, named.name, codec.carrier_name(numeric.mcc, numeric.mnc))

    def registrations(self) -> list[Registration]:
        kinds = ["CREG", "CGREG", "CEREG"] + (["C5GREG"] if self.profile.features.c5greg else [])
        out: list[Registration] = []
        for kind in kinds:
            try:
                lines = self.command(f"AT+{kind}?", expect=(f"+{kind}:",))
                out.append(codec.parse_creg(codec.find_line(lines, f"+{kind}:"), solicited=True))
            except (ATError, ProtocolError) as err:
                log.debug("%s: %s? unusable: %s", self.url, kind, err)
        return out

    def lte_signal(self) -> codec.LteSignal:
        c, f = self.profile.commands, self.profile.features
        d = c.signal_dialect
        if d == "none" or (d == "cesq" and not f.cesq):
            raise NotSupported("LTE signal", self.profile.model)
        lines = self.command(c.signal, self.profile.timeouts.signal, expect=_prefixes(d))
        return self._signal_from(lines)

    def _signal_from(self, lines: list[str]) -> codec.LteSignal:
        d = self.profile.commands.signal_dialect
        if d == "cesq":
            return codec.parse_cesq(codec.find_line(lines, "+CESQ:"))
        if d == "qcsq":
            return codec.parse_qcsq(codec.find_line(lines, "+QCSQ:"))
        if d == "hcsq":
            return codec.parse_hcsq(codec.find_line(lines, "^HCSQ:"))
        return _signal_of(self._cell_from(lines, d))

    def _shared_query(self) -> bool:
        """The profile asks signal and serving cell with one command (SIMCom AT+CPSI?, Fibocom AT+GTCCINFO?)."""
        c = self.profile.commands
        return (self.profile.features.serving_cell and c.cell_dialect != "none" and c.signal == c.cell
                and c.signal_dialect == c.cell_dialect)

    def serving_cell(self) -> codec.ServingCell:
        c = self.profile.commands
        d = c.cell_dialect
        if d == "none" or not self.profile.features.serving_cell:
            raise NotSupported("serving cell", self.profile.model)
        return self._cell_from(self.command(c.cell, self.profile.timeouts.cell, expect=_prefixes(d)), d)

    @staticmethod
    def _cell_from(lines: list[str], dialect: str) -> codec.ServingCell:
        if dialect == "qeng":
            return codec.parse_qeng_servingcell(lines)
        if dialect == "cpsi":
            return codec.parse_cpsi(codec.find_line(lines, "+CPSI:"))
        return codec.parse_gtccinfo(lines)

    def identity(self) -> codec.Identity:
        ident = codec.parse_ati(self.command("ATI"))
        model, revision = ident.model, ident.revision
        if model is None:
            model = codec.parse_text_reply(self.command("AT+CGMM", expect=("+CGMM:",)), "+CGMM:")
        if revision is None:
            revision = codec.parse_text_reply(self.command("AT+CGMR", expect=("+CGMR:",)), "+CGMR:")
        return codec.Identity(ident.manufacturer, model, revision)

    def counters(self) -> codec.Counters:
        c = self.profile.commands
        if c.counters_dialect == "none" or not self.profile.features.counters:
            raise NotSupported("data counters", self.profile.model)
        lines = self.command(c.counters, self.profile.timeouts.counters, expect=("+QGDCNT:",))
        return codec.parse_qgdcnt(codec.find_line(lines, "+QGDCNT:"))

    # aggregate -----------------------------------------------------------------------------
    def status(self, *, identity: bool = True, sim: str | None = None) -> ModemStatus:
        """Ask everything the profile supports. A query the modem refuses leaves its field None;
        :class:`Timeout` and :class:`DeviceNotFound` propagate (the modem itself is gone).

        ``identity=False`` leaves out what only changes with another SIM, another boot or another network:
        IMEI, IMSI, manufacturer, model, firmware and operator (eight of the seventeen exchanges) and keeps
        the ICCID, so a swapped SIM is still seen at once; those fields stay None. ``sim``: the SIM state
        the caller has just read (``check()``'s), not asked again."""
        with self._lock:
            st = ModemStatus()
            q = SimQuery(sim) if sim is not None else self.sim_query()
            st.sim, st.sim_error = q.state, q.error
            if identity:
                st.imei = self._maybe(self.imei)
            if st.sim != "absent":  # a SIM failure or an unknown answer may still give its ICCID: try
                st.iccid = self._maybe(self.iccid)
                if st.sim == "ready" and identity:
                    st.imsi = self._maybe(self.imsi)
            ident = self._maybe(self.identity) if identity else None
            if ident is not None:
                st.manufacturer, st.model, st.firmware = ident.manufacturer, ident.model, ident.revision
            st.radio = self._maybe(self.radio)
            op = (self._maybe(self.operator) or OperatorInfo()) if identity else OperatorInfo()
            if op.carrier is None and st.imsi is not None:
                plmn = codec.plmn_from_imsi(st.imsi)  # the SIM's home carrier when not on a network
                op.carrier = codec.carrier_name(*plmn) if plmn else None
            st.operator = op
            regs = self._maybe(self.registrations) or []
            best = codec.best_registration(regs)
            cell = self._maybe(self.serving_cell) if self.profile.features.serving_cell else None
            if best is not None:
                st.registration = RegistrationInfo(
                    best.state, best.registered, best.kind, best.technology, best.lac, best.cell_id
                )
            if cell is not None:
                r = st.registration
                r.technology = r.technology or cell.technology
                r.tac = r.tac if r.tac is not None else cell.tac
                r.cell_id = r.cell_id if r.cell_id is not None else cell.cell_id
            csq = self._maybe(self.csq)
            sig = SignalInfo()
            if csq is not None:
                sig.csq, sig.rssi_dbm = csq.rssi, csq.rssi_dbm
            if self._shared_query():  # one AT+CPSI? / AT+GTCCINFO? answers both: not asked twice
                lte = _signal_of(cell) if cell is not None else None
            else:
                lte = self._maybe(self.lte_signal) if self.profile.commands.signal_dialect != "none" else None
            if lte is not None:
                sig.rsrp_dbm, sig.rsrq_db, sig.sinr = lte.rsrp_dbm, lte.rsrq_db, lte.sinr_db
                sig.rscp_dbm, sig.ecio_db = lte.rscp_dbm, lte.ecio_db
                if lte.raw:
                    sig.raw.append(lte.raw)
            if cell is not None:
                sig.rsrp_dbm = sig.rsrp_dbm if sig.rsrp_dbm is not None else cell.rsrp_dbm
                sig.rsrq_db = sig.rsrq_db if sig.rsrq_db is not None else cell.rsrq_db
                sig.rscp_dbm = sig.rscp_dbm if sig.rscp_dbm is not None else cell.rscp_dbm
                sig.ecio_db = sig.ecio_db if sig.ecio_db is not None else cell.ecio_db
                if cell.raw and "\n".join(cell.raw) not in sig.raw:
                    sig.raw.append("\n".join(cell.raw))
            st.signal = sig
            if self.profile.features.counters:
                cnt = self._maybe(self.counters)
                if cnt is not None:
                    st.counters = {"bytes_sent": cnt.bytes_sent, "bytes_received": cnt.bytes_received}
            return st

    def _maybe(self, query: Any) -> Any:
        try:
            return query()
        except (ATError, NotSupported, ProtocolError) as err:
            log.debug("%s: %s gave nothing: %s", self.url, getattr(query, "__name__", query), err)
            return None

    def check(self) -> CheckResult:
        """ok: the modem answers and its SIM is ready. fault: no answer, or a SIM problem.
        unknown: the port could not be opened (missing, busy)."""
        try:
            with self._lock:
                self.probe()
                if not self._initialised:
                    self._init_locked()
                q = self.sim_query()
        except DeviceNotFound as err:
            return CheckResult.unknown("modem port not found", port=self.url, error=err.reason)
        except Timeout as err:
            return CheckResult.fault("modem not answering", command=err.command, seconds=err.seconds)
        except ProtocolError as err:
            return CheckResult.fault("modem answers garbage", error=str(err))
        except DriverError as err:
            return CheckResult.unknown(f"modem check failed: {err}")
        if q.state == "ready":
            return CheckResult.ok(sim=q.state)
        return CheckResult.fault(q.reason(), sim=q.state, **({"cme": q.cme} if q.cme is not None else {}))


def _signal_of(cell: codec.ServingCell) -> codec.LteSignal:
    return codec.LteSignal(cell.rsrp_dbm, cell.rsrq_db, cell.sinr_db, cell.rssi_dbm, cell.technology,
                           "\n".join(cell.raw), cell.rscp_dbm, cell.ecio_db)


def _prefixes(dialect: str) -> tuple[str, ...]:
    return {
        "cesq": ("+CESQ:",), "qcsq": ("+QCSQ:",), "hcsq": ("^HCSQ:",), "cpsi": ("+CPSI:",),
        "gtccinfo": ("+GTCCINFO:",), "qeng": ("+QENG:",),
    }.get(dialect, ())
