"""Pure AT codec for 3GPP modems: framing, final result codes, URC routing, and parsers.

Nothing here does I/O. Every parser takes the text the modem sent (one line, or the
information lines of one reply) and returns plain data, or raises
:class:`drivers.errors.ProtocolError` carrying the raw text. Sources for the formats are
named in the docstrings and in ``tests/drivers/test_modem_codec.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.errors import ProtocolError

# --------------------------------------------------------------------------------------
# final result codes (ModemManager src/tests/test-at-serial-port.c; 3GPP TS 27.007 §9.2)

# 3GPP TS 27.007 §9.2.1 (general errors) and §9.2.2 (GPRS and EPS errors): the meaning of each code.
CME_ERRORS: dict[int, str] = {
    0: "phone failure",
    1: "no connection to phone",
    2: "phone-adaptor link reserved",
    3: "operation not allowed",
    4: "operation not supported",
    5: "PH-SIM PIN required",
    6: "PH-FSIM PIN required",
    7: "PH-FSIM PUK required",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    17: "SIM PIN2 required",
    18: "SIM PUK2 required",
    20: "memory full",
    21: "invalid index",
    22: "not found",
    23: "memory failure",
    24: "text string too long",
    25: "invalid characters in text string",
    26: "dial string too long",
    27: "invalid characters in dial string",
    30: "no network service",
    31: "network timeout",
    32: "network not allowed - emergency calls only",
    40: "network personalization PIN required",
    41: "network personalization PUK required",
    42: "network subset personalization PIN required",
    43: "network subset personalization PUK required",
    44: "service provider personalization PIN required",
    45: "service provider personalization PUK required",
    46: "corporate personalization PIN required",
    47: "corporate personalization PUK required",
    48: "hidden key required",
    49: "EAP method not supported",
    50: "incorrect parameters",
    51: "command implemented but currently disabled",
    52: "command aborted by user",
    53: "not attached to network due to MT functionality restrictions",
    54: "modem not allowed - MT restricted to emergency calls only",
    55: "operation not allowed because of MT functionality restrictions",
    56: "fixed dial number only allowed",
    57: "temporarily out of service due to other MT usage",
    58: "language/alphabet not supported",
    59: "unexpected data value",
    60: "system failure",
    61: "data missing",
    62: "call barred",
    63: "message waiting indication subscription failure",
    100: "unknown",
    103: "illegal MS",
    106: "illegal ME",
    107: "GPRS services not allowed",
    108: "GPRS services and non-GPRS services not allowed",
    111: "PLMN not allowed",
    112: "location area not allowed",
    113: "roaming not allowed in this location area",
    114: "GPRS services not allowed in this PLMN",
    115: "no suitable cells in tracking area",
    122: "congestion",
    126: "insufficient resources",
    127: "missing or unknown APN",
    128: "unknown PDP address or PDP type",
    129: "user authentication failed",
    130: "activation rejected by GGSN, Serving GW or PDN GW",
    131: "activation rejected, unspecified",
    132: "service option not supported",
    133: "requested service option not subscribed",
    134: "service option temporarily out of order",
    148: "unspecified GPRS error",
    149: "PDP authentication failure",
    150: "invalid mobile class",
}


def cme_meaning(code: int) -> str:
    """The 27.007 §9.2 meaning of a +CME ERROR code; a code outside the table says so (reserved or vendor's)."""
    return CME_ERRORS.get(code, "not in 3GPP TS 27.007 §9.2 (reserved or manufacturer specific)")


_CME_TEXT_TO_CODE = {text.lower(): code for code, text in CME_ERRORS.items()}

_SIMPLE_FINALS = {
    "OK": "ok",
    "ERROR": "error",
    "NO CARRIER": "no_carrier",
    "BUSY": "busy",
    "NO ANSWER": "no_answer",
    "NO DIALTONE": "no_dialtone",
    "COMMAND NOT SUPPORT": "not_supported",
}
_FINAL_WITH_ARG = re.compile(r"^(\+CME ERROR|\+CMS ERROR|MODEM ERROR):\s*(\S.*)$")


@dataclass(frozen=True)
class Final:
    """A final result code: ``kind`` is ok, error, cme, cms, modem_error, connect, ..."""

    kind: str
    line: str
    code: int | None = None  # numeric +CME/+CMS/MODEM ERROR code when the modem gave one
    text: str = ""  # verbose text of the error, or its known meaning for a numeric code

    @property
    def ok(self) -> bool:
        return self.kind in ("ok", "connect")


def final_result(line: str) -> Final | None:
    """Classify ``line`` as a final result code, or None when it is not one."""
    s = line.strip()
    if s in _SIMPLE_FINALS:
        return Final(_SIMPLE_FINALS[s], s)
    if s == "CONNECT" or (s.startswith("CONNECT ") and len(s) > 8):
        return Final("connect", s, text=s[8:].strip())
    m = _FINAL_WITH_ARG.match(s)
    if m is None:
        return None
    kind = {"+CME ERROR": "cme", "+CMS ERROR": "cms", "MODEM ERROR": "modem_error"}[m.group(1)]
    arg = m.group(2).strip().strip('"').strip()
    if not arg:
        return None
    if arg.isdigit():
        code = int(arg)
        return Final(kind, s, code, CME_ERRORS.get(code, "") if kind == "cme" else "")
    code_from_text = _CME_TEXT_TO_CODE.get(arg.lower()) if kind == "cme" else None
    return Final(kind, s, code_from_text, arg)


# --------------------------------------------------------------------------------------
# unsolicited result codes

URC_PREFIXES: tuple[str, ...] = (
    "+CREG:", "+CGREG:", "+CEREG:", "+C5GREG:", "+CPIN:", "+CFUN:", "+CMTI:", "+CMT:", "+CDS:",
    "+CRING:", "+CLIP:", "+CGEV:", "+CUSD:", "+CTZV:", "+CTZE:", "+QIND:", "+QUSIM:", "+QSTAT:",
    "+QIURC:", "+CPSI:", "^HCSQ:", "^RSSI:", "^MODE:", "^SIMST:", "^SRVST:", "^SYSSTART", "^BOOT:",
    "^DSFLOWRPT:", "+SIMCARD:", "+PBREADY", "PB DONE", "SMS DONE", "+SIM READY", "+NITZ:",
    "+QNITZ:", "+GTSIMINS:", "+SIMREADY", "RDY", "RING", "*ATREADY:", "+STIN:",
)


def is_urc(line: str, expected: tuple[str, ...] = ()) -> bool:
    """True when ``line`` is a known URC and not one of the prefixes the pending command expects."""
    s = line.strip()
    if any(s.startswith(p) for p in expected if p):
        return False
    return any(s.startswith(p) for p in URC_PREFIXES)


# --------------------------------------------------------------------------------------
# framing

_PRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]")


