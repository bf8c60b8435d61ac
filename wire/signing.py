"""Signing helpers (``cryptography``, imported lazily so the agent pays for it only when a command comes).

* Ed25519 for commands and update packages (small signatures, fast to verify on a terminal);
* the fleet CA's EC P-256 key endorses those Ed25519 keys (ECDSA-SHA256), so terminals need
  only the CA certificate they already have for TLS.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from .commands import EndorsedKey, Endorsement, decode_key


class SignatureError(ValueError):
    """A signature, endorsement or key did not verify; the message says which."""


def new_ed25519_key() -> tuple[bytes, bytes]:
    """(private raw 32 bytes, public raw 32 bytes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    priv = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return priv, pub


def sign_ed25519(private_raw: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(private_raw).sign(data)


def verify_ed25519(public_raw: bytes, data: bytes, sig: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(sig, data)
    except (InvalidSignature, ValueError) as err:
        raise SignatureError("signature does not verify") from err


def endorse(ca_private_key: object, key: EndorsedKey) -> Endorsement:
    """Sign a key statement with the fleet CA's EC private key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    body = msgspec.msgpack.encode(key)
    sig = ca_private_key.sign(body, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    return Endorsement(body=body, sig=sig)


def ca_public_key(ca_cert_file: Path) -> object:
    from cryptography import x509

    return x509.load_pem_x509_certificate(ca_cert_file.read_bytes()).public_key()


def check_endorsement(ca_public: object, endorsement: Endorsement, purpose: str, now: float | None = None,
                      revoked: frozenset[str] = frozenset()) -> EndorsedKey:
    """Verify the CA's endorsement of a key; returns the endorsed key or raises SignatureError."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        ca_public.verify(endorsement.sig, endorsement.body, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    except (InvalidSignature, ValueError, TypeError) as err:
        raise SignatureError("key endorsement is not signed by the fleet CA") from err
    try:
        key = decode_key(endorsement.body)
    except msgspec.DecodeError as err:
        raise SignatureError(f"endorsement body unreadable: {err}") from err
    if key.purpose != purpose:
        raise SignatureError(f"key {key.key_id} is endorsed for {key.purpose!r}, not {purpose!r}")
    if key.key_id in revoked:
        raise SignatureError(f"key {key.key_id} is revoked")
    if (now if now is not None else time.time()) > key.not_after:
        raise SignatureError(f"key {key.key_id} endorsement expired")
    return key
