"""Signing helpers (``cryptography``, imported lazily: a terminal verifies in a short-lived child process,
:func:`verify_detached`, so the agent itself never loads it; see docs/decisions/019-verify-in-a-child.md).

* Ed25519 for commands and update packages (small signatures, fast to verify on a terminal);
* the fleet CA's EC P-256 key endorses those Ed25519 keys (ECDSA-SHA256), so terminals need
  only the CA certificate they already have for TLS.
"""

from __future__ import annotations

import subprocess
import sys
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


def verify_endorsed(ca_cert_file: Path, endorsement: Endorsement, purpose: str, data: bytes, sig: bytes,
                    now: float | None = None, revoked: frozenset[str] = frozenset()) -> EndorsedKey:
    """Both checks in one: the fleet CA (its certificate file) endorsed the key for ``purpose``, and that key
    signed ``data``. Returns the endorsed key or raises SignatureError."""
    try:
        ca_public = ca_public_key(ca_cert_file)
    except (OSError, ValueError) as err:
        raise SignatureError(f"fleet CA certificate {ca_cert_file} unreadable: {err}") from err
    key = check_endorsement(ca_public, endorsement, purpose, now, revoked)
    verify_ed25519(key.public_key, data, sig)
    return key


class _Job(msgspec.Struct):
    ca_cert_file: str
    endorsement: Endorsement
    purpose: str
    data: bytes
    sig: bytes
    now: float
    revoked: list[str]


class _Answer(msgspec.Struct):
    key: EndorsedKey | None = None
    error: str = ""


VERIFY_TIMEOUT_S = 60.0


def verify_detached(ca_cert_file: Path, endorsement: Endorsement, purpose: str, data: bytes, sig: bytes,
                    now: float, revoked: frozenset[str] = frozenset(),
                    timeout: float = VERIFY_TIMEOUT_S) -> EndorsedKey:
    """:func:`verify_endorsed` in a fresh interpreter (``python -P -m wire.signing``): ``cryptography`` and its
    OpenSSL cost a long-running process ~10 MB of RSS for good once imported, while a terminal checks a
    signature a few times a day. A fresh process (not a fork: the agent has threads) costs ~0.2 s of CPU a
    check and its memory is returned when it exits. Raises SignatureError for a bad signature, and also when
    the verifier itself cannot run (then nothing signed is trusted)."""
    job = msgspec.msgpack.encode(_Job(str(ca_cert_file), endorsement, purpose, data, sig, now, sorted(revoked)))
    try:
        proc = subprocess.run([sys.executable, "-P", "-m", "wire.signing"], input=job, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SignatureError(f"signature verifier could not run: {err}") from err
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise SignatureError(f"signature verifier failed: {tail[0][:300]}")
    try:
        answer = msgspec.msgpack.decode(proc.stdout, type=_Answer)
    except msgspec.DecodeError as err:
        raise SignatureError(f"signature verifier answered unreadably: {err}") from err
    if answer.error or answer.key is None:
        raise SignatureError(answer.error or "signature verifier gave no key")
    return answer.key


def _main() -> None:
    """The child's side of :func:`verify_detached`: one job on stdin, one answer on stdout."""
    job = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=_Job)
    try:
        key = verify_endorsed(Path(job.ca_cert_file), job.endorsement, job.purpose, job.data, job.sig, job.now,
                              frozenset(job.revoked))
        answer = _Answer(key=key)
    except SignatureError as err:
        answer = _Answer(error=str(err))
    sys.stdout.buffer.write(msgspec.msgpack.encode(answer))


if __name__ == "__main__":
    _main()