def clean_line(raw: bytes) -> str:
    """Decode one line: strip CRs, drop control bytes and undecodable noise, trim spaces."""
    text = raw.decode("utf-8", errors="replace").replace("\ufffd", "")
    return _PRINTABLE.sub("", text).strip()


@dataclass
class Response:
    """What one command got back: information lines, the final code, URCs seen meanwhile."""

    command: str
    lines: list[str] = field(default_factory=list)
    final: Final | None = None
    urcs: list[str] = field(default_factory=list)
    echo: list[str] = field(default_factory=list)
    trailing: list[str] = field(default_factory=list)  # complete lines after the final code

    @property
    def ok(self) -> bool:
        return self.final is not None and self.final.ok


class ResponseReader:
    """Incremental framer for the reply to one command.

    Feed it the bytes as they arrive; ``done`` turns true at the first final result code
    after the echo. Lines are split on LF or CR (any number of CRs: SIMCom sends
    CR CR LF), echo is stripped by the ModemManager rule (anything before the first
    CR/LF-led line when the reply did not start with CR/LF, or a line equal to the
    command), and known URCs are routed to ``response.urcs`` even between information
    lines.
    """

    def __init__(self, command: str = "", expected: tuple[str, ...] = ()) -> None:
        self.response = Response(command)
        self.expected = expected
        self._buf = bytearray()
        self._first_byte_seen = False
        self._echo_pending = False
        self._first_segment = True
        self._got_line = False

    @property
    def done(self) -> bool:
        return self.response.final is not None

    @property
    def remainder(self) -> bytes:
        """Bytes after the last complete line (kept for the next exchange)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> bool:
        if not data:
            return self.done
        if not self._first_byte_seen:
            self._first_byte_seen = True
            self._echo_pending = data[:1] not in (b"\r", b"\n")
        self._buf += data
        while True:
            cut = _first_terminator(self._buf)
            if cut < 0:
                break
            raw = bytes(self._buf[:cut])
            del self._buf[: cut + 1]
            self._line(raw)
        return self.done

    def _line(self, raw: bytes) -> None:
        line = clean_line(raw)
        resp = self.response
        first, self._first_segment = self._first_segment, False
        if first and self._echo_pending and final_result(line) is None:
            # ModemManager: everything before the first CR/LF-led line is echo (or line noise)
            self._got_line = True
            if line:
                resp.echo.append(line)
            return
        if not line:
            return
        if self.done:
            resp.trailing.append(line)
            return
        cmd = resp.command.strip()
        if not self._got_line:
            self._got_line = True
            if cmd and line.upper() == cmd.upper():
                resp.echo.append(line)
                return
        elif cmd and not resp.lines and line.upper() == cmd.upper():
            resp.echo.append(line)
            return
        fin = final_result(line)
        if fin is not None:
            resp.final = fin
        elif is_urc(line, self.expected):
            resp.urcs.append(line)
        else:
            resp.lines.append(line)


def _first_terminator(buf: bytearray) -> int:
    cr = buf.find(b"\r")
    lf = buf.find(b"\n")
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


def parse_response(raw: bytes, command: str = "", expected: tuple[str, ...] = ()) -> Response:
    """Frame a whole captured exchange at once (see :class:`ResponseReader`)."""
    reader = ResponseReader(command, expected)
    reader.feed(raw)
    if reader.remainder:
        reader._line(reader.remainder)  # a last line without its terminator
    return reader.response


def split_lines(raw: bytes) -> list[str]:
    """Every non-empty line in ``raw``, CRs and noise stripped (for URC streams)."""
    return [line for line in (clean_line(p) for p in re.split(rb"[\r\n]+", raw)) if line]


# --------------------------------------------------------------------------------------
# small helpers

def _strip_prefix(line: str, prefix: str) -> str:
    s = line.strip()
    if prefix and s.upper().startswith(prefix.upper()):
        s = s[len(prefix):]
    return s.strip()


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1].strip()
    return s.strip('"').strip()


def _fields(body: str) -> list[str]:
    """Comma-separated fields, quotes honoured (a comma inside quotes does not split)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in body:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _int(s: str, line: str, what: str) -> int:
    v = _unquote(s)
    if not v or not (v.isascii() and (v.isdigit() or (v[0] == "-" and v[1:].isdigit()))):
        raise ProtocolError(f"{what}: expected an integer, got {s!r}", line.encode(errors="replace"))
    return int(v)


