"""Signing keys for commands and update packages: Ed25519, endorsed by the fleet CA.

A key directory holds ``<purpose>.key`` (PKCS#8 PEM, mode 0600) and ``<purpose>.endorsement``
(msgpack of :class:`wire.commands.Endorsement`). Rotation is a new pair: terminals accept every
key the fleet CA endorsed that is not expired and not listed in their ``revoked_keys``.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from wire.commands import EndorsedKey, Endorsement
from wire.signing import endorse, sign_ed25519

PURPOSES = ("command", "update")


class SigningKeyError(ValueError):
    """A signing key or endorsement file is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_raw: bytes
    endorsement: Endorsement
    purpose: str
    not_after: int

    def sign(self, data: bytes) -> bytes:
        return sign_ed25519(self.private_raw, data)


def make_key(ca: object, out_dir: Path, purpose: str = "command", days: int = 365,
             key_id: str = "") -> tuple[Path, Path, EndorsedKey]:
    """Generate an Ed25519 key and the fleet CA's endorsement (``ca`` is a pki.ca.FleetCA)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if purpose not in PURPOSES:
        raise ValueError(f"purpose: must be one of {', '.join(PURPOSES)}")
    if days < 1:
        raise ValueError("days: must be at least 1")
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = key_id or f"{purpose}-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
    statement = EndorsedKey(key_id=key_id, public_key=pub, purpose=purpose, not_after=int(time.time()) + days * 86400)
    endorsement = endorse(ca.key, statement)  # type: ignore[attr-defined]
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / f"{purpose}.key"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = out_dir / f".{purpose}.key.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    endo_path = out_dir / f"{purpose}.endorsement"
    endo_tmp = out_dir / f".{purpose}.endorsement.tmp"
    endo_tmp.write_bytes(msgspec.msgpack.encode(endorsement))
    os.replace(tmp, key_path)
    os.replace(endo_tmp, endo_path)
    return key_path, endo_path, statement


def load_key(key_file: Path, endorsement_file: Path, purpose: str = "command") -> SigningKey:
    """Load a key and its endorsement, checking that they belong together and fit ``purpose``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wire.commands import decode_key

    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except OSError as err:
        raise SigningKeyError(f"{key_file}: cannot read: {err.strerror}") from err
    except (ValueError, TypeError) as err:
        raise SigningKeyError(f"{key_file}: not an unencrypted PEM private key") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{key_file}: not an Ed25519 key")
    try:
        endorsement = msgspec.msgpack.decode(endorsement_file.read_bytes(), type=Endorsement)
        statement = decode_key(endorsement.body)
    except OSError as err:
        raise SigningKeyError(f"{endorsement_file}: cannot read: {err.strerror}") from err
    except msgspec.DecodeError as err:
        raise SigningKeyError(f"{endorsement_file}: not an endorsement: {err}") from err
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if pub != statement.public_key:
        raise SigningKeyError(f"{endorsement_file}: endorses another key than {key_file}")
    if statement.purpose != purpose:
        raise SigningKeyError(f"{endorsement_file}: key is endorsed for {statement.purpose!r}, not {purpose!r}")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return SigningKey(statement.key_id, raw, endorsement, statement.purpose, statement.not_after)
