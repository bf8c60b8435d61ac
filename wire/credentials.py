"""Engineer credentials, checked on the terminal with no network at all.

What crosses the console's serial line, so it lives here, below both of its users: the terminal verifies
(``agent.console.service``), the laptop signs (``posfleet diag credential issue``) and answers the challenge
(``posfleet.diagconsole.client``); decision 015.

A credential is an *endorsement* (who, which counties, until when, which public key, an id)
signed by the fleet CA's key. The engineer's private key never leaves the laptop: the
terminal sends a random challenge in ``hello`` and the laptop answers with a signature over
it (plus the terminal SN and session id, so an answer cannot be replayed elsewhere). The
terminal checks, in order: the CA's signature, the proof of possession, the revocation list,
the validity period against its own clock, and that the terminal's county is in scope.

The signed endorsement travels as the exact bytes that were signed (base64), so nothing
depends on both sides serialising JSON identically.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

VERSION = 1
ALL_COUNTIES = "*"
CLOCK_SKEW_S = 300  # a laptop and a terminal may disagree this much about "now" at issue time


class CredentialRefused(Exception):
    """The credential does not allow changing this terminal; the message says why, for the engineer."""


class Endorsement(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    id: str
    engineer: str
    scope: list[str]
    issued: int
    expires: int
    public_key: str  # base64 DER SubjectPublicKeyInfo, EC P-256


class Credential(msgspec.Struct, forbid_unknown_fields=True):
    endorsement: str  # base64 of the JSON bytes the CA signed
    signature: str  # base64 DER ECDSA-SHA256 by the fleet CA


def challenge_message(sn: str, session: str, nonce: str) -> bytes:
    return f"posfleet-console-auth/{VERSION}\n{sn}\n{session}\n{nonce}".encode()


def sign_endorsement(ca_key: ec.EllipticCurvePrivateKey, e: Endorsement) -> Credential:
    body = msgspec.json.encode(e)
    sig = ca_key.sign(body, ec.ECDSA(hashes.SHA256()))
    return Credential(base64.b64encode(body).decode(), base64.b64encode(sig).decode())


def prove(private_key: ec.EllipticCurvePrivateKey, sn: str, session: str, nonce: str) -> str:
    """The laptop's answer to the terminal's challenge (base64)."""
    sig = private_key.sign(challenge_message(sn, session, nonce), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(sig).decode()


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise CredentialRefused(f"{what} is not valid base64") from err


def load_revoked(path: Path | None) -> set[str]:
    """Revoked credential ids: ``{"revoked": [...]}`` as written by ``posfleet diag credential
    revoke``, or one id a line. A configured list that cannot be read refuses everything
    (it may have been tampered with); no list configured means nothing is revoked."""
    if path is None:
        return set()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CredentialRefused(f"revocation list {path} cannot be read ({err.strerror}): refusing") from err
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
            ids = data["revoked"]
            if not isinstance(ids, list):
                raise TypeError("revoked is not a list")
            return {str(i) for i in ids}
        except (ValueError, KeyError, TypeError) as err:
            raise CredentialRefused(f"revocation list {path} is malformed: refusing") from err
    return {line.strip() for line in stripped.splitlines() if line.strip() and not line.startswith("#")}


def verify_endorsement(cred: Credential, ca_cert: x509.Certificate) -> Endorsement:
    """Check the fleet CA's signature; return what it endorses."""
    body = _b64(cred.endorsement, "endorsement")
    sig = _b64(cred.signature, "signature")
    pub = ca_cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise CredentialRefused("the fleet CA certificate does not hold an EC key")
    try:
        pub.verify(sig, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise CredentialRefused("not endorsed by this fleet's CA (signature does not verify)") from err
    try:
        e = msgspec.json.decode(body, type=Endorsement)
    except msgspec.DecodeError as err:
        raise CredentialRefused(f"endorsement is malformed: {err}") from err
    if e.v != VERSION:
        raise CredentialRefused(f"credential version {e.v} is not supported (expected {VERSION})")
    return e


def check_standing(e: Endorsement, *, now: float, county: str, revoked: set[str]) -> None:
    """Revocation, validity period and scope: re-checked before every changing command."""
    if e.id in revoked:
        raise CredentialRefused(f"credential {e.id} of {e.engineer} has been revoked")
    if now >= e.expires:
        raise CredentialRefused(
            f"credential of {e.engineer} expired at {_iso(e.expires)} (terminal clock {_iso(now)})")
    if now + CLOCK_SKEW_S < e.issued:
        raise CredentialRefused(
            f"credential of {e.engineer} is not valid before {_iso(e.issued)} (terminal clock {_iso(now)})")
    if not county:
        raise CredentialRefused("this terminal has no county configured ([console] county): changes refused")
    scope = {s.strip().casefold() for s in e.scope}
    if ALL_COUNTIES not in scope and county.strip().casefold() not in scope:
        raise CredentialRefused(
            f"credential of {e.engineer} covers {', '.join(e.scope) or 'no county'}, not this terminal's {county}")


def verify_proof(e: Endorsement, proof: str, message: bytes) -> None:
    try:
        key = serialization.load_der_public_key(_b64(e.public_key, "public key"))
    except ValueError as err:
        raise CredentialRefused("the endorsed public key cannot be read") from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CredentialRefused("the endorsed public key is not EC")
    try:
        key.verify(_b64(proof, "proof"), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise CredentialRefused("challenge answer does not match the credential's key (wrong key file?)") from err


def verify(cred_data: object, proof: str, *, ca_cert: x509.Certificate, sn: str, session: str, nonce: str,
           now: float, county: str, revoked: set[str]) -> Endorsement:
    """Everything, in order; raises :class:`CredentialRefused` with the first reason."""
    try:
        cred = msgspec.convert(cred_data, Credential)
    except msgspec.ValidationError as err:
        raise CredentialRefused(f"not a credential: {err}") from err
    e = verify_endorsement(cred, ca_cert)
    verify_proof(e, proof, challenge_message(sn, session, nonce))
    check_standing(e, now=now, county=county, revoked=revoked)
    return e


def _iso(ts: float) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return str(ts)
