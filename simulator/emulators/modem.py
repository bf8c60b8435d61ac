"""Emulated 4G modem: the twin of :mod:`drivers.modem`, speaking each firmware profile's dialect.

Run it on a pty with :func:`serve` (or ``PtyDevice(ModemEmulator(...))``) and point the real
driver at ``.path``. What it models (peripherals.md section 4):

* boot: mute for ``boot_delay`` seconds, then the profile's banner (``RDY`` on Quectel), or,
  with ``boot_garbage``, the ``RDATE0Q0V1`` / ``COMMAND NOT SUPPORT`` mess a real module
  gives when written to too early;
* echo until ``ATE0``; ``AT+CMEE`` 0 (bare ERROR), 1 (numeric) and 2 (verbose);
* the vendor dialects (``+QCCID``, ``+ICCID`` for ``AT+CICCID``, ``^ICCID`` nibble-swapped,
  ``+CCID``, ``+CRSM``; QCSQ/QENG, CPSI, HCSQ, GTCCINFO; QGDCNT), SIMCom CR CR LF framing;
* URCs injected between the information lines of the next reply (``mid_reply_urcs``);
* registration lines quoted, plain or zero-padded (``reg_style``); UCS2 operator names;
* ``sim_busy``: that many ``+CME ERROR: 14`` answers to ICCID/IMSI reads after boot;
* ``cpin_cme``: answer ``AT+CPIN?`` with this ``+CME ERROR`` code (e.g. 100) while the SIM is otherwise fine;
* 3G: with a UTRAN ``act`` (2, 4, 5, 6) the signal and serving-cell replies are the WCDMA forms carrying
  ``rscp_dbm`` and ``ecio_db`` (+CESQ, ^HCSQ "WCDMA", +CPSI WCDMA, +QENG WCDMA).

Fault switches (``faults``, settable at run time): ``modem_unresponsive`` (answers nothing),
``sim_missing`` (``+CME ERROR: 10``, not registered), ``slow`` (replies ``slow_delay`` s
late), ``garbage`` (line noise between replies), ``unplug`` (gone; when the switch is
cleared the modem boots again).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from drivers.modem.device import ModemProfile, load_profile
from simulator.emulators.pty import PtyDevice

FAULTS = frozenset({"modem_unresponsive", "sim_missing", "slow", "garbage", "unplug"})


def luhn_digit(body: str) -> str:
    """The Luhn check digit of a digit string (the 15th digit of an IMEI, 3GPP TS 23.003 6.2.1)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def imei_for(key: str, tac: str = "86861403") -> str:
    """A made-up but well-formed IMEI, stable per ``key`` (a unit's SN): an 8-digit type allocation code, a
    6-digit serial (the key's last six digits when it ends in digits, so numbered SNs never collide; else from
    its hash), the Luhn check digit. Each emulated modem of a fleet gets its own."""
    import hashlib

    tail = key[-6:]
    serial = tail if len(tail) == 6 and tail.isdigit() else f"{int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10**6:06d}"
    body = f"{tac}{serial}"
    return body + luhn_digit(body)

_IDENTITY = {  # manufacturer, model, revision as each family prints them
    "Quectel": ("Quectel", "{model}", "{model}EFAR06A09M4G"),
    "SIMCOM INCORPORATED": ("SIMCOM INCORPORATED", "SIMCOM_SIM7600CE-T", "LE20B04SIM7600CE-T"),
    "Huawei": ("Huawei Technologies Co., Ltd.", "ME909s-821", "11.617.01.00.00"),
    "Fibocom": ("Fibocom", "L610", "16000.1000.00.96.20.04"),
}
_CME_TEXT = {10: "SIM not inserted", 13: "SIM failure", 14: "SIM busy", 4: "operation not supported"}


