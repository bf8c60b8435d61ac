"""Record a peripheral's traffic as a redacted transcript that an emulator can replay.

A field problem becomes a regression test by copying a folder: ``posfleet diag capture``
runs the same checks as ``posfleet diag <kind>`` with a :class:`Recorder` on the device's
transport and writes ``DIR/transcript.jsonl`` (one :class:`Event` per line) and
``DIR/meta.json`` (:class:`Meta`: kind, profile, the outcome). ``simulator.emulators.replay``
answers the real driver from such a folder.

Events: ``tx`` bytes the host wrote, ``rx`` bytes the device sent (as each read returned
them), ``open``/``close``/``error`` on the port; ``t`` is seconds since recording began.

Privacy: events are kept in memory while recording and redacted before anything is
written. For an ID card reader the whole reply stream is scanned frame by frame (the way
the driver's decoder does): a card read's text block becomes a synthetic block holding only
the masked fields (so the replayed driver returns the same masked card), the photo and
fingerprint become zeros, an appended address is masked, any other large or broken frame
body and any byte between frames is blanked. Lengths, frame headers, status words and
checksum validity (good or bad) are kept, so the replay still parses exactly as before.

How the recorder gets at the traffic: each device builds its own ``Transport`` from a URL
and keeps it in ``_transport``, so :meth:`Recorder.attach` replaces that with a
:class:`RecordingTransport` over the same URL and line settings, before the port opens.
(A ``capture://`` pyserial URL handler would need a module named ``protocol_capture`` in a
package on ``serial.protocol_handler_packages``: global state, and no way to hand it the
recorder.) The capture tests fail if a driver stops keeping its transport there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from .errors import (
    EXIT_FAULT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    DeviceNotFound,
    DriverError,
    ProtocolError,
    exit_code,
    verdict_state,
)
from .health import State
from .idcard import codec as idc
from .idcard.mask import mask_id, mask_name, redact_text
from .transport import Transport

log = logging.getLogger(__name__)

FORMAT = "posfleet-capture/1"
TRANSCRIPT = "transcript.jsonl"
META = "meta.json"

Kind = Literal["modem", "printer", "idcard"]
KINDS: tuple[Kind, ...] = ("modem", "printer", "idcard")
DEFAULT_PROFILES: dict[str, str] = {"modem": "generic-3gpp", "printer": "generic-58mm", "idcard": "generic-sam"}
Direction = Literal["tx", "rx", "open", "close", "error"]


class CaptureError(DriverError):
    """A capture folder is missing, malformed or not redacted; the message names file and line."""


# --------------------------------------------------------------------------------------
# the on-disk format

class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    n: int
    t: float
    dir: Direction
    hex: str = ""
    label: str = ""  # tx: the command, named per kind ("AT+CPIN?", "SAM status", "DLE EOT 1")
    text: str = ""  # modem only: the bytes as text, for people reading the file
    error: str = ""

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.hex)


class Outcome(msgspec.Struct, forbid_unknown_fields=True):
    """What ``posfleet diag <kind>`` concluded: the same on replay means no regression."""

    state: State
    reason: str
    exit_code: int
    error: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class Meta(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    kind: Kind
    profile: str
    port: str
    read_card: bool
    recorded_at: str
    redacted: bool
    outcome: Outcome
    baudrate: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Step:
    """One request (a host write) and what the device sent until the next one.

    ``replies`` are (seconds after the request was written, bytes). Step 0 with an empty
    request holds bytes the device sent before the host wrote anything."""

    index: int
    label: str
    request: bytes
    replies: list[tuple[float, bytes]] = field(default_factory=list)

    def describe(self) -> str:
        return f"step {self.index} ({self.label})" if self.label else f"step {self.index}"


@dataclass(frozen=True)
class Capture:
    meta: Meta
    events: list[Event]
    folder: Path | None = None

    def steps(self) -> list[Step]:
        return steps_from_events(self.events)


def steps_from_events(events: list[Event]) -> list[Step]:
    steps: list[Step] = []
    start = 0.0
    prelude: list[tuple[float, bytes]] = []
    for ev in events:
        if ev.dir == "tx":
            start = ev.t
            steps.append(Step(len(steps) + (1 if prelude else 0), ev.label, ev.data))
        elif ev.dir == "rx":
            target = steps[-1].replies if steps else prelude
            target.append((max(0.0, ev.t - start), ev.data))
    if prelude:
        steps.insert(0, Step(0, "before the first request", b"", prelude))
    return steps


def load(folder: str | Path) -> Capture:
    """Read and validate a capture folder; errors name the file (and line) that is wrong."""
    folder = Path(folder)
    meta_path, tr_path = folder / META, folder / TRANSCRIPT
    try:
        meta = msgspec.json.decode(meta_path.read_bytes(), type=Meta)
    except OSError as err:
        raise CaptureError(f"{meta_path}: cannot read: {err.strerror or err}") from err
    except msgspec.ValidationError as err:
        raise CaptureError(f"{meta_path}: {_dotted(str(err))}") from err
    except msgspec.DecodeError as err:
        raise CaptureError(f"{meta_path}: not valid JSON: {err}") from err
    if meta.format != FORMAT:
        raise CaptureError(f"{meta_path}: format {meta.format!r} is not {FORMAT!r}")
    if not meta.redacted:
        raise CaptureError(f"{meta_path}: capture is not marked redacted; refusing to use it")
    try:
        lines = tr_path.read_bytes().splitlines()
    except OSError as err:
        raise CaptureError(f"{tr_path}: cannot read: {err.strerror or err}") from err
    events: list[Event] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            ev = msgspec.json.decode(line, type=Event)
            ev.data  # noqa: B018 - validates the hex
        except msgspec.ValidationError as err:
            raise CaptureError(f"{tr_path} line {number}: {_dotted(str(err))}") from err
        except (msgspec.DecodeError, ValueError) as err:
            raise CaptureError(f"{tr_path} line {number}: not a transcript event: {err}") from err
        events.append(ev)
    return Capture(meta, events, folder)


def _dotted(message: str) -> str:
    if " - at `$" in message:
        text, _, where = message.partition(" - at `$")
        where = where.rstrip("`").lstrip(".")
        return f"{where}: {text}" if where else text
    return message


# --------------------------------------------------------------------------------------
# labels

def label_for(kind: str, data: bytes) -> str:
    """Name a host write the way an engineer would: the AT command, the SAM command, DLE EOT n."""
    if kind == "modem":
        return data.decode("ascii", errors="backslashreplace").strip("\r\n")
    if kind == "idcard":
        frames = idc.decode_frames(data)
        if not frames or len(frames[0].body) < 2:
            return f"unframed {len(data)} bytes"
        key = (frames[0].body[0], frames[0].body[1])
        return idc.COMMAND_NAMES.get(key, f"command {key[0]:02X} {key[1]:02X}")
    if len(data) == 3 and data[:2] == b"\x10\x04":
        return f"DLE EOT {data[2]}"
    if len(data) == 3 and data[:2] == b"\x1d\x72":
        return f"GS r {data[2]}"
    return f"ESC/POS data ({len(data)} bytes)"


# --------------------------------------------------------------------------------------
# redaction (ID card reader replies)

PERSONAL_COMMANDS = frozenset({idc.READ_TEXT_PHOTO, idc.READ_TEXT_PHOTO_FP, idc.READ_ADDRESS})
_MAX_PLAIN_DATA = idc.SAM_ID_LEN  # a reply with more data than a SAM ID is blanked unless known safe
_KEEP_IN_GARBAGE = frozenset(idc.PREAMBLE)  # bytes that decide where the driver's decoder resyncs
_PARTIAL_KEEP = idc.HEADER_LEN + 3  # header and status words of a frame that never completed
_BAD_UCS2 = b"\x00\xd8"  # a lone surrogate: fails to decode exactly as broken text does


def redact_events(kind: str, events: list[Event]) -> list[Event]:
    """The events as they may be written to disk (ID card data masked, see the module doc)."""
    if kind != "idcard":
        return list(events)
    rx = [i for i, ev in enumerate(events) if ev.dir == "rx"]
    stream = bytearray()
    owners: list[tuple[int, tuple[int, int] | None]] = []  # (stream offset, command of that exchange)
    command: tuple[int, int] | None = None
    for ev in events:
        if ev.dir == "tx":
            frames = idc.decode_frames(ev.data)
            command = (frames[0].body[0], frames[0].body[1]) if frames and len(frames[0].body) >= 2 else None
        elif ev.dir == "rx":
            owners.append((len(stream), command))
            stream += ev.data
    clean = redact_reply_stream(bytes(stream), owners)
    out = list(events)
    pos = 0
    for i in rx:
        n = len(events[i].data)
        out[i] = msgspec.structs.replace(events[i], hex=clean[pos : pos + n].hex())
        pos += n
    return out


def redact_reply_stream(stream: bytes, owners: list[tuple[int, tuple[int, int] | None]]) -> bytes:
    """Redact a reader's reply stream, keeping its length and how the driver's decoder splits it.

    ``owners``: (offset where an exchange's replies begin, that exchange's command), ascending."""
    out = bytearray(stream)
    keep: set[int] = set()

    def owner(pos: int) -> tuple[int, int] | None:
        cmd = None
        for offset, key in owners:
            if offset > pos:
                break
            cmd = key
        return cmd

    def blank(start: int, end: int) -> None:
        for j in range(start, end):
            if j not in keep and out[j] not in _KEEP_IN_GARBAGE:
                out[j] = 0

    n = len(stream)
    i = 0
    while i < n:
        p = stream.find(idc.PREAMBLE, i)
        if p < 0:
            blank(i, n)
            break
        blank(i, p)
        if p + idc.HEADER_LEN > n:
            break  # a preamble at the very end: nothing personal in it
        length = int.from_bytes(stream[p + 5 : p + 7], "big")
        if not idc.MIN_LEN <= length <= idc.MAX_LEN:
            keep.update((p + 5, p + 6))  # an impossible LEN must stay impossible
            i = p + 1
            continue
        end = p + idc.HEADER_LEN + length
        if end > n:  # never completed: the driver saw a header and timed out
            out[p + _PARTIAL_KEEP : n] = bytes(n - p - _PARTIAL_KEEP) if n > p + _PARTIAL_KEEP else b""
            break
        data_at = p + idc.HEADER_LEN + 3
        data = stream[data_at : end - 1] if data_at < end - 1 else b""
        cmd = owner(p)
        if data and (cmd in PERSONAL_COMMANDS or len(data) > _MAX_PLAIN_DATA):
            delta = stream[end - 1] ^ idc.xor(stream[p + 5 : end - 1])  # 0 unless the checksum was bad
            out[data_at : end - 1] = redact_reply_data(cmd, data)
            out[end - 1] = idc.xor(bytes(out[p + 5 : end - 1])) ^ delta
        i = end
    return bytes(out)


def redact_reply_data(command: tuple[int, int] | None, data: bytes) -> bytes:
    """The data of one reply frame with personal data replaced; always ``len(data)`` bytes."""
    if command in (idc.READ_TEXT_PHOTO, idc.READ_TEXT_PHOTO_FP):
        return _redact_read(data, fingerprint=command == idc.READ_TEXT_PHOTO_FP)
    if command == idc.READ_ADDRESS:
        return _redact_address(data)
    return bytes(len(data))


def _redact_read(data: bytes, *, fingerprint: bool) -> bytes:
    head = 6 if fingerprint else 4
    if len(data) < head:
        return bytes(len(data))
    words = [int.from_bytes(data[k : k + 2], "big") for k in range(0, head, 2)]
    text_len, photo_len = words[0], words[1]
    if text_len != idc.TEXT_LEN or head + sum(words) != len(data):
        return data[:head] + bytes(len(data) - head)  # the driver refuses it on the length words alone
    photo = data[head + text_len : head + text_len + photo_len]
    fake_photo = (b"WL" if photo[:2] == b"WL" else b"") + bytes(photo_len)
    return data[:head] + synthetic_text_block(data[head : head + text_len]) + fake_photo[:photo_len] + bytes(
        len(data) - head - text_len - photo_len
    )


def synthetic_text_block(block: bytes) -> bytes:
    """A 256-byte text block holding only what the masked card shows.

    Decoded and masked by the driver it gives the same :class:`MaskedCard` as ``block``:
    the masked name and address re-mask to themselves, the ID number keeps its first and
    last four characters and (when it had one) a valid check digit and the birth-date
    agreement; gender, nation, card type, birth year and expiry are kept. A block the
    driver could not decode becomes one it cannot decode either (bad UCS-2)."""
    try:
        card = idc.decode_text_block(block)
    except ProtocolError:
        fake = bytearray(_BAD_UCS2 * (len(block) // 2))
        mark = idc.TYPE_MARK_OFFSET
        fake[mark : mark + 2] = block[mark : mark + 2]
        return bytes(fake)
    id_number, birth = _synthetic_id_and_birth(card)
    address = card.address.strip()
    keep = min(6, len(address) // 2)  # mask_address's rule: this re-masks to the same text
    changes: dict[str, str] = {
        "name": mask_name(card.name),
        "english_name": mask_name(card.english_name),
        "id_number": id_number,
        "birth": birth,
        "address": address[:keep] + "*" * keep,
        "authority": "",
        "valid_from": "",
        "pass_number": "*" * len(card.pass_number),
    }
    return idc.encode_text_block(dataclasses.replace(card, **changes))


def _synthetic_id_and_birth(card: idc.CardText) -> tuple[str, str]:
    """An ID number and birth date that mask, check and agree exactly as the card's do, and
    differ from the card's own (month and day are never the card's; the year is shown anyway)."""
    number, birth = card.id_number.strip(), card.birth
    birth_ok = len(birth) == 8 and birth.isascii() and birth.isdigit()
    upper = number.upper()
    taken = {birth[4:8], upper[10:14]}
    month_days = [md for md in ("0101", "0102", "0103", "0104") if md not in taken]
    if card.type == "foreigner" or len(upper) != 18:
        return mask_id(number), (birth[:4] + month_days[0] if birth_ok else "*" * len(birth))
    if idc.id_birth_matches(upper, birth):
        id_birth = birth[:4] + month_days[0] if birth_ok else "*" * 8
        fake_birth = id_birth
    else:
        year = birth[:4] if birth_ok else upper[6:10]
        id_birth = year + month_days[0]
        fake_birth = year + month_days[1] if birth_ok else "*" * len(birth)  # still disagrees with the number
    if not idc.id_checksum_ok(upper):
        return upper[:4] + "**" + id_birth + upper[14:], fake_birth  # "**": still no valid check digit
    for district in range(100):
        first17 = upper[:4] + f"{district:02d}" + id_birth + upper[14:17]
        if idc.id_check_digit(first17) == upper[17]:
            return first17 + upper[17], fake_birth
    raise AssertionError("unreachable: MOD 11-2 reaches every check character with two free digits")


def _redact_address(data: bytes) -> bytes:
    try:
        text = data.decode("utf-16-le")
    except UnicodeDecodeError:
        return (_BAD_UCS2 * (len(data) // 2 + 1))[: len(data)]
    s = text.rstrip(" \x00").strip()
    keep = min(6, len(s) // 2)
    fake = (s[:keep] + "*" * keep).ljust(len(data) // 2).encode("utf-16-le")
    return fake + bytes(len(data) - len(fake))


# --------------------------------------------------------------------------------------
# recording

class Recorder:
    """Collects one device's traffic in memory; :meth:`save` redacts, then writes."""

    def __init__(self, kind: Kind) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown capture kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def note(self, direction: Direction, data: bytes = b"", error: str = "") -> None:
        with self._lock:
            ev = Event(len(self._events), round(time.monotonic() - self._t0, 4), direction, data.hex(),
                       error=redact_text(error))
            if direction == "tx":
                ev.label = label_for(self.kind, data)
            if self.kind == "modem" and data:
                ev.text = data.decode("ascii", errors="backslashreplace")
            self._events.append(ev)

    def attach(self, device: Any) -> Any:
        """Put a :class:`RecordingTransport` under ``device`` (Modem, Printer or IdCardReader)."""
        inner = getattr(device, "_transport", None)
        if not isinstance(inner, Transport):
            raise TypeError(f"{type(device).__name__} has no Transport to record")
        if inner.is_open:
            raise ValueError("attach the recorder before the device opens its port")
        device._transport = RecordingTransport(inner, self)
        return device

    def events(self) -> list[Event]:
        """The redacted events (what would be written)."""
        with self._lock:
            raw = list(self._events)
        return redact_events(self.kind, raw)

    def save(self, folder: str | Path, meta: Meta) -> Path:
        """Write ``folder/transcript.jsonl`` and ``folder/meta.json`` (redacted, each atomically)."""
        if meta.kind != self.kind:
            raise ValueError(f"meta says {meta.kind}, recorder records {self.kind}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lines = b"".join(msgspec.json.encode(ev) + b"\n" for ev in self.events())
        meta = msgspec.structs.replace(meta, redacted=True, outcome=_redact_outcome(meta.outcome),
                                       note=redact_text(meta.note), port=redact_text(meta.port))
        _write_atomic(folder / TRANSCRIPT, lines)
        _write_atomic(folder / META, msgspec.json.format(msgspec.json.encode(meta), indent=2) + b"\n")
        return folder


def make_meta(kind: Kind, profile: str, port: str, outcome: Outcome, *, read_card: bool = False,
              baudrate: int | None = None, note: str = "") -> Meta:
    return Meta(FORMAT, kind, profile, port, read_card, time.strftime("%Y-%m-%dT%H:%M:%S%z"), True, outcome,
                baudrate, note)


# Foreigner permanent residence numbers of the 2004 format (3 letters, 12 digits): redact_text
# only knows the 18-character numbers, so free text written into a capture gets this pass too.


def _redact_outcome(outcome: Outcome) -> Outcome:
    text = redact_text(json.dumps(msgspec.to_builtins(outcome), ensure_ascii=False))
    return msgspec.convert(json.loads(text), Outcome)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class RecordingTransport(Transport):
    """The same transport (URL and line settings) with every write and non-empty read noted."""

    def __init__(self, inner: Transport, recorder: Recorder) -> None:
        settings = dict(inner._settings)
        super().__init__(inner.url, int(settings.pop("baudrate")), exclusive=inner._exclusive, **settings)
        self.recorder = recorder

    def open(self) -> None:
        if self.is_open:
            return
        try:
            super().open()
        except DeviceNotFound as err:
            self.recorder.note("error", error=f"open: {err.reason}")
            raise
        self.recorder.note("open")

    def close(self) -> None:
        was_open = self.is_open
        super().close()
        if was_open:
            self.recorder.note("close")

    def write(self, data: bytes) -> None:
        self.recorder.note("tx", data)
        try:
            super().write(data)
        except DeviceNotFound as err:
            self.recorder.note("error", error=f"write: {err.reason}")
            raise

    def read_available(self, max_bytes: int = 4096) -> bytes:
        try:
            data = super().read_available(max_bytes)
        except DeviceNotFound as err:
            self.recorder.note("error", error=f"read: {err.reason}")
            raise
        if data:
            self.recorder.note("rx", data)
        return data


# --------------------------------------------------------------------------------------
# the checks ``posfleet diag <kind>`` runs, with or without a recorder

def diagnose(
    kind: Kind,
    url: str,
    profile: str | None = None,
    *,
    read_card: bool = False,
    baudrate: int | None = None,
    recorder: Recorder | None = None,
) -> Outcome:
    """Run the diag checks of ``kind`` on ``url`` and say what they concluded.

    Raises :class:`drivers.profiles.ProfileError` for an unknown profile; every driver
    error becomes an :class:`Outcome` with the diag commands' exit codes."""
    profile = profile or DEFAULT_PROFILES[kind]
    if kind == "modem":
        return _diagnose_modem(url, profile, baudrate, recorder)
    if kind == "printer":
        return _diagnose_printer(url, profile, baudrate, recorder)
    if kind == "idcard":
        return _diagnose_idcard(url, profile, baudrate, recorder, read_card)
    raise ValueError(f"unknown kind {kind!r}")


def _error_outcome(err: DriverError, names: dict[int, str]) -> Outcome:
    code = exit_code(err)
    return Outcome(verdict_state(code), names.get(code, "error"), code, redact_text(str(err)))  # type: ignore[arg-type]


def _diagnose_modem(url: str, profile: str, baudrate: int | None, recorder: Recorder | None) -> Outcome:
    from .modem import Modem, assess

    modem = Modem(url, profile, baudrate=baudrate)
    if recorder is not None:
        recorder.attach(modem)
    try:
        with modem:
            modem.init()
            status = modem.status()
    except DriverError as err:
        return _error_outcome(err, {EXIT_NOT_FOUND: "modem port not found", EXIT_TIMEOUT: "modem not answering",
                                    EXIT_PROTOCOL: "modem answers garbage"})
    result = assess(status)
    return Outcome(result.state, result.reason, EXIT_OK if result.state == "ok" else EXIT_FAULT,
                   detail=status.as_dict())


def _diagnose_printer(url: str, profile: str, baudrate: int | None, recorder: Recorder | None) -> Outcome:
    from .printer.device import Printer, assess

    printer = Printer(url, profile, baudrate=baudrate)
    if recorder is not None:
        recorder.attach(printer)
    try:
        with printer:
            status = printer.status()
    except DriverError as err:
        return _error_outcome(err, {EXIT_NOT_FOUND: "printer port unavailable", EXIT_TIMEOUT: "printer not answering",
                                    EXIT_PROTOCOL: "printer not answering"})
    result = assess(status)
    detail = status.as_dict()
    if result.detail.get("note"):
        detail["note"] = result.detail["note"]
    return Outcome(result.state, result.reason, EXIT_OK if result.state == "ok" else EXIT_FAULT, detail=detail)


def _diagnose_idcard(url: str, profile: str, baudrate: int | None, recorder: Recorder | None,
                     read_card: bool) -> Outcome:
    from .idcard import IdCardReader

    reader = IdCardReader(url, profile, baudrate=baudrate)
    if recorder is not None:
        recorder.attach(reader)
    try:
        with reader:
            result = reader.self_test(read=read_card)
    except DriverError as err:
        return _error_outcome(err, {EXIT_NOT_FOUND: "reader port not found", EXIT_TIMEOUT: "SAM not answering",
                                    EXIT_PROTOCOL: "reader protocol error", EXIT_FAULT: "SAM fault"})
    if result["sam_ok"]:
        return Outcome("ok", "", EXIT_OK, detail=result)
    return Outcome("fault", result["sam_error"]["reason"], EXIT_FAULT, detail=result)


__all__ = [
    "Capture",
    "CaptureError",
    "Event",
    "Meta",
    "Outcome",
    "Recorder",
    "RecordingTransport",
    "Step",
    "diagnose",
    "label_for",
    "load",
    "make_meta",
    "redact_events",
    "synthetic_text_block",
]
