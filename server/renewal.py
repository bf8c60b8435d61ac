"""Terminals' certificate renewal over the air, the server's part (issue 17; docs/decisions/026-certificate-renewal.md).

1. A terminal whose certificate nears its end makes a new key and asks with a ``cert_request`` event (its CSR) in
   its telemetry: durable in its outbox until this server commits it. The request is checked here (signature, CN =
   the unit's SN, which the broker's ACL ties to the certificate it connected with, a P-256 key) and recorded
   (``requested``); a wrong one is counted and logged, never recorded.
2. The server holds no CA key. ``posfleet ca sign-renewals`` on the CA's host (the CA passphrase asked there, or
   from an encrypted systemd credential) signs every ``requested`` record and puts the certificate in (``signed``).
3. This server sends the certificate to the unit on ``pf/<sn>/x`` (the leader, every ``DELIVER_EVERY_S`` until the
   unit says it switched, and at once whenever the unit asks again with the same key).
4. The terminal connects with the new certificate, keeps it, drops the old one and says so with a ``cert_switched``
   event (``switched``); the server acknowledges on ``pf/<sn>/x`` (``done``: the terminal stops saying it).
5. The next ``posfleet ca sign-renewals`` revokes the unit's older certificates (CRL rewritten; reload the broker)
   and marks the record ``done``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from wire import codec, topics
from wire.messages import CERT_REQUEST, CERT_SWITCHED, Certificate

from .settings import Settings
from .storage import renewals as store
from .tasks import cancel

log = logging.getLogger(__name__)

DELIVER_EVERY_S = 3600.0  # a signed certificate not yet switched to is sent again this often
PASS_EVERY_S = 5.0  # how soon a certificate the CA signed is sent (one small read of meta a pass)


class CsrError(ValueError):
    pass


def check_csr(pem: str, sn: str) -> str:
    """The request's public-key fingerprint (hex) if it is a valid request of unit ``sn`` for a P-256 key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as err:
        raise CsrError(f"not a PEM certificate request: {err}") from err
    if not csr.is_signature_valid:
        raise CsrError("the request's signature does not verify")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != sn:
        raise CsrError(f"the request's CN must be the unit's SN {sn!r}")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise CsrError("the key must be EC P-256")
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


class Renewals:
    def __init__(self, settings: Settings, storage: Any, ingest: Any, clock: Any) -> None:
        self.settings = settings
        self.storage = storage
        self.ingest = ingest
        self.clock = clock
        self._events: list[tuple[str, str, dict[str, Any], int]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.refused: Counter[str] = Counter()

    def on_committed(self, samples: Iterable[Any], events: Iterable[Any]) -> None:
        """Ingest hook (cheap): note the renewal events just committed; the task records them."""
        for e in events:
            if e.kind in (CERT_REQUEST, CERT_SWITCHED):
                self._events.append((e.sn, e.kind, dict(e.data), int(e.ts)))
                self._wake.set()

    async def start(self, deliver: bool) -> None:
        """Record what this process ingests; ``deliver``: also (re)send signed certificates (the leader)."""
        self._tasks.append(asyncio.create_task(self._loop(deliver), name="renewals"))

    async def start_delivery(self) -> None:
        await cancel(self._tasks)
        self._tasks = [asyncio.create_task(self._loop(True), name="renewals")]

    async def stop(self) -> None:
        await cancel(self._tasks)

    async def _loop(self, deliver: bool) -> None:
        while True:
            try:
                await self.apply()
                if deliver:
                    await self.deliver()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("certificate renewals: a pass failed")
            try:
                async with asyncio.timeout(PASS_EVERY_S):  # not wait_for, which on 3.11 can swallow a cancel
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def apply(self) -> None:
        """Record the renewal events noted since the last pass."""
        events, self._events = self._events, []
        for sn, kind, data, ts in events:
            if kind == CERT_REQUEST:
                await self.request(sn, str(data.get("csr") or ""), ts)
            else:
                await self.switched(sn, str(data.get("serial") or ""), ts)

    async def request(self, sn: str, csr: str, ts: int) -> str:
        """A unit's request: recorded (or answered at once when signed already). Returns what was done."""
        if not self.settings.pki.renewal:
            self.refused["disabled"] += 1
            return "disabled"
        try:
            pub = check_csr(csr, sn)
        except CsrError as err:
            self.refused["bad_csr"] += 1
            log.warning("certificate renewal request from %s refused: %s", sn, err)
            return "refused"
        rec = await store.get(self.storage, sn)
        if rec is not None and rec.get("pub") == pub:
            if rec["state"] == "signed":
                self.send(sn, Certificate(cert=rec["cert"]))
                return "sent"
            return rec["state"]  # requested (the CA has not signed yet), switched, done: nothing new
        await store.put(self.storage, sn, {"state": "requested", "csr": csr, "pub": pub, "requested": ts,
                                           "received": time.time()})
        log.info("certificate renewal requested by %s (key %s); sign with posfleet ca sign-renewals", sn, pub[:12])
        return "requested"

    async def switched(self, sn: str, serial: str, ts: int) -> str:
        rec = await store.get(self.storage, sn)
        if rec is None or rec.get("serial") != serial or rec["state"] not in ("signed", "switched", "done"):
            self.refused["unknown_switch"] += 1
            log.warning("%s says it switched to certificate %s, which no renewal of ours issued", sn, serial[:40])
            return "unknown"
        if rec["state"] == "signed":
            rec.update(state="switched", switched=ts)
            await store.put(self.storage, sn, rec)
            log.info("%s connects with its renewed certificate %s; the old one is revoked at the next "
                     "posfleet ca sign-renewals", sn, serial)
        self.send(sn, Certificate(done=serial))
        return rec["state"]

    async def deliver(self) -> int:
        """Send every signed certificate not sent within ``DELIVER_EVERY_S``; returns how many were sent."""
        n = 0
        now = time.time()
        for rec in await store.every(self.storage, "signed"):
            if now - float(rec.get("sent") or 0) < DELIVER_EVERY_S:
                continue
            if self.send(rec["sn"], Certificate(cert=rec["cert"])):
                rec["sent"] = now
                await store.put(self.storage, rec["sn"], rec)
                n += 1
        return n

    def send(self, sn: str, msg: Certificate) -> bool:
        return bool(self.ingest.publish(topics.topic(sn, topics.CERT), codec.encode(msg), 1))