class ModemEmulator:
    def __init__(
        self,
        profile_name: str = "generic-3gpp",
        *,
        iccid: str = "898602F9091830030220",
        imsi: str = "460001234567890",
        imei: str = "861234567890123",
        plmn: str = "46000",
        operator_name: str = "CHINA MOBILE",
        short_name: str = "CMCC",
        act: int = 7,
        reg_stat: int = 1,
        creg_stat: int | None = None,
        tac: int = 0x1A2B,
        cell_id: int = 0x0A1B2C3,
        csq: int = 20,
        rssi_dbm: int = -73,
        rsrp_dbm: int = -95,
        rsrq_db: int = -10,
        sinr_db: int = 12,
        rscp_dbm: int = -85,
        ecio_db: float = -6.5,
        cpin_cme: int | None = None,
        counters: tuple[int, int] = (123456, 654321),
        boot_delay: float = 0.0,
        boot_garbage: bool = False,
        sim_busy: int = 0,
        ucs2_names: bool = False,
        reg_style: str = "quoted",
        slow_delay: float = 0.8,
        faults: Iterable[str] = (),
        seed: int = 7,
        revision: str | None = None,
    ) -> None:
        self.profile: ModemProfile = load_profile(profile_name)
        self.iccid, self.imsi, self.imei, self.plmn = iccid, imsi, imei, plmn
        self.revision = revision  # firmware revision to report instead of the family's usual one
        self.operator_name, self.short_name, self.act = operator_name, short_name, act
        self.reg_stat = reg_stat
        self.creg_stat = reg_stat if creg_stat is None else creg_stat
        self.tac, self.cell_id = tac, cell_id
        self.csq, self.rssi_dbm, self.rsrp_dbm, self.rsrq_db, self.sinr_db = csq, rssi_dbm, rsrp_dbm, rsrq_db, sinr_db
        self.rscp_dbm, self.ecio_db = rscp_dbm, ecio_db
        self.cpin_cme = cpin_cme
        self.counters = counters
        self.boot_delay, self.boot_garbage = boot_delay, boot_garbage
        self.sim_busy = sim_busy
        self.ucs2_names = ucs2_names
        self.reg_style = reg_style
        self.slow_delay = slow_delay
        self.faults: set[str] = set(faults)
        self.mid_reply_urcs: list[str] = []
        self.received: list[str] = []  # every command line answered, for tests
        self.ignored = 0  # command lines swallowed while booting, unresponsive or unplugged
        self._rng = random.Random(seed)
        self._buf = bytearray()
        self._out: list[tuple[float, bytes]] = []  # (due, bytes) for late replies and URCs
        self._next_noise = 0.0
        self._was_unplugged = False
        self.reboot()

    # lifecycle -----------------------------------------------------------------------
    def reboot(self) -> None:
        """Power-cycle: mute for ``boot_delay``, echo on, CMEE 0, registration URCs off."""
        self._boot_end = time.monotonic() + self.boot_delay
        self._announced = False
        self.echo = True
        self.cmee = 0
        self.cops_format = 0
        self.reg_n = {"CREG": 0, "CGREG": 0, "CEREG": 0, "C5GREG": 0}
        self._sim_busy_left = self.sim_busy
        self._buf.clear()

    @property
    def booting(self) -> bool:
        return time.monotonic() < self._boot_end

    def emit_urc(self, line: str) -> None:
        self._out.append((time.monotonic(), self._frame(line)))

    # Emulator protocol -----------------------------------------------------------------
    def feed(self, data: bytes) -> bytes | None:
        if "modem_unresponsive" in self.faults or "unplug" in self.faults:
            self.ignored += data.count(b"\r")
            return None
        if self.booting:
            self.ignored += data.count(b"\r")
            if self.boot_garbage and time.monotonic() > self._boot_end - self.boot_delay / 2 and b"\r" in data:
                return b"RDATE0Q0V1\r\n\r\nCOMMAND NOT SUPPORT\r\n"
            return None
        self._buf += data
        echo = bytearray()
        reply = bytearray()
        while True:
            idx = min((i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0), default=-1)
            if idx < 0:
                break
            raw = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            line = raw.decode("ascii", errors="replace").strip()
            if not line:
                continue
            if self.echo:
                echo += raw + b"\r"
            self.received.append(line)
            reply += self._answer(line)
        if "slow" in self.faults and reply:
            self._out.append((time.monotonic() + self.slow_delay, bytes(reply)))
            return bytes(echo) or None
        return bytes(echo + reply) or None

    def pending(self) -> bool:
        """Whether tick() has anything to do soon (the pty hub ticks lazy devices only then)."""
        return bool(self._out) or not self._announced or self._was_unplugged or bool(
            {"unplug", "garbage"} & self.faults)

    def tick(self) -> bytes | None:
        now = time.monotonic()
        if "unplug" in self.faults:
            self._was_unplugged = True
            self._out.clear()
            return None
        if self._was_unplugged:
            self._was_unplugged = False
            self.reboot()
            return None
        out = bytearray()
        if not self._announced and not self.booting:
            self._announced = True
            if "modem_unresponsive" not in self.faults:
                out += self._banner()
        due = [item for item in self._out if item[0] <= now]
        if due:
            self._out = [item for item in self._out if item[0] > now]
            for _, data in due:
                out += data
        if "garbage" in self.faults and now >= self._next_noise and not self._out:
            self._next_noise = now + 0.25
            out += bytes(self._rng.choice(b"\x00\x11\x13\x80\xfe\xff") for _ in range(self._rng.randint(2, 8)))
        if "modem_unresponsive" in self.faults:
            return None
        return bytes(out) or None

    # framing ---------------------------------------------------------------------------
    def _frame(self, line: str) -> bytes:
        eol = b"\r\r\n" if self.profile.quirks.crcrlf else b"\r\n"
        return eol + line.encode("utf-8") + eol

    def _reply(self, lines: list[str], final: str = "OK") -> bytes:
        lines = list(lines)
        if self.mid_reply_urcs and lines:
            urcs, self.mid_reply_urcs = self.mid_reply_urcs, []
            lines[1:1] = urcs  # after the first info line, before the rest and the final code
        return b"".join(self._frame(x) for x in lines) + self._frame(final)

    def _error(self, code: int | None = None) -> bytes:
        if code is None or self.cmee == 0:
            return self._frame("ERROR")
        if self.cmee == 1:
            return self._frame(f"+CME ERROR: {code}")
        return self._frame(f"+CME ERROR: {_CME_TEXT.get(code, 'unknown')}")

    def _unsupported(self) -> bytes:
        return self._frame("COMMAND NOT SUPPORT" if self.profile.quirks.command_not_support else "ERROR")

    def _banner(self) -> bytes:
        if self.boot_garbage:
            return b"RDATE0Q0V1\r\n"
        out = b""
        if self.profile.quirks.boot_banner:
            out += self._frame(self.profile.quirks.boot_banner)
        if "sim_missing" not in self.faults:
            out += self._frame("+CPIN: READY")
        return out

    # commands ----------------------------------------------------------------------------
    @property
    def _registered(self) -> bool:
        return "sim_missing" not in self.faults and self.reg_stat in (1, 5, 6, 7, 9, 10)

    @property
    def _umts(self) -> bool:
        return self.act in (2, 4, 5, 6)  # UTRAN, HSDPA, HSUPA, HSPA (27.007 AcT)

    def _answer(self, line: str) -> bytes:
        up = line.upper()
        if not up.startswith("AT"):
            return self._frame("ERROR")
        cmd = up[2:]
        p = self.profile
        sim_ok = "sim_missing" not in self.faults
        if cmd == "":
            return self._reply([])
        if cmd in ("E0", "E1", "E"):
            self.echo = cmd == "E1"
            return self._reply([])
        if cmd == "+CMEE?":
            return self._reply([f"+CMEE: {self.cmee}"])
        if cmd.startswith("+CMEE="):
            self.cmee = int(cmd[6:] or 0) if cmd[6:].isdigit() else 0
            return self._reply([])
        if cmd == "I":
            man, model, rev = self._identity()
            return self._reply([man, model, f"Revision: {rev}"])
        if cmd in ("+CGMI", "+GMI"):
            return self._reply([self._identity()[0]])
        if cmd in ("+CGMM", "+GMM"):
            return self._reply([self._identity()[1]])
        if cmd in ("+CGMR", "+GMR"):
            return self._reply([self._identity()[2]])
        if cmd in ("+CGSN", "+GSN"):
            return self._reply([self.imei])
        if cmd == "+CPIN?":
            if sim_ok and self.cpin_cme is not None:
                return self._error(self.cpin_cme)
            return self._reply(["+CPIN: READY"]) if sim_ok else self._error(10)
        if cmd == "+CIMI":
            return self._sim_read(lambda: [self.imsi])
        if up == p.commands.iccid.upper():
            return self._sim_read(self._iccid_lines)
        if cmd == "+CFUN?":
            return self._reply(["+CFUN: 1"])
        if cmd.startswith("+CFUN="):
            return self._reply([])
        if cmd == "+CSQ":
            return self._reply([f"+CSQ: {self.csq},99"])
        if cmd.startswith("+COPS=3,"):
            self.cops_format = int(cmd[8:]) if cmd[8:] in ("0", "1", "2") else 0
            return self._reply([])
        if cmd == "+COPS?":
            return self._reply([self._cops()])
        for kind in ("C5GREG", "CEREG", "CGREG", "CREG"):
            if cmd == f"+{kind}?":
                if kind == "C5GREG" and not p.features.c5greg:
                    return self._unsupported()
                return self._reply([self._reg(kind)])
            if cmd.startswith(f"+{kind}="):
                self.reg_n[kind] = int(cmd[len(kind) + 2 :] or 0) if cmd[len(kind) + 2 :].isdigit() else 0
                return self._reply([])
        if cmd == "+CESQ" and p.features.cesq:
            if not self._registered:
                return self._reply(["+CESQ: 99,99,255,255,255,255"])
            if self._umts:
                return self._reply([f"+CESQ: 99,99,{self.rscp_dbm + 121},{round((self.ecio_db + 24.5) * 2)},255,255"])
            return self._reply([f"+CESQ: 99,99,255,255,{(self.rsrq_db + 20) * 2},{self.rsrp_dbm + 141}"])
        dialect = {p.commands.signal.upper(): p.commands.signal_dialect, p.commands.cell.upper(): p.commands.cell_dialect}
        d = dialect.get(up) if up not in ("", "AT") else None
        if d == "qcsq":
            if not self._registered:
                return self._reply(['+QCSQ: "NOSERVICE"'])
            if self._umts:
                return self._reply([f'+QCSQ: "WCDMA",{self.rssi_dbm}'])
            sinr_idx = (self.sinr_db + 20) * 5
            return self._reply([f'+QCSQ: "LTE",{self.rssi_dbm},{self.rsrp_dbm},{sinr_idx},{self.rsrq_db}'])
        if d == "qeng":
            if not self._registered:
                return self._reply(['+QENG: "servingcell","SEARCH"'])
            mcc, mnc = self.plmn[:3], self.plmn[3:]
            if self._umts:  # MCC, MNC, LAC, cellID, uarfcn, PSC, RAC, RSCP, ecio, phych, SF, slot, speech, comMod
                return self._reply([f'+QENG: "servingcell","NOCONN","WCDMA",{mcc},{mnc},{self.tac:X},'
                                    f"{self.cell_id:X},10663,279,15,{self.rscp_dbm},{self.ecio_db:g},-,-,-,-,-"])
            return self._reply([
                f'+QENG: "servingcell","NOCONN","LTE","FDD",{mcc},{mnc},{self.cell_id:X},123,1650,3,5,5,'
                f"{self.tac:X},{self.rsrp_dbm},{self.rsrq_db},{self.rssi_dbm},{self.sinr_db},40"
            ])
        if d == "cpsi":
            if not self._registered:
                return self._reply(["+CPSI: NO SERVICE,Online"])
            mcc, mnc = self.plmn[:3], self.plmn[3:]
            if self._umts:  # SIMCom prints Ec/Io and RSCP as magnitudes
                return self._reply([f"+CPSI: WCDMA,Online,{mcc}-{mnc},0x{self.tac:04X},{self.cell_id},WCDMA IMT 2000,"
                                    f"279,10663,0,{abs(self.ecio_db):.1f},{abs(self.rscp_dbm)},33,52,500"])
            return self._reply([
                f"+CPSI: LTE,Online,{mcc}-{mnc},0x{self.tac:04X},{self.cell_id},123,EUTRAN-BAND3,1650,5,5,"
                f"{self.rsrq_db * 10},{self.rsrp_dbm * 10},{self.rssi_dbm * 10},{self.sinr_db}"
            ])
        if d == "hcsq":
            if not self._registered:
                return self._reply(['^HCSQ: "NOSERVICE"'])
            if self._umts:
                return self._reply([f'^HCSQ: "WCDMA",{self.rssi_dbm + 121},{self.rscp_dbm + 121},'
                                    f"{round((self.ecio_db + 32.5) * 2)}"])
            sinr_idx = round((self.sinr_db + 20.2) * 5)
            return self._reply([
                f'^HCSQ: "LTE",{self.rssi_dbm + 121},{self.rsrp_dbm + 141},{sinr_idx},{(self.rsrq_db + 20) * 2}'
            ])
        if d == "gtccinfo":
            if not self._registered:
                return self._reply(["+GTCCINFO:"])
            mcc, mnc = self.plmn[:3], self.plmn[3:]
            return self._reply([
                "+GTCCINFO:",
                "LTE service cell:",
                f"1,4,{mcc},{mnc},{self.tac:X},{self.cell_id:X},1650,123,3,5,{self.sinr_db * 2},40,"
                f"{self.rsrp_dbm + 141},{(self.rsrq_db + 20) * 2}",
                "LTE neighbor cell:",
                f"0,4,{mcc},{mnc},{self.tac:X},FFFFFFF,1650,301,3,5,0,30,38,10",
            ])
        if p.commands.counters_dialect == "qgdcnt" and up == p.commands.counters.upper():
            return self._reply([f"+QGDCNT: {self.counters[0]},{self.counters[1]}"])
        if cmd == "+QINISTAT" and p.features.qinistat:
            return self._reply(["+QINISTAT: 7" if sim_ok else "+QINISTAT: 0"])
        return self._unsupported()

    def _sim_read(self, lines_fn: object) -> bytes:
        if "sim_missing" in self.faults:
            return self._error(10)
        if self._sim_busy_left > 0:
            self._sim_busy_left -= 1
            return self._error(14)
        assert callable(lines_fn)
        return self._reply(lines_fn())

    def _iccid_lines(self) -> list[str]:
        c = self.profile.commands
        swapped = "".join(b + a for a, b in zip(self.iccid.ljust(20, "F")[::2], self.iccid.ljust(20, "F")[1::2],
                                                 strict=True))
        if c.iccid_prefix.upper() == "+CRSM:":
            return [f'+CRSM: 144,0,"{swapped}"']
        value = swapped if self.profile.quirks.iccid_swapped else self.iccid
        return [f"{c.iccid_prefix} {value}"]

    def _identity(self) -> tuple[str, str, str]:
        vendor = self.profile.vendor
        man, model, rev = _IDENTITY.get(vendor, ("Generic", "LTE Modem", "1.0.0"))
        return man, model.format(model=self.profile.model), self.revision or rev.format(model=self.profile.model)

    def _cops(self) -> str:
        if not self._registered:
            return "+COPS: 0"
        if self.cops_format == 2:
            oper = self.plmn
        else:
            oper = self.operator_name if self.cops_format == 0 else self.short_name
            if self.ucs2_names:
                oper = "".join(f"{ord(ch):04X}" for ch in oper)
        return f'+COPS: 0,{self.cops_format},"{oper}",{self.act}'

    def _reg(self, kind: str) -> str:
        n = self.reg_n[kind]
        stat = (0 if "sim_missing" in self.faults else self.creg_stat if kind == "CREG" else self.reg_stat)
        style = self.reg_style
        if style == "zero_padded":
            head = f"+{kind}:{n:03d},{stat:03d}"
        elif style == "plain":
            head = f"+{kind}: {n},{stat}"
        else:
            head = f"+{kind}: {n},{stat}"
        if n < 2 or stat not in (1, 5, 6, 7, 9, 10):
            return head
        tac = f"{self.tac:04X}"
        ci = f"{self.cell_id:08X}"
        if style == "plain":
            return f"{head},{tac},{ci},{self.act}"
        if style == "zero_padded":
            return f'{head},"{tac.lower()}","{ci.lower()}",{self.act:03d}'
        return f'{head},"{tac}","{ci}",{self.act}'


def serve(profile: str, **kwargs: object) -> PtyDevice:
    """Start a :class:`ModemEmulator` for ``profile`` on a pty; the caller stops it."""
    return PtyDevice(ModemEmulator(profile, **kwargs)).start()  # type: ignore[arg-type]
