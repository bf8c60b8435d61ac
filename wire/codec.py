"""Payload encoding: msgpack, raw-deflated when that is smaller.

First byte is the format: ``0x01`` msgpack, ``0x02`` raw DEFLATE of msgpack. Decoding is
bounded (compressed size and inflated size) so a hostile payload cannot exhaust memory,
and every failure is a :class:`DecodeError` naming what was wrong.
"""

from __future__ import annotations

import zlib
from typing import TypeVar

import msgspec

PLAIN = 0x01
DEFLATE = 0x02

MAX_PAYLOAD = 256 * 1024
MAX_INFLATED = 4 * 1024 * 1024

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder] = {}


class DecodeError(ValueError):
    """A payload could not be decoded; ``reason`` is a short machine-countable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def encode(msg: msgspec.Struct, compress: bool = True) -> bytes:
    raw = _encoder.encode(msg)
    if compress and len(raw) > 64:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = c.compress(raw) + c.flush()
        if len(packed) < len(raw):
            return bytes([DEFLATE]) + packed
    return bytes([PLAIN]) + raw


def decode(payload: bytes, cls: type[T]) -> T:
    if len(payload) > MAX_PAYLOAD:
        raise DecodeError("oversize", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    if not payload:
        raise DecodeError("undecodable", "empty payload")
    fmt, body = payload[0], payload[1:]
    if fmt == DEFLATE:
        d = zlib.decompressobj(-15)
        try:
            body = d.decompress(body, MAX_INFLATED)
        except zlib.error as err:
            raise DecodeError("undecodable", f"bad deflate stream: {err}") from err
        if d.unconsumed_tail:
            raise DecodeError("oversize", f"inflates beyond {MAX_INFLATED} bytes")
    elif fmt != PLAIN:
        raise DecodeError("undecodable", f"unknown format byte 0x{fmt:02x}")
    dec = _decoders.get(cls)
    if dec is None:
        dec = _decoders[cls] = msgspec.msgpack.Decoder(cls)
    try:
        return dec.decode(body)
    except msgspec.ValidationError as err:
        raise DecodeError("schema", str(err)) from err
    except msgspec.DecodeError as err:
        raise DecodeError("undecodable", str(err)) from err
    except RecursionError as err:  # nesting deeper than the interpreter's stack (~1,000 levels)
        raise DecodeError("nesting", "nested too deeply") from err
