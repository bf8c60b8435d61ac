"""The terminal's peripherals as the agent sees them: one owner per serial port.

Each configured peripheral is opened through its driver (drivers/ knows nothing of the
agent). A peripheral missing at boot is retried with backoff, never fatal, and logged
once per state change. Health checks, self-tests and commands all go through the same
per-port lock, because a serial line has one speaker at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from drivers.errors import DeviceNotFound, DriverError
from drivers.health import CheckResult
from wire.messages import STATE_CODES, Check

from .config import PeripheralConfig, PeripheralsConfig

log = logging.getLogger(__name__)

_SIM_KEYS = ("iccid", "imsi", "carrier", "mcc_mnc")  # what belongs to the SIM, not to the modem
#: real seconds between two full reads of the modem's identity (IMEI, IMSI, model, firmware, operator) when
#: nothing says it changed; it is also read at first, after every (re)initialisation of the modem (a reboot:
#: new firmware, or another modem on the port), when the SIM state or the registration changes, and when the
#: ICCID (asked in every sample) changes
IDENTITY_REFRESH_S = 900.0


def _factory(kind: str) -> Callable[..., Any]:
    if kind == "modem":
        from drivers.modem.device import Modem

        return Modem
    if kind == "printer":
        from drivers.printer.device import Printer

        return Printer
    if kind == "idcard":
        from drivers.idcard.device import IdCardReader

        return IdCardReader
    raise ValueError(f"unknown peripheral kind {kind!r}")


class _Port:
    def __init__(self, kind: str, cfg: PeripheralConfig, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self._mono = monotonic
        self.cfg = cfg
        self.device: Any = None
        self.lock = threading.Lock()
        self.next_retry = 0.0
        self.backoff = 5.0
        self.last: tuple[str, str] | None = None
        self.last_error: DriverError | None = None

    def open(self) -> Any:
        if self.device is not None:
            return self.device
        if self._mono() < self.next_retry and self.last_error is not None:
            raise self.last_error  # still missing as far as we know; retried at next_retry
        try:
            dev = _factory(self.kind)(self.cfg.port, self.cfg.profile, baudrate=self.cfg.baud)
            dev.open()
        except DriverError as err:
            self.last_error = err
            self.next_retry = self._mono() + self.backoff
            self.backoff = min(self.backoff * 2, 300.0)
            raise
        self.last_error = None
        self.backoff = 5.0
        self.device = dev
        return dev

    def drop(self) -> None:
        dev, self.device = self.device, None
        if dev is not None:
            try:
                dev.close()
            except DriverError:
                pass


class PeripheralSet:
    def __init__(self, cfg: PeripheralsConfig, *, identity_refresh_s: float = IDENTITY_REFRESH_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._mono = monotonic  # the agent's clock: virtual in the simulator's lockstep player
        self.ports: dict[str, _Port] = {}
        self.identity_refresh_s = identity_refresh_s
        self._identity_key: tuple[Any, ...] | None = None  # (device, its inits, SIM state, registration) at the last full read
        self._identity_next = 0.0  # monotonic time of the next full read when nothing changed
        self._reg: str | None = None  # the registration state the modem last gave
        for kind in ("modem", "printer", "idcard"):
            pc = getattr(cfg, kind)
            if pc is not None and pc.enabled:
                self.ports[kind] = _Port(kind, pc, monotonic)
        self._signal: tuple[int | None, int | None] = (None, None)
        self._signal_3g: tuple[int | None, int | None] = (None, None)  # RSCP dBm, Ec/Io dB on a WCDMA cell
        self._cell: tuple[int | None, int | None] = (None, None)
        self._data_bytes: int | None = None
        self._identity: dict[str, Any] = {}
        # "identity" when the modem/SIM identity is first seen or changes, "sim_changed" when ICCID or IMSI differ
        self.identity_event: str | None = None

    @contextmanager
    def use(self, kind: str) -> Iterator[Any]:
        """Exclusive use of one peripheral (for self-tests and commands)."""
        port = self.ports[kind]
        with port.lock:
            yield port.open()

    def check_all(self) -> dict[str, Check]:
        return {kind: self._check(port) for kind, port in self.ports.items()}

    def _check(self, port: _Port) -> Check:
        with port.lock:
            try:
                dev = port.open()
                result: CheckResult = dev.check()
                if port.kind == "modem":
                    self._modem_extras(dev, result.detail.get("sim"))
            except DeviceNotFound as err:  # could not be checked: unknown, as the drivers say (decision 003)
                port.drop()
                result = CheckResult.unknown(f"not found at {port.cfg.port}: {err.reason}")
            except DriverError as err:
                port.drop()
                result = CheckResult.fault(str(err))
        state = (result.state, result.reason)
        if state != port.last:
            log_fn = log.info if result.state == "ok" else log.warning
            log_fn("%s: %s%s", port.kind, result.state, f" ({result.reason})" if result.reason else "")
            port.last = state
        return Check(STATE_CODES[result.state], result.reason[:120])

    def _modem_extras(self, dev: Any, sim: str | None) -> None:
        """Signal, cell and data counters every sample; the identity only when it may have changed.

        Nineteen AT exchanges a sample became eleven: a real modem answers each in tens to hundreds of
        milliseconds on a port the dial-up may share, and the simulator's peripheral checks cost about a
        quarter less (docs/performance-sim.md)."""
        key = (dev, getattr(dev, "inits", 0), sim, self._reg)  # the device itself: a re-opened port is a new one
        full = key != self._identity_key or self._mono() >= self._identity_next
        try:
            st = dev.status(identity=full, sim=sim)
            if not full and st.iccid is not None and st.iccid != self._identity.get("iccid"):
                full = True  # another SIM: read the rest of the identity now
                st = dev.status(identity=True, sim=sim)
        except DriverError as err:
            log.debug("modem status unavailable: %s", err)
            return
        sig = getattr(st, "signal", None)
        rssi = getattr(sig, "rssi_dbm", None) if sig is not None and not isinstance(sig, dict) else (sig or {}).get("rssi_dbm")
        csq = getattr(sig, "csq", None) if sig is not None and not isinstance(sig, dict) else (sig or {}).get("csq")
        self._signal = (rssi, csq)
        rscp = getattr(sig, "rscp_dbm", None) if sig is not None and not isinstance(sig, dict) else (sig or {}).get("rscp_dbm")
        ecio = getattr(sig, "ecio_db", None) if sig is not None and not isinstance(sig, dict) else (sig or {}).get("ecio_db")
        self._signal_3g = (None if rscp is None else int(round(rscp)), None if ecio is None else int(round(ecio)))
        reg = getattr(st, "registration", None)
        self._cell = (getattr(reg, "cell_id", None), getattr(reg, "tac", None))
        counters = getattr(st, "counters", None) or {}
        if "bytes_sent" in counters and "bytes_received" in counters:
            self._data_bytes = int(counters["bytes_sent"]) + int(counters["bytes_received"])
        ident = {
            "iccid": getattr(st, "iccid", None), "imsi": getattr(st, "imsi", None), "imei": getattr(st, "imei", None),
            "modem_model": getattr(st, "model", None), "modem_firmware": getattr(st, "firmware", None),
        }
        op = getattr(st, "operator", None)
        if op is not None:
            ident["carrier"] = getattr(op, "carrier", None) if not isinstance(op, dict) else op.get("carrier")
            ident["mcc_mnc"] = getattr(op, "mcc_mnc", None) if not isinstance(op, dict) else op.get("mcc_mnc")
        self._reg = getattr(reg, "state", None)
        self._note_identity(ident)
        if full:
            # inits read now: a re-initialisation during this very status was followed by the full read
            self._identity_key = (dev, getattr(dev, "inits", 0), sim, self._reg)
            self._identity_next = self._mono() + self.identity_refresh_s

    def _note_identity(self, ident: dict[str, Any]) -> None:
        """Keep the modem and SIM identity; flag an event when it is first seen or changes.

        A value the modem did not give this time (None) keeps the last one known: a query that failed
        is not a change. A new ICCID or IMSI is a SIM swap (``sim_changed``, the old SIM's fields
        dropped); any other new value (IMEI: another modem, firmware after an update, operator) is an
        ``identity`` event. Nothing identifying yet (no ICCID, no IMEI): nothing reported."""
        known = {k: v for k, v in ident.items() if v is not None}
        if not known.get("iccid") and not known.get("imei"):
            return
        prev = self._identity
        swapped = any(known.get(k) and prev.get(k) and known[k] != prev[k] for k in ("iccid", "imsi"))
        if swapped:
            merged = {k: v for k, v in prev.items() if k not in _SIM_KEYS} | known
        else:
            merged = prev | known
        if merged == prev:
            return
        if swapped:
            log.warning("SIM changed: ICCID %s -> %s", prev.get("iccid"), known.get("iccid"))
        elif prev:
            log.info("modem identity changed: %s", ", ".join(sorted(k for k in merged if merged[k] != prev.get(k))))
        self._identity = merged
        # a swap outranks a plain change not yet sent
        self.identity_event = "sim_changed" if swapped or self.identity_event == "sim_changed" else "identity"

    def pop_identity_event(self) -> str | None:
        ev, self.identity_event = self.identity_event, None
        return ev

    def signal(self) -> tuple[int | None, int | None]:
        return self._signal

    def signal_3g(self) -> tuple[int | None, int | None]:
        """(RSCP dBm, Ec/Io dB), whole numbers, when the modem is on a 3G (WCDMA/UMTS) cell, else (None, None)."""
        return self._signal_3g

    def cell(self) -> tuple[int | None, int | None]:
        """(cell id, TAC) of the serving cell, when the modem says."""
        return self._cell

    def data_bytes(self) -> int | None:
        """The modem's data counter (sent + received), when the model has one."""
        return self._data_bytes

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def close(self) -> None:
        for port in self.ports.values():
            with port.lock:
                port.drop()
