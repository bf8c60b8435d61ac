"""Remote commands: what the server signs and the agent verifies, and how results come back.

A command travels as :class:`SignedCommand` on ``pf/<sn>/c``:

* ``body`` is the msgpack of a :class:`Command` (the exact signed bytes);
* ``sig`` is the Ed25519 signature of ``body`` by the server's command key;
* ``endorsement`` says, signed by the fleet CA (ECDSA P-256, the same CA as the TLS
  certificates), "key ``key_id`` with this public key may sign commands until ``not_after``".
  The agent trusts any key the fleet CA endorsed, so the command key can be rotated without
  touching a terminal; a leaked key is retired by listing its id in the agent's config.

Results come back as outbox events of kind ``cmd`` (store-and-forward, exactly once):
``{"id", "type", "state", "output", "code", "received", "started", "finished"}``.
"""

from __future__ import annotations

import msgspec

from . import PROTOCOL_VERSION

# Command types and who may send them (the server enforces roles; the agent enforces the types).
DIAGNOSTIC = frozenset({"test_page", "idcard_selftest", "modem_diag", "network_check", "collect_logs"})
PRIVILEGED = frozenset({"reboot", "shutdown", "set_config", "software_update"})
TYPES = DIAGNOSTIC | PRIVILEGED

# States, in order. queued/sent/expired live on the server; the agent reports the rest.
STATES = ("queued", "sent", "delivered", "running", "succeeded", "failed", "expired", "rejected")
FINAL = frozenset({"succeeded", "failed", "expired", "rejected"})

MAX_OUTPUT = 16 * 1024  # bytes of output kept per command result

# The software_update command's download pacing, bytes a second: the default (a village 4G uplink shared with the
# clinic's business traffic) and the range the server accepts and the agent enforces.
PACE_BYTES_PER_S = 64 * 1024
PACE_RANGE = (1024, 100 * 1024 * 1024)  # 1 KiB/s .. 100 MiB/s

# Parameters each type accepts: name -> (type, default); a default of None means required. Unknown parameters are
# refused: by the server when the command is created (server.commands.service) and by the agent before it acts
# (agent.commands), which also checks the types and ranges.
PARAMS: dict[str, dict[str, tuple[type | tuple[type, ...], object]]] = {
    "test_page": {},
    "idcard_selftest": {"read": (bool, False)},
    "modem_diag": {},
    "network_check": {},
    "collect_logs": {"lines": (int, 200)},
    "reboot": {},
    "shutdown": {},
    "set_config": {"changes": (dict, None), "rollback_minutes": ((int, float), None)},
    "software_update": {
        "component": (str, None), "version": (str, None), "url": (str, None), "sha256": (str, None),
        "size": (int, None), "signature": (bytes, None), "endorsement": (dict, None), "models": (list, []),
        "allow_downgrade": (bool, False), "health_timeout_s": ((int, float), 300),
        "pace_bytes_per_s": ((int, float), PACE_BYTES_PER_S),  # range: PACE_RANGE, checked in agent.update.check
    },
}


class Command(msgspec.Struct, omit_defaults=True):
    id: str
    sn: str
    type: str
    issued: int
    expires: int
    nonce: str
    params: dict[str, object] = {}
    v: int = PROTOCOL_VERSION


class Endorsement(msgspec.Struct):
    """The fleet CA's statement that a command key is valid; ``sig`` is ECDSA-SHA256 over ``body``."""

    body: bytes  # msgpack of EndorsedKey
    sig: bytes


class EndorsedKey(msgspec.Struct):
    key_id: str
    public_key: bytes  # raw Ed25519, 32 bytes
    purpose: str  # "command" or "update"
    not_after: int


class SignedCommand(msgspec.Struct):
    body: bytes
    sig: bytes
    endorsement: Endorsement
    v: int = PROTOCOL_VERSION


def encode_command(cmd: Command) -> bytes:
    return msgspec.msgpack.encode(cmd)


def decode_command(body: bytes) -> Command:
    return msgspec.msgpack.decode(body, type=Command)


def decode_key(body: bytes) -> EndorsedKey:
    return msgspec.msgpack.decode(body, type=EndorsedKey)