def _opt_int(s: str) -> int | None:
    v = _unquote(s)
    if v and v.isascii() and (v.isdigit() or (v[0] == "-" and v[1:].isdigit())):
        return int(v)
    return None


def _hex(s: str) -> int | None:
    v = _unquote(s).replace(" ", "")
    if v.lower().startswith("0x"):
        v = v[2:]
    if not v or not v.isascii() or any(c not in "0123456789abcdefABCDEF" for c in v):
        return None
    return int(v, 16)


def _raw(line: str) -> bytes:
    return line.encode("utf-8", errors="replace")


def find_line(lines: list[str], prefix: str) -> str:
    """The first line starting with ``prefix`` (case-insensitive), else ProtocolError."""
    for line in lines:
        if line.strip().upper().startswith(prefix.upper()):
            return line
    raise ProtocolError(f"no {prefix!r} line in reply", _raw("\n".join(lines)))


# --------------------------------------------------------------------------------------
# signal: +CSQ, +CESQ

@dataclass(frozen=True)
class Csq:
    rssi: int | None  # 0..31, None for 99 (not known)
    ber: int | None
    rssi_dbm: int | None


def csq_to_dbm(rssi: int) -> int | None:
    """27.007 +CSQ rssi index to dBm: 0 -> -113, 31 -> -51, 99 -> None."""
    if rssi == 99 or not 0 <= rssi <= 31:
        return None
    return -113 + 2 * rssi


def parse_csq(line: str) -> Csq:
    body = _strip_prefix(line, "+CSQ:")
    parts = _fields(body)
    if len(parts) != 2:
        raise ProtocolError("+CSQ: expected <rssi>,<ber>", _raw(line))
    rssi = _int(parts[0], line, "+CSQ rssi")
    ber = _int(parts[1], line, "+CSQ ber")
    if not (0 <= rssi <= 31 or rssi == 99):
        raise ProtocolError(f"+CSQ: rssi {rssi} out of range", _raw(line))
    return Csq(None if rssi == 99 else rssi, None if ber == 99 else ber, csq_to_dbm(rssi))


@dataclass(frozen=True)
class LteSignal:
    """Signal quality beyond +CSQ: LTE (RSRP, RSRQ, SINR) or, on 3G (WCDMA/UMTS), RSCP and Ec/Io.
    Converted values (None when unknown or unverified) plus the raw text."""

    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    rssi_dbm: float | None = None
    technology: str | None = None
    raw: str = ""
    rscp_dbm: float | None = None  # 3G: received signal code power (CPICH)
    ecio_db: float | None = None  # 3G: Ec/Io (27.007 calls it Ec/No)


def parse_cesq(line: str) -> LteSignal:
    """``+CESQ: rxlev,ber,rscp,ecno,rsrq,rsrp`` (27.007 §8.69; ModemManager conversions): RSCP dBm =
    level - 121 (0..96), Ec/No dB = level * 0.5 - 24.5 (0..49), RSRP dBm = level - 141 (0..97), RSRQ dB =
    level * 0.5 - 20 (0..34); 255 (99 for rxlev) = not known. A 3G cell fills RSCP and Ec/No, an LTE cell
    RSRP and RSRQ."""
    parts = _fields(_strip_prefix(line, "+CESQ:"))
    if len(parts) != 6:
        raise ProtocolError("+CESQ: expected 6 fields", _raw(line))
    rxlev, _ber, rscp, ecno, rsrq, rsrp = (_int(p, line, "+CESQ") for p in parts)
    lte, umts = 0 <= rsrp <= 97, 0 <= rscp <= 96
    return LteSignal(
        rsrp_dbm=float(rsrp - 141) if lte else None,
        rsrq_db=rsrq * 0.5 - 20 if 0 <= rsrq <= 34 else None,
        rssi_dbm=float(rxlev - 111) if 0 <= rxlev <= 63 else None,
        technology="lte" if lte else "umts" if umts else None,
        raw=line.strip(),
        rscp_dbm=float(rscp - 121) if umts else None,
        ecio_db=ecno * 0.5 - 24.5 if 0 <= ecno <= 49 else None,
    )


def parse_qcsq(line: str) -> LteSignal:
    """Quectel ``+QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>``; SINR 0..250 in 1/5 dB - 20."""
    parts = [_unquote(p) for p in _fields(_strip_prefix(line, "+QCSQ:"))]
    if not parts or not parts[0]:
        raise ProtocolError("+QCSQ: no system mode", _raw(line))
    mode = parts[0].upper()
    if mode == "NOSERVICE":
        return LteSignal(technology=None, raw=line.strip())
    if mode != "LTE" or len(parts) < 5:
        return LteSignal(technology=mode.lower(), raw=line.strip())
    rssi, rsrp, sinr, rsrq = (_opt_int(p) for p in parts[1:5])
    return LteSignal(
        rssi_dbm=float(rssi) if rssi is not None else None,
        rsrp_dbm=float(rsrp) if rsrp is not None else None,
        sinr_db=sinr / 5 - 20 if sinr is not None and 0 <= sinr <= 250 else None,
        rsrq_db=float(rsrq) if rsrq is not None else None,
        technology="lte",
        raw=line.strip(),
    )


