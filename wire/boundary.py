"""The closed inbound schema: what the fleet server accepts from a terminal, and nothing else.

:mod:`wire.messages` describes what an agent *sends*; this module describes what the server
*accepts*, field by field, with the ranges a real terminal can produce and the storage can hold:

* integers within 0..2^53 (or the physical range of the field): a 2^63 ``seq`` once stopped
  ingest for the whole fleet, the database refusing it on every retry;
* floats finite and physical (CPU 0-100 %, load below 10,000): a NaN CPU once froze the hourly
  roll-ups of every unit;
* strings, lists and maps bounded in length and count;
* event data decoded per kind against that kind's own schema (:data:`EVENT_SCHEMAS`): fields the
  schema does not name are dropped, not stored, so free text a terminal sends (a name, an ID
  number, an address) never reaches the database; binary values, extension types, non-text keys
  and nesting deeper than the schema are refused.

Fields a struct does not name are ignored (dropped, never stored): a newer agent that sends a new field
is not refused by an older server, and nothing outside the schema reaches the database. The wire
format is unchanged: the structs below decode exactly what :mod:`wire.messages` encodes
(a test holds the two field lists together). Every failure is a :class:`~wire.codec.DecodeError`
whose ``reason`` is a short word to count by and whose message names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from . import PROTOCOL_VERSION
from .codec import DecodeError
from .codec import decode as _decode
from .messages import Batch, Certificate, Check, Event, FsStat, Sample, State

MAX_INT = 2**53  # exact in a double, far inside SQLite's and PostgreSQL's int64
MAX_ITEMS = 1000  # samples or events in one batch (the agent's link.max_batch is at most 1,000)
MAX_CHECKS = 32
MAX_FS = 32
MAX_EVENT_DATA = 16 * 1024  # bytes of one event's encoded data

Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
Seq = Annotated[int, Meta(ge=0, le=MAX_INT)]
Ts = Annotated[int, Meta(ge=0, le=2**40)]  # epoch seconds; the plausible window is checked per item
Mb = Annotated[int, Meta(ge=0, le=2**40)]  # megabytes: up to an exabyte
Ms = Annotated[int, Meta(ge=0, le=3_600_000)]  # a round trip or its jitter: at most an hour
Word = Annotated[str, Meta(max_length=32)]
Text = Annotated[str, Meta(max_length=200)]
Name = Annotated[str, Meta(max_length=64)]


class InCheck(msgspec.Struct, array_like=True, omit_defaults=True, forbid_unknown_fields=True):
    state: Annotated[int, Meta(ge=0, le=2)]
    reason: Text = ""


class InFsStat(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    mount: Annotated[str, Meta(max_length=256)]
    size_mb: Mb
    used_mb: Mb
    writable: bool


# The strict type of every Sample field, by its Python name. Import fails if the two drift apart.
_SAMPLE_TYPES: dict[str, Any] = {
    "seq": Seq,
    "ts": Ts,
    "interval": Annotated[int, Meta(ge=1, le=3600)],
    "clock": Annotated[int, Meta(ge=0, le=2)],
    "connected": bool,
    "rtt_ms": Ms | None,
    "rtt_var_ms": Ms | None,
    "retrans": Count | None,
    "segs_out": Count | None,
    "cpu": Annotated[float, Meta(ge=0.0, le=100.0)] | None,
    "load1": Annotated[float, Meta(ge=0.0, le=10_000.0)] | None,
    "mem_used_mb": Mb | None,
    "mem_avail_mb": Mb | None,
    "swap_used_mb": Mb | None,
    "fs": Annotated[list[InFsStat], Meta(max_length=MAX_FS)],
    "uptime_s": Annotated[int, Meta(ge=0, le=2**40)] | None,
    "checks": Annotated[dict[Word, InCheck], Meta(max_length=MAX_CHECKS)],
    "signal_dbm": Annotated[int, Meta(ge=-200, le=0)] | None,
    "csq": Annotated[int, Meta(ge=0, le=255)] | None,
    "lite": bool,
    "cell_id": Annotated[int, Meta(ge=0, le=2**40)] | None,
    "tac": Annotated[int, Meta(ge=0, le=2**32)] | None,
    "data_bytes": Count | None,
    "rscp_dbm": Annotated[int, Meta(ge=-140, le=0)] | None,
    "ecio_db": Annotated[int, Meta(ge=-50, le=0)] | None,
}


def _strict_copy(cls: type[msgspec.Struct], name: str, types: dict[str, Any]) -> type[msgspec.Struct]:
    """``cls`` with each field's type replaced by ``types[field]``: same wire names, order and defaults."""
    fields = msgspec.structs.fields(cls)
    missing = {f.name for f in fields} ^ set(types)
    if missing:
        raise TypeError(f"{name}: strict types and {cls.__name__} differ in {sorted(missing)}")
    info = cls.__struct_config__
    spec = []
    for f in fields:
        if f.default is not msgspec.NODEFAULT:
            spec.append((f.name, types[f.name], f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            spec.append((f.name, types[f.name], msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, types[f.name]))
    rename = {f.name: f.encode_name for f in fields if f.encode_name != f.name}
    return msgspec.defstruct(name, spec, rename=rename or None, omit_defaults=info.omit_defaults,
                             array_like=info.array_like, module=__name__)


InSample = _strict_copy(Sample, "InSample", _SAMPLE_TYPES)


class InEvent(msgspec.Struct, omit_defaults=True,
              rename={"seq": "q", "ts": "t", "kind": "e", "data": "d"}):
    """An event as received: its data stays raw bytes until its kind's schema decodes it."""

    seq: Seq
    ts: Ts
    kind: Word
    data: msgspec.Raw = msgspec.Raw(b"\x80")


class InBatch(msgspec.Struct, omit_defaults=True,
              rename={"epoch": "e", "samples": "S", "events": "E"}):
    """A batch as received: its items stay raw until each is decoded alone (:func:`sample`, :func:`event`),
    so one bad item is refused on its own and never takes the batch's good items with it."""

    sn: Word
    epoch: Annotated[int, Meta(ge=0, le=MAX_INT)]
    samples: Annotated[list[msgspec.Raw], Meta(max_length=MAX_ITEMS)] = []
    events: Annotated[list[msgspec.Raw], Meta(max_length=MAX_ITEMS)] = []
    v: Annotated[int, Meta(ge=0, le=1000)] = PROTOCOL_VERSION


class InState(msgspec.Struct, omit_defaults=True):
    online: bool
    ts: Annotated[int, Meta(ge=0, le=2**40)] = 0
    reason: Word = ""
    version: Name = ""
    v: Annotated[int, Meta(ge=0, le=1000)] = PROTOCOL_VERSION


# --- event kinds and their data ------------------------------------------------------------------

class _EventData(msgspec.Struct, omit_defaults=True):
    """Unknown fields are dropped (not stored); a known field of the wrong type refuses the event."""


Version = Annotated[str, Meta(max_length=64)]


class IdentityData(_EventData):
    """``identity`` / ``sim_changed``: the modem's and SIM's identifiers (no personal data)."""

    iccid: Annotated[str, Meta(max_length=24)] | None = None
    imsi: Annotated[str, Meta(max_length=16)] | None = None
    imei: Annotated[str, Meta(max_length=17)] | None = None
    modem_model: Name | None = None
    modem_firmware: Name | None = None
    carrier: Name | None = None
    mcc_mnc: Annotated[str, Meta(max_length=8)] | None = None
    # issue 18: the address of the interface the terminal reaches the insurance network by, sent with the
    # identity when it (or the link type) changes; the server checks it against the terminal's allocation
    ip: Annotated[str, Meta(max_length=39, pattern=r"^[0-9A-Fa-f:.]+$")] | None = None
    link: Literal["wired", "cellular"] | None = None


class InventoryData(IdentityData):
    """``inventory``: the agent, its boot and the software components it watches."""

    agent: Version | None = None
    boot_id: Name | None = None
    hostname: Name | None = None
    components: Annotated[dict[Name, Version | None], Meta(max_length=32)] = {}


class CommandResultData(_EventData):
    """``cmd``: a remote command's result."""

    id: Name
    type: Word
    state: Word
    code: Annotated[int, Meta(ge=-(2**31), le=2**31)] | None = None
    output: Annotated[str, Meta(max_length=8192)] = ""
    received: Annotated[float, Meta(ge=0, le=2**40)] | None = None
    started: Annotated[float, Meta(ge=0, le=2**40)] | None = None
    finished: Annotated[float, Meta(ge=0, le=2**40)] | None = None


Scalar = Annotated[str, Meta(max_length=512)] | int | float | bool | None


class ConsoleAuditData(_EventData):
    """``console``: one record of the diagnostic console's audit (who, when, what)."""

    event: Word
    session: Name | None = None
    engineer: Name | None = None
    credential: Name | None = None
    client: Name | None = None
    command: Name | None = None
    result: Word | None = None
    reason: Text | None = None
    key: Name | None = None
    change: Name | None = None
    args: Annotated[dict[Word, Scalar], Meta(max_length=16)] | None = None
    changes: bool | None = None
    commands: Count | None = None
    scope: Name | Annotated[list[Name], Meta(max_length=16)] | None = None
    expires: Annotated[float, Meta(ge=0, le=2**40)] | None = None
    truncated: bool | None = None


class BufferResetData(_EventData):
    """``buffer_reset``: the agent found its outbox unusable, set it aside and started a new one."""

    reason: Text = ""
    quarantined: Annotated[str, Meta(max_length=256)] = ""
    lost: Count | None = None


class DeliveryRefusedData(_EventData):
    """``publish_not_authorized`` and kin: the broker refused the agent's publishes for a while."""

    count: Count = 0
    reason_code: Annotated[int, Meta(ge=0, le=255)] | None = None
    first: Ts | None = None
    last: Ts | None = None


class CommandRefusedData(_EventData):
    """``cmd_refused``: retained or over-budget commands the agent did not run."""

    reason: Word = ""
    count: Count = 0
    type: Word | None = None


class CertRequestData(_EventData):
    """``cert_request``: a certificate signing request for a key the terminal made (a P-256 request is ~400
    bytes of PEM; its content is checked by the server: signature, CN = the SN, key type)."""

    csr: Annotated[str, Meta(min_length=64, max_length=2048, pattern=r"^-----BEGIN CERTIFICATE REQUEST-----")]


class CertSwitchedData(_EventData):
    """``cert_switched``: the terminal now connects with the renewed certificate of this serial (hex)."""

    serial: Annotated[str, Meta(min_length=1, max_length=40, pattern=r"^[0-9a-f]+$")]


class InterfaceReachData(_EventData):
    """``iface`` (issue 18): whether the terminal's own application reached one configured insurance business
    interface at its last attempt, read by the agent from the application's status file; sent when it changes.
    Never a payload, never a person: the interface's code, yes/no, when it last succeeded, a short reason."""

    interface: Annotated[str, Meta(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    ok: bool
    last_ok: Ts | None = None
    reason: Annotated[str, Meta(max_length=32, pattern=r"^[a-z0-9_]*$")] = ""  # the agent's word, not the app's text


ServiceCount = Annotated[int, Meta(ge=0, le=1_000_000)]  # services of one terminal in one hour


class ServiceHourData(_EventData):
    """``svc`` (issue 18): one terminal's services in one hour, counted by the agent from the events the terminal
    application writes; only counts, never who. A resend replaces the hour (idempotent)."""

    hour: Ts
    services: ServiceCount = 0
    face: ServiceCount = 0
    idcard: ServiceCount = 0
    evoucher: ServiceCount = 0
    other: ServiceCount = 0
    business: Annotated[dict[Annotated[str, Meta(max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")], ServiceCount],
                        Meta(max_length=16)] = {}


EVENT_SCHEMAS: dict[str, type[_EventData]] = {
    "inventory": InventoryData,
    "identity": IdentityData,
    "sim_changed": IdentityData,
    "cmd": CommandResultData,
    "console": ConsoleAuditData,
    "buffer_reset": BufferResetData,
    "publish_not_authorized": DeliveryRefusedData,
    "cmd_refused": CommandRefusedData,
    "cert_request": CertRequestData,
    "cert_switched": CertSwitchedData,
    "iface": InterfaceReachData,
    "svc": ServiceHourData,
}

_event_decoders = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in EVENT_SCHEMAS.items()}


_sample_decoder = msgspec.msgpack.Decoder(InSample)
_event_decoder = msgspec.msgpack.Decoder(InEvent)
_seq_decoder = msgspec.msgpack.Decoder(dict[str, Any])
# What a sample is counted by: a wrong value there refuses the sample. A wrong value in any other field
# (a modem reporting +31 dBm, a load of 1e12) drops that field and keeps the sample, so the slot still counts.
COUNTING_FIELDS = frozenset({"q", "t", "i", "k", "c", "h"})
_BY_WIRE = {f.encode_name: f.name for f in msgspec.structs.fields(InSample)}


class ItemError(DecodeError):
    """One item of a batch refused; ``seq`` is its sequence number when that much could be read."""

    def __init__(self, reason: str, message: str, seq: int | None) -> None:
        super().__init__(reason, message)
        self.seq = seq


def _field_of(err: msgspec.ValidationError) -> str | None:
    """The top-level wire field a validation error is about (``$.u`` -> ``u``)."""
    text = str(err)
    at = text.rfind("- at `$.")
    if at < 0:
        return None
    rest = text[at + 8:]
    end = min((i for i in (rest.find("."), rest.find("["), rest.find("`")) if i >= 0), default=len(rest))
    return rest[:end]


def _seq_of(raw: msgspec.Raw) -> int | None:
    try:
        q = _seq_decoder.decode(raw).get("q")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    # bool is an int subclass in Python but not on the wire: a seq of ``true`` echoed in an acknowledgement as 1
    # would not even decode on the terminal (msgspec's int is strict).
    return q if isinstance(q, int) and not isinstance(q, bool) and 0 <= q <= MAX_INT else None


def sample(raw: msgspec.Raw) -> tuple[Any, list[str]]:
    """One sample of a batch: (InSample, the readable names of fields dropped for a wrong value).

    Raises :class:`ItemError` naming the field when a counting field is wrong or missing."""
    dropped: list[str] = []
    body: bytes | msgspec.Raw = raw
    for _ in range(8):
        try:
            return _sample_decoder.decode(body), dropped
        except msgspec.ValidationError as err:
            field = _field_of(err)
            if field is None or field in COUNTING_FIELDS or field not in _BY_WIRE:
                raise ItemError("schema", f"sample: {err}", _seq_of(raw)) from err
            try:
                d = _seq_decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as err2:
                raise ItemError("schema", f"sample: {err2}", _seq_of(raw)) from err2
            d.pop(field, None)
            dropped.append(f"{_BY_WIRE[field]} ({err})")
            body = msgspec.msgpack.encode(d)
        except (msgspec.DecodeError, RecursionError) as err:
            raise ItemError("schema", f"sample: {err}", _seq_of(raw)) from err
    raise ItemError("schema", "sample: too many wrong fields", _seq_of(raw))


def event(raw: msgspec.Raw) -> tuple[InEvent, dict[str, Any]]:
    """One event of a batch and its data as its kind's schema allows (see :func:`event_data`)."""
    try:
        e = _event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as err:
        raise ItemError("schema", f"event: {err}", _seq_of(raw)) from err
    try:
        return e, event_data(e.kind, e.data)
    except DecodeError as err:
        raise ItemError(err.reason, err.message, e.seq) from err


def decode_batch(payload: bytes) -> InBatch:
    """The telemetry batch in ``payload``, or :class:`DecodeError` naming what was wrong."""
    return _decode(payload, InBatch)


class InCertificate(msgspec.Struct, omit_defaults=True):
    """What the agent accepts on ``pf/<sn>/x`` (the server's :class:`~wire.messages.Certificate`)."""

    cert: Annotated[str, Meta(max_length=8192)] = ""
    done: Annotated[str, Meta(max_length=40)] = ""
    v: Annotated[int, Meta(ge=0, le=1000)] = PROTOCOL_VERSION


def decode_certificate(payload: bytes) -> InCertificate:
    return _decode(payload, InCertificate)


def decode_state(payload: bytes) -> InState:
    return _decode(payload, InState)


def event_data(kind: str, raw: msgspec.Raw) -> dict[str, Any]:
    """The data of an event of ``kind`` as its schema allows it: unknown fields dropped, None left out.

    Raises :class:`DecodeError` (``event_kind``: no such kind; ``event_schema``: a known field
    is wrong) naming the kind and the field."""
    dec = _event_decoders.get(kind)
    if dec is None:
        raise DecodeError("event_kind", f"unknown event kind {kind[:32]!r}")
    if len(raw) > MAX_EVENT_DATA:
        raise DecodeError("event_schema", f"{kind}: data of {len(raw)} bytes > {MAX_EVENT_DATA}")
    try:
        data = dec.decode(raw)
    except msgspec.ValidationError as err:
        raise DecodeError("event_schema", f"{kind}: {err}") from err
    except (msgspec.DecodeError, RecursionError) as err:
        raise DecodeError("event_schema", f"{kind}: {err}") from err
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None and v != {} and v != []}


def check_fields(cls: type, strict: type) -> list[str]:
    """Wire names that differ between an outbound struct and its inbound twin (for the tests)."""
    a = {f.encode_name for f in msgspec.structs.fields(cls)}
    b = {f.encode_name for f in msgspec.structs.fields(strict)}
    return sorted(a ^ b)


PAIRS = ((Sample, InSample), (Batch, InBatch), (Event, InEvent), (State, InState), (Check, InCheck),
         (FsStat, InFsStat), (Certificate, InCertificate))
