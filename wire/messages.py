"""Message schemas (msgspec structs) with a protocol version field ``v``.

Field names on the wire are one or two letters (``rename``) and default values are
omitted, because the telemetry must cost under 5 MB a month on a cellular SIM. The
Python attribute names are the readable ones.
"""

from __future__ import annotations

import msgspec

from . import PROTOCOL_VERSION

# Check states: ok / fault / unknown map onto intact / not intact / no data.
OK, FAULT, UNKNOWN = 0, 1, 2
STATE_NAMES = {OK: "ok", FAULT: "fault", UNKNOWN: "unknown"}
STATE_CODES = {v: k for k, v in STATE_NAMES.items()}

# Clock quality of a sample's timestamp.
CLOCK_CHECKED = 0  # clock was checked (NTP or server time) when the sample was taken
CLOCK_CORRECTED = 1  # taken before the check, corrected afterwards from the boot-time offset
CLOCK_UNVERIFIED = 2  # never checked (the boot ended before the offset became known)


class Check(msgspec.Struct, array_like=True, omit_defaults=True):
    """One peripheral or storage check: state code and reason."""

    state: int
    reason: str = ""


class FsStat(msgspec.Struct, array_like=True):
    mount: str
    size_mb: int
    used_mb: int
    writable: bool


class Sample(msgspec.Struct, omit_defaults=True, rename={
    "seq": "q", "ts": "t", "interval": "i", "clock": "k", "connected": "c", "rtt_ms": "r",
    "rtt_var_ms": "j", "retrans": "x", "segs_out": "o", "cpu": "u", "load1": "l", "mem_used_mb": "m",
    "mem_avail_mb": "a", "swap_used_mb": "w", "fs": "f", "uptime_s": "b", "checks": "h", "signal_dbm": "g",
    "csq": "s", "lite": "z", "cell_id": "n", "tac": "y", "data_bytes": "d", "rscp_dbm": "p", "ecio_db": "e",
}):
    """One health sample. ``ts`` is epoch seconds (UTC); it covers [ts, ts + interval)."""

    seq: int
    ts: int
    interval: int = 60
    clock: int = CLOCK_CHECKED
    connected: bool = True
    rtt_ms: int | None = None
    rtt_var_ms: int | None = None
    retrans: int | None = None
    segs_out: int | None = None
    cpu: float | None = None
    load1: float | None = None
    mem_used_mb: int | None = None
    mem_avail_mb: int | None = None
    swap_used_mb: int | None = None
    fs: list[FsStat] = []
    uptime_s: int | None = None
    checks: dict[str, Check] = {}
    signal_dbm: int | None = None
    csq: int | None = None
    lite: bool = False  # raw detail dropped by the outbox cap; counting fields kept
    cell_id: int | None = None  # serving cell (for correlated-outage attribution)
    tac: int | None = None
    # SIM data counter: bytes sent + received as the modem (or the configured interface) counts them,
    # cumulative since that counter's reset; the server sums the increases per month.
    data_bytes: int | None = None
    # 3G (WCDMA/UMTS) cell only: RSCP dBm and Ec/Io dB, whole numbers (a msgpack int costs 1-2 bytes, a float 9;
    # the diag output keeps the modem's 0.5 dB steps). Absent on LTE: omitted, no bytes.
    rscp_dbm: int | None = None
    ecio_db: int | None = None


class Event(msgspec.Struct, omit_defaults=True, rename={"seq": "q", "ts": "t", "kind": "e", "data": "d"}):
    """Something that happened, reported once: inventory, SIM change, storage trouble..."""

    seq: int
    ts: int
    kind: str
    data: dict[str, object] = {}


class Batch(msgspec.Struct, omit_defaults=True, rename={"epoch": "e", "samples": "S", "events": "E"}):
    """Telemetry batch on ``pf/<sn>/t``. ``epoch`` names the outbox generation: (sn, epoch, seq) is unique."""

    sn: str
    epoch: int
    samples: list[Sample] = []
    events: list[Event] = []
    v: int = PROTOCOL_VERSION


class Ack(msgspec.Struct, omit_defaults=True, rename={"epoch": "e", "ranges": "k", "rejected": "x", "time_ms": "T"}):
    """Server -> terminal: these seq ranges are committed (or rejected for good); and the server's time."""

    epoch: int
    time_ms: int
    ranges: list[tuple[int, int]] = []
    rejected: list[tuple[int, int, str]] = []
    v: int = PROTOCOL_VERSION


class State(msgspec.Struct, omit_defaults=True):
    """Retained on ``pf/<sn>/s``; the last will says ``online=False, reason='lost'``."""

    online: bool
    ts: int = 0
    reason: str = ""
    version: str = ""
    v: int = PROTOCOL_VERSION


# Certificate renewal over the air (agent/renew.py, server/renewal.py, docs/decisions/026-certificate-renewal.md):
# the terminal asks with an event in its telemetry (durable in its outbox until the server commits it) ...
CERT_REQUEST = "cert_request"  # data: {"csr": PEM of the request for the key made on the terminal}
CERT_SWITCHED = "cert_switched"  # data: {"serial": hex serial of the renewed certificate it now connects with}


class Certificate(msgspec.Struct, omit_defaults=True):
    """... and the server answers on ``pf/<sn>/x``: the signed certificate for that request (``cert``, PEM), or the
    acknowledgement that the switch to certificate ``done`` (hex serial) is recorded (the old one is then revoked)."""

    cert: str = ""
    done: str = ""
    v: int = PROTOCOL_VERSION


def seq_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Compress a list of sequence numbers into sorted inclusive ranges."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def sample_dict(s: Sample) -> dict[str, object]:
    """A sample with its readable field names (the API's form, not the wire's)."""
    out: dict[str, object] = {f: getattr(s, f) for f in s.__struct_fields__ if f not in ("checks", "fs")}
    out["checks"] = {k: [c.state, c.reason] for k, c in s.checks.items()}
    out["fs"] = [{"mount": f.mount, "size_mb": f.size_mb, "used_mb": f.used_mb, "writable": f.writable} for f in s.fs]
    return out