def parse_hcsq(line: str) -> LteSignal:
    """Huawei ``^HCSQ: "LTE",rssi,rsrp,sinr,rsrq`` or ``^HCSQ: "WCDMA",rssi,rscp,ecio`` (ModemManager huawei
    plugin conversions: RSSI and RSCP dBm = -121 + v (v <= 96), Ec/Io dB = -32.5 + v / 2 (v <= 65))."""
    parts = [_unquote(p) for p in _fields(_strip_prefix(line, "^HCSQ:"))]
    if not parts or not parts[0]:
        raise ProtocolError("^HCSQ: no system mode", _raw(line))
    mode = parts[0].upper()
    vals = [_opt_int(p) for p in parts[1:]]
    if mode == "NOSERVICE":
        return LteSignal(raw=line.strip())

    def pick(i: int, limit: int) -> int | None:
        v = vals[i] if i < len(vals) else None
        return v if v is not None and 0 <= v <= limit else None

    rssi = pick(0, 96)
    if mode == "WCDMA":
        rscp, ecio = pick(1, 96), pick(2, 65)
        return LteSignal(rssi_dbm=float(-121 + rssi) if rssi is not None else None, technology="wcdma",
                         raw=line.strip(), rscp_dbm=float(-121 + rscp) if rscp is not None else None,
                         ecio_db=-32.5 + ecio / 2 if ecio is not None else None)
    if mode != "LTE":
        return LteSignal(rssi_dbm=float(-121 + rssi) if rssi is not None else None,
                         technology=mode.lower(), raw=line.strip())
    rsrp, sinr, rsrq = pick(1, 97), pick(2, 251), pick(3, 34)
    return LteSignal(
        rssi_dbm=float(-121 + rssi) if rssi is not None else None,
        rsrp_dbm=float(-141 + rsrp) if rsrp is not None else None,
        sinr_db=round(-20.2 + sinr / 5, 1) if sinr is not None else None,
        rsrq_db=-20 + rsrq / 2 if rsrq is not None else None,
        technology="lte",
        raw=line.strip(),
    )


# --------------------------------------------------------------------------------------
# identity: IMEI, IMSI, ICCID, +CRSM, model/firmware

_ICCID_PREFIXES = ("+QCCID:", "+ICCID:", "^ICCID:", "+CCID:", "ICCID:", "+CICCID:")


def parse_iccid(raw: str) -> str:
    """ICCID per ModemManager ``mm_3gpp_parse_iccid``.

    Leading spaces/quotes skipped, stop at a closing quote; 19 or 20 characters; must start
    with 89, or with 98 when nibble-swapped (then exactly 20 characters, swapped back);
    a trailing F (BCD padding) is dropped; hex letters A-F accepted (Chinese operators)
    and upper-cased.
    """
    s = raw.strip()
    for p in _ICCID_PREFIXES:
        if s.upper().startswith(p):
            s = s[len(p):]
            break
    s = s.lstrip(' "')
    if '"' in s:
        s = s[: s.index('"')]
    s = s.strip().upper()
    if len(s) not in (19, 20) or not s.isascii() or any(c not in "0123456789ABCDEF" for c in s):
        raise ProtocolError(f"ICCID: expected 19-20 hex digits, got {s!r}", _raw(raw))
    if s.startswith("98"):
        if len(s) != 20:
            raise ProtocolError("ICCID: swapped ICCID must be 20 digits", _raw(raw))
        s = "".join(s[i + 1] + s[i] for i in range(0, 20, 2))
    elif not s.startswith("89"):
        raise ProtocolError("ICCID: does not start with 89", _raw(raw))
    if s.endswith("F"):
        s = s[:-1]
    if not s[:6].isdigit():
        raise ProtocolError("ICCID: issuer part (first 6) must be digits", _raw(raw))
    return s


@dataclass(frozen=True)
class Crsm:
    sw1: int
    sw2: int
    data: str

    @property
    def ok(self) -> bool:
        return self.sw1 in (0x90, 0x91, 0x92, 0x9F)


def parse_crsm(line: str) -> Crsm:
    """``+CRSM: <sw1>,<sw2>[,<hex>]``, spaces after commas and quotes tolerated."""
    parts = _fields(_strip_prefix(line, "+CRSM:"))
    if len(parts) < 2:
        raise ProtocolError("+CRSM: expected <sw1>,<sw2>", _raw(line))
    data = _unquote(parts[2]) if len(parts) > 2 else ""
    return Crsm(_int(parts[0], line, "+CRSM sw1"), _int(parts[1], line, "+CRSM sw2"), data.upper())


def parse_imei(lines: list[str] | str) -> str:
    """IMEI from ``AT+CGSN`` (bare line) or ``+CGSN: "<imei>"`` (Fibocom FM150)."""
    for line in [lines] if isinstance(lines, str) else lines:
        v = _unquote(_strip_prefix(_strip_prefix(line, "+CGSN:"), "+GSN:"))
        if 14 <= len(v) <= 17 and v.isascii() and v.isdigit():
            return v
    raise ProtocolError("IMEI: no 14-17 digit line", _raw(str(lines)))


def parse_imsi(lines: list[str] | str) -> str:
    """IMSI from ``AT+CIMI`` (bare line, 6..15 digits) or ``+CIMI: <imsi>``."""
    for line in [lines] if isinstance(lines, str) else lines:
        v = _unquote(_strip_prefix(line, "+CIMI:"))
        if 6 <= len(v) <= 15 and v.isascii() and v.isdigit():
            return v
    raise ProtocolError("IMSI: no 6-15 digit line", _raw(str(lines)))


@dataclass(frozen=True)
class Identity:
    manufacturer: str | None = None
    model: str | None = None
    revision: str | None = None


def parse_ati(lines: list[str]) -> Identity:
    """``ATI``: Quectel/SIMCom/Huawei print ``Manufacturer:``/``Model:``/``Revision:`` lines,
    some Quectel firmwares print bare lines (``Quectel``, ``EC25``, ``Revision: ...``)."""
    found: dict[str, str] = {}
    bare: list[str] = []
    for line in lines:
        key, sep, value = line.partition(":")
        k = key.strip().lower()
        if sep and k in ("manufacturer", "model", "revision"):
            found[k] = value.strip()
        elif not sep:
            bare.append(line.strip())
    if "manufacturer" not in found and bare:
        found["manufacturer"] = bare[0]
    if "model" not in found and len(bare) > 1:
        found["model"] = bare[1]
    return Identity(found.get("manufacturer") or None, found.get("model") or None, found.get("revision") or None)


def parse_text_reply(lines: list[str], prefix: str) -> str | None:
    """A one-line text reply (``AT+CGMM``, ``AT+CGMR``) with an optional ``+CGMM:`` prefix."""
    for line in lines:
        v = _unquote(_strip_prefix(line, prefix))
        if v:
            return v
    return None


# --------------------------------------------------------------------------------------
# operator: MCC/MNC, carrier, +COPS

CARRIERS_460: dict[str, str] = {
    "00": "China Mobile", "02": "China Mobile", "04": "China Mobile", "07": "China Mobile",
    "08": "China Mobile", "01": "China Unicom", "06": "China Unicom", "09": "China Unicom",
    "03": "China Telecom", "05": "China Telecom", "11": "China Telecom", "15": "China Broadnet",
    "20": "China Tietong",
}


def parse_plmn(plmn: str) -> tuple[str, str]:
    """``"46000"`` -> ("460", "00"); ``"342600"`` -> ("342", "600") (ModemManager rules)."""
    s = _unquote(plmn).replace(" ", "")
    if len(s) not in (5, 6) or not s.isascii() or not s.isdigit() or s[:3] == "000":
        raise ProtocolError(f"PLMN: expected 5-6 digits, got {plmn!r}", _raw(plmn))
    return s[:3], s[3:]


def plmn_from_imsi(imsi: str) -> tuple[str, str] | None:
    """MCC/MNC of an IMSI where the MNC length is certain (MCC 460: 2 digits), else None."""
    if len(imsi) < 6 or not imsi.isdigit():
        return None
    if imsi[:3] == "460":
        return "460", imsi[3:5]
    return None


def carrier_name(mcc: str | None, mnc: str | None) -> str | None:
    if mcc == "460" and mnc is not None:
        return CARRIERS_460.get(mnc)
    return None


ACCESS_TECH: dict[int, str] = {
    0: "gsm", 1: "gsm_compact", 2: "umts", 3: "edge", 4: "hsdpa", 5: "hsupa", 6: "hspa",
    7: "lte", 8: "ec_gsm_iot", 9: "nb_iot", 10: "lte_5gcn", 11: "nr_5gcn", 12: "ng_ran",
    13: "en_dc",
}


def decode_ucs2_hex(s: str) -> str | None:
    """``"0056006500720069007A006F006E"`` -> "Verizon"; None when it is not UCS2 hex."""
    if len(s) < 8 or len(s) % 4 or not s.isascii() or any(c not in "0123456789abcdefABCDEF" for c in s):
        return None
    chars = [chr(int(s[i : i + 4], 16)) for i in range(0, len(s), 4)]
    if any(not c.isprintable() or 0xD800 <= ord(c) <= 0xDFFF for c in chars):
        return None
    return "".join(chars)


@dataclass(frozen=True)
class Cops:
    mode: int
    format: int | None = None
    oper: str | None = None  # as sent (after quotes removed)
    name: str | None = None  # long/short name, UCS2 decoded, runs of spaces collapsed
    mcc: str | None = None
    mnc: str | None = None
    act: int | None = None

    @property
    def technology(self) -> str | None:
        return ACCESS_TECH.get(self.act) if self.act is not None else None


def parse_cops(line: str, *, ucs2: bool | None = None) -> Cops:
    """``+COPS: <mode>[,<format>,"<oper>"[,<AcT>]]`` (27.007 §7.3).

    ``ucs2``: True when AT+CSCS="UCS2" is set, None to detect a UCS2 hex name."""
    parts = _fields(_strip_prefix(line, "+COPS:"))
    mode = _int(parts[0], line, "+COPS mode")
    if len(parts) < 3 or not _unquote(parts[2]):
        return Cops(mode)
    fmt = _int(parts[1], line, "+COPS format")
    oper = _unquote(parts[2])
    act = _opt_int(parts[3]) if len(parts) > 3 else None
    if fmt == 2:
        if ucs2 is not False and len(oper) > 6:  # UCS2-hex digits are all digits too
            oper = decode_ucs2_hex(oper) or oper
        mcc, mnc = parse_plmn(oper)
        return Cops(mode, fmt, oper, None, mcc, mnc, act)
    name = oper
    if ucs2 is not False:
        decoded = decode_ucs2_hex(oper)
        if decoded is not None:
            name = decoded
    return Cops(mode, fmt, oper, " ".join(name.split()), None, None, act)


# --------------------------------------------------------------------------------------
# registration: +CREG / +CGREG / +CEREG / +C5GREG

REG_STATES: dict[int, str] = {
    0: "not_registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
    6: "home_sms_only", 7: "roaming_sms_only", 8: "emergency_only", 9: "home_csfb_not_preferred",
    10: "roaming_csfb_not_preferred", 11: "attached_rlos",
}
REGISTERED = frozenset({1, 5, 6, 7, 9, 10})
_REG_RE = re.compile(r"^\s*\+(C|CG|CE|C5G)REG:\s*(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Registration:
    kind: str  # CREG, CGREG, CEREG, C5GREG
    stat: int
    n: int | None = None  # only in the read (solicited) form
    lac: int | None = None  # LAC or TAC
    cell_id: int | None = None
    act: int | None = None

    @property
    def state(self) -> str:
        return REG_STATES.get(self.stat, "unknown")

    @property
    def registered(self) -> bool:
        return self.stat in REGISTERED

    @property
    def technology(self) -> str | None:
        return ACCESS_TECH.get(self.act) if self.act is not None else None


def _is_stat(f: str) -> bool:
    return bool(f) and '"' not in f and f.isascii() and f.isdigit() and len(f) <= 3 and int(f) <= 11


def parse_creg(line: str, *, solicited: bool) -> Registration:
    """Parse a registration line, read form (``solicited=True``) or URC.

    The read form carries ``<n>`` first; the URC does not. Firmware also sends read-like
    lines as URCs (``+CREG: 2,5,"0502","0404736D"``) and URC-like lines with an AcT
    (``+CREG: 1,0001,0010,0``), so beyond context the field count and shape decide:
    a short unquoted second field followed by LAC and CI (not by a short AcT) means
    ``<n>,<stat>``. Novatel's extra field (``+CEREG: 2,1, 1F00, 20 ,79D903 ,7``) and
    Iridium's zero padding (``+CREG:002,001,...``) are handled (ModemManager
    ``src/tests/test-modem-helpers.c``).
    """
    m = _REG_RE.match(line)
    if m is None:
        raise ProtocolError("not a registration line", _raw(line))
    kind = f"{m.group(1).upper()}REG"
    raw_fields = _fields(m.group(2))
    f = [p.strip() for p in raw_fields]
    plain = [_unquote(p) for p in f]
    if not plain or not plain[0]:
        raise ProtocolError(f"{kind}: no fields", _raw(line))
    n: int | None = None
    if len(f) >= 2 and _is_stat(f[1]) and (solicited or len(f) == 2 or not _urc_shape(plain)):
        # <n>,<stat>,... -- unless it is a URC "<stat>,<lac>,<ci>,<act>" with a short <lac>.
        n = _int(f[0], line, f"{kind} n")
        plain = plain[1:]
    stat = _int(plain[0], line, f"{kind} stat")
    rest = [p.replace(" ", "") for p in plain[1:]]
    # Novatel: <lac>,<junk>,<ci>,<act>
    if len(rest) == 4 and len(rest[1]) <= 2 and len(rest[2]) >= 4 and _opt_int(rest[3]) is not None:
        rest = [rest[0], rest[2], rest[3]]
    lac = _hex(rest[0]) if len(rest) > 0 else None
    ci = _hex(rest[1]) if len(rest) > 1 else None
    act = None
    if len(rest) > 2:
        a = _opt_int(rest[2])
        act = a if a is not None and a in ACCESS_TECH else None
    return Registration(kind, stat, n, lac, ci, act)


def _urc_shape(plain: list[str]) -> bool:
    """URC ``<stat>,<lac>,<ci>,<act>``: a LAC of 3+ chars in field 2 and a short AcT last."""
    return (
        len(plain) == 4
        and len(plain[1].replace(" ", "")) >= 3
        and plain[3].isdigit()
        and len(plain[3]) <= 2
    )


def best_registration(regs: list[Registration]) -> Registration | None:
    """Pick the line that decides "online": C5GREG/CEREG first, then CGREG, CREG last.

    A registered line wins over an unregistered one (a data-only SIM keeps CREG at 0)."""
    order = {"C5GREG": 0, "CEREG": 1, "CGREG": 2, "CREG": 3}
    ranked = sorted(regs, key=lambda r: (not r.registered, order.get(r.kind, 9)))
    return ranked[0] if ranked else None


# --------------------------------------------------------------------------------------
# SIM state and radio

_CPIN_STATES: list[tuple[str, str]] = [  # longer tokens first
    ("PH-NET PUK", "ph_net_puk"), ("PH-NET PIN", "ph_net_pin"), ("PH-SIM PIN", "ph_sim_pin"),
    ("SIM PUK2", "puk2"), ("SIM PIN2", "pin2"), ("SIM PUK", "puk"), ("SIM PIN", "pin"),
    ("NOT INSERTED", "absent"), ("SIM REMOVED", "absent"), ("NOT READY", "not_ready"),
    ("READY", "ready"),
]

# What a +CME ERROR answer to AT+CPIN? says about the SIM (27.007 §9.2). Any other code says nothing about
# the SIM itself: the state is "unknown" and the code is kept (Modem.sim_query), never read as a failure.
SIM_FROM_CME: dict[int, str] = {
    5: "ph_sim_pin", 10: "absent", 11: "pin", 12: "puk", 13: "error", 14: "not_ready", 15: "wrong",
    17: "pin2", 18: "puk2", 40: "ph_net_pin", 41: "ph_net_puk",
}


def parse_cpin(line: str) -> str:
    """``+CPIN: READY`` -> "ready"; quoted values accepted; SIM PUK2 tested before SIM PUK."""
    v = _unquote(_strip_prefix(line, "+CPIN:")).upper()
    v = " ".join(v.split())
    for token, state in _CPIN_STATES:
        if v.startswith(token):
            return state
    raise ProtocolError(f"+CPIN: unknown state {v!r}", _raw(line))


def parse_cfun(line: str) -> int:
    parts = _fields(_strip_prefix(line, "+CFUN:"))
    return _int(parts[0], line, "+CFUN fun")


def parse_qinistat(line: str) -> int:
    return _int(_fields(_strip_prefix(line, "+QINISTAT:"))[0], line, "+QINISTAT")


# --------------------------------------------------------------------------------------
# serving cell: Quectel QENG, SIMCom CPSI, Fibocom GTCCINFO

@dataclass(frozen=True)
class ServingCell:
    technology: str | None = None  # lte, nr5g_sa, nr5g_nsa, wcdma, gsm
    state: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    cell_id: int | None = None
    tac: int | None = None
    pci: int | None = None
    earfcn: int | None = None
    band: str | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    rssi_dbm: float | None = None
    sinr_raw: str | None = None  # unit not verified for this dialect: kept as sent
    sinr_db: float | None = None
    raw: tuple[str, ...] = ()
    rscp_dbm: float | None = None  # 3G only
    ecio_db: float | None = None  # 3G only


def _na(v: str) -> str | None:
    v = _unquote(v)
    return None if v in ("", "-", "--") else v


def _num(v: str) -> float | None:
    s = _na(v)
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def parse_qeng_servingcell(lines: list[str]) -> ServingCell:
    """Quectel ``AT+QENG="servingcell"`` (field order as in QModem's quectel.sh).

    LTE: ``+QENG: "servingcell",<state>,"LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,
    <band>,<UL_bw>,<DL_bw>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,<srxlev>``; EN-DC splits into
    ``"servingcell",<state>`` then ``"LTE",...`` and ``"NR5G-NSA",...`` lines.
    QENG SINR's unit differs between firmwares, so it is kept raw."""
    state: str | None = None
    raw = tuple(line.strip() for line in lines)
    for line in lines:
        body = _strip_prefix(line, "+QENG:")
        parts = _fields(body)
        if not parts:
            continue
        head = _unquote(parts[0]).upper()
        if head == "SERVINGCELL":
            if len(parts) > 1:
                state = _unquote(parts[1]).upper() or None
            parts = parts[2:]
            if not parts:
                continue
            head = _unquote(parts[0]).upper()
        p = parts[1:]
        if head == "LTE" and len(p) >= 14:
            # is_tdd, MCC, MNC, cellID, PCID, earfcn, band, UL_bw, DL_bw, TAC, RSRP, RSRQ, RSSI, SINR[, ...]
            return ServingCell(
                technology="lte", state=state, mcc=_na(p[1]), mnc=_na(p[2]),
                cell_id=_hex(p[3]) if _na(p[3]) else None, tac=_hex(p[9]) if _na(p[9]) else None,
                pci=_opt_int(p[4]), earfcn=_opt_int(p[5]), band=_na(p[6]),
                rsrp_dbm=_num(p[10]), rsrq_db=_num(p[11]), rssi_dbm=_num(p[12]),
                sinr_raw=_na(p[13]), raw=raw,
            )
        if head == "NR5G-SA" and len(p) >= 12:
            return ServingCell(
                "nr5g_sa", state, _na(p[1]), _na(p[2]), _hex(p[3]) if _na(p[3]) else None,
                _hex(p[5]) if _na(p[5]) else None, _opt_int(p[4]), _opt_int(p[6]), _na(p[7]),
                _num(p[9]), _num(p[10]), None, _na(p[11]), None, raw,
            )
        if head == "WCDMA" and len(p) >= 10:
            # MCC, MNC, LAC, cellID, uarfcn, PSC, RAC, RSCP (dBm), ecio (dB), ...
            return ServingCell("wcdma", state, _na(p[0]), _na(p[1]), _hex(p[3]) if _na(p[3]) else None,
                               _hex(p[2]) if _na(p[2]) else None, raw=raw, rscp_dbm=_num(p[7]), ecio_db=_num(p[8]))
        if head in ("WCDMA", "GSM") and len(p) >= 4:
            return ServingCell(head.lower(), state, _na(p[0]), _na(p[1]), None, None, raw=raw)
    if state is not None:
        return ServingCell(None, state, raw=raw)
    raise ProtocolError("+QENG: no servingcell line", _raw("\n".join(lines)))


def parse_cpsi(line: str) -> ServingCell:
    """SIMCom ``+CPSI: LTE,<op_mode>,<MCC>-<MNC>,<TAC 0x..>,<SCellID dec>,<PCI>,EUTRAN-BAND<n>,
    <earfcn>,<dlbw>,<ulbw>,<RSRQ>,<RSRP>,<RSSI>,<RSSNR>``.

    Current firmware reports RSRQ/RSRP/RSSI in tenths of dB (negative); the older
    manual example has small positive indices (255 unknown): decided by sign.

    WCDMA: ``+CPSI: WCDMA,<op_mode>,<MCC>-<MNC>,<LAC 0x..>,<CellID dec>,<band>,<PSC>,<UARFCN>,<SSC>,
    <EC/IO>,<RSCP>,<Qual>,<RxLev>,<TXPWR>``. SIMCom prints Ec/Io and RSCP as magnitudes in dB / dBm
    (``4.0,69`` for -4.0 dB, -69 dBm; both are negative quantities); a value already negative is taken
    as it is. The raw line is kept, as for every dialect."""
    parts = _fields(_strip_prefix(line, "+CPSI:"))
    if not parts or not parts[0]:
        raise ProtocolError("+CPSI: empty", _raw(line))
    sysmode = parts[0].strip().upper()
    state = parts[1].strip() if len(parts) > 1 else None
    if sysmode in ("NO SERVICE", "NOSERVICE"):
        return ServingCell(None, state, raw=(line.strip(),))
    mcc = mnc = None
    if len(parts) > 2 and "-" in parts[2]:
        mcc, _, mnc = parts[2].partition("-")
        mcc, mnc = mcc.strip() or None, mnc.strip() or None
    if sysmode == "LTE" and len(parts) >= 14:
        rsrq, rsrp, rssi = _opt_int(parts[10]), _opt_int(parts[11]), _opt_int(parts[12])
        if rsrp is not None and rsrp < 0:  # tenths of dB
            rsrq_db = rsrq / 10 if rsrq is not None else None
            rsrp_dbm = rsrp / 10
            rssi_dbm = rssi / 10 if rssi is not None else None
        else:  # old manual indices: 36.133 RSRP idx-141, RSRQ idx/2-20, 255 unknown
            rsrq_db = rsrq * 0.5 - 20 if rsrq is not None and 0 <= rsrq <= 34 else None
            rsrp_dbm = float(rsrp - 141) if rsrp is not None and 0 <= rsrp <= 97 else None
            rssi_dbm = None
        band = parts[6].strip().upper().removeprefix("EUTRAN-")
        return ServingCell(
            "lte", state, mcc, mnc, _opt_int(parts[4]), _hex(parts[3]), _opt_int(parts[5]),
            _opt_int(parts[7]), band or None, rsrp_dbm, rsrq_db, rssi_dbm, _na(parts[13]), None,
            (line.strip(),),
        )
    if sysmode == "WCDMA" and len(parts) >= 5:
        ecio, rscp = (_num(parts[i]) if len(parts) > i else None for i in (9, 10))
        return ServingCell("wcdma", state, mcc, mnc, _opt_int(parts[4]), _hex(parts[3]), raw=(line.strip(),),
                           rscp_dbm=-abs(rscp) if rscp is not None and 0 < abs(rscp) <= 140 else None,
                           ecio_db=-abs(ecio) if ecio is not None and abs(ecio) <= 50 else None)
    return ServingCell(sysmode.lower(), state, mcc, mnc, raw=(line.strip(),))


def parse_gtccinfo(lines: list[str]) -> ServingCell:
    """Fibocom ``AT+GTCCINFO?``: labelled block; the line after ``... service cell:`` is
    ``<IsServiceCell>,<rat>,<mcc>,<mnc>,<tac>,<cellid>,<earfcn>,<pci>,<band>,<bandwidth>,
    <rssnr>,<rxlev>,<rsrp>,<rsrq>`` (hex TAC and cell id; 36.133 indices)."""
    raw = tuple(line.strip() for line in lines)
    take = False
    for line in lines:
        s = line.strip()
        low = s.lower()
        if low.endswith("service cell:"):
            take = True
            continue
        if take:
            p = _fields(s)
            if len(p) < 14:
                raise ProtocolError("+GTCCINFO: short service cell line", _raw(s))
            rat = _opt_int(p[1])
            tech = {2: "wcdma", 4: "lte", 9: "nr5g"}.get(rat) if rat is not None else None
            rsrp_i, rsrq_i = _opt_int(p[12]), _opt_int(p[13])
            base = 157 if rat == 9 else 141
            return ServingCell(
                tech, None, _na(p[2]), _na(p[3]), _hex(p[5]), _hex(p[4]), None, None, _na(p[8]),
                float(rsrp_i - base) if rsrp_i is not None and 0 < rsrp_i <= 127 else None,
                rsrq_i * 0.5 - 20 if rsrq_i is not None and tech == "lte" and 0 <= rsrq_i <= 34 else None,
                None, _na(p[10]), None, raw,
            )
    raise ProtocolError("+GTCCINFO: no service cell", _raw("\n".join(lines)))


# --------------------------------------------------------------------------------------
# data counters

@dataclass(frozen=True)
class Counters:
    bytes_sent: int
    bytes_received: int


def parse_qgdcnt(line: str) -> Counters:
    """Quectel ``+QGDCNT: <bytes_sent>,<bytes_recv>`` (sent first, per the Quectel manual)."""
    parts = _fields(_strip_prefix(line, "+QGDCNT:"))
    if len(parts) != 2:
        raise ProtocolError("+QGDCNT: expected <sent>,<recv>", _raw(line))
    sent, recv = _int(parts[0], line, "+QGDCNT sent"), _int(parts[1], line, "+QGDCNT recv")
    if sent < 0 or recv < 0:
        raise ProtocolError("+QGDCNT: negative counter", _raw(line))
    return Counters(sent, recv)
