"""The agent's TLS context, and the broker certificate's dates checked against the best time the terminal has.

A terminal whose real-time clock lost its battery boots in the past (or, with a bad RTC, in the future) and may
not have NTP for hours; its broker certificate is then "not yet valid" (or "expired") by its own clock and OpenSSL
refuses every handshake, so it never learns the right time from the server either (issue 13, item 4). The rules:

* The chain (to the fleet CA in ``link.ca_file``), the host name and the key usage are verified by OpenSSL on every
  handshake, always. Nothing here turns that off, and no setting can.
* While the terminal's own clock is *correct as far as it knows* (NTP-synchronised, or never corrected), OpenSSL
  checks the dates too, against the system clock, as before.
* Once the clock has been corrected by the server's time (an offset), OpenSSL's date check would use the wrong
  system clock, so it is turned off (``X509_V_FLAG_NO_CHECK_TIME``) for that handshake and :func:`validity_problem`
  checks the broker certificate and the CA that issued it against the corrected time, right after the handshake and
  before any MQTT byte is sent: the same refusal, against the right clock.
* Only while the clock is **unchecked** and OpenSSL has just refused the broker's certificate for its *dates* alone
  does the next handshake defer the date check (``pending``): the link then publishes nothing but its online state
  and acts on nothing but the server's acknowledgement, whose time (``Ack.time_ms``) is the one the date check is
  done against (:meth:`AgentContext.vouched`). A broker certificate not valid at that time, or a vouched time
  earlier than this terminal's own certificate or the CA (time cannot go back before enrolment), drops the
  connection and is logged as an error; the time is not adopted.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

# cryptography's x509 costs the agent ~8 MB of RSS for good (bench_agent_day): it is imported only when a date check
# of our own is actually needed (a corrected or unchecked clock), which a terminal with a right clock never has.

log = logging.getLogger(__name__)

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME (1.1.0 and later). Python's ssl module has no name for it, but
#: ``SSLContext.verify_flags`` passes any bits through to X509_VERIFY_PARAM_set_flags (checked on Debian 12's
#: Python 3.11.2 with OpenSSL 3.0 and on 3.11.7: the getter shows it as ``VERIFY_X509_TRUSTED_FIRST|2097152``)
NO_CHECK_TIME = 0x200000
#: X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED: the refusals an unchecked clock may cause
DATE_ERRORS = (9, 10)
#: how far the system clock may be from the best known time before OpenSSL's own date check is not used
SYSTEM_CLOCK_SLACK_S = 1.0
DEFER = "defer"


class CertificateTimeError(ssl.SSLCertVerificationError):
    """The broker's certificate (or the CA's) is not valid at the terminal's best known time."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(1, message)
        self.verify_code = code
        self.verify_message = message

    def __str__(self) -> str:
        return f"certificate verify failed: {self.verify_message}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def load_certificates(path: Path) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError):
        return []  # load_verify_locations already refused a file that cannot be read


def validity_problem(leaf_der: bytes, anchors: list[x509.Certificate], at: float) -> tuple[str, int] | None:
    """Why the broker certificate ``leaf_der`` or the CA in ``anchors`` that issued it is not valid at ``at``
    (epoch seconds), with the OpenSSL error code it corresponds to; None when both are."""
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(leaf_der)
    chain = [leaf] + [a for a in anchors if a.subject == leaf.issuer and a != leaf]
    for cert in chain:
        role = "broker certificate" if cert is leaf else "CA certificate"
        start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
        if at < start:
            return (f"the {role} {_name(cert)} is not valid before {_iso(start)} (the time is {_iso(at)})", 9)
        if at > end:
            return (f"the {role} {_name(cert)} expired at {_iso(end)} (the time is {_iso(at)})", 10)
    return None


def time_floor(own_cert: Path, anchors: list[x509.Certificate]) -> float:
    """The earliest plausible time: this terminal's own certificate and the CA were issued before now."""
    starts = [a.not_valid_before_utc.timestamp() for a in anchors]
    own = load_certificates(own_cert)
    if own:
        starts.append(own[0].not_valid_before_utc.timestamp())
    return max(starts, default=0.0)


class _CheckedSocket(ssl.SSLSocket):
    """Runs the context's own date check right after the handshake, before the caller sends anything."""

    _date_check: float | str | None = None

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        ctx = self.context
        if isinstance(ctx, AgentContext):
            ctx.after_handshake(self)


class AgentContext(ssl.SSLContext):
    """Offers the last TLS session again on reconnect (session resumption), and checks the broker certificate's
    dates against the terminal's best known time (see the module's docstring)."""

    saved_session: ssl.SSLSession | None = None
    #: the terminal's best known time when its clock has been checked, None while unchecked; unset (None): the
    #: context is plain, OpenSSL checks the dates with the system clock (the console's netcheck, the simulator)
    best_time: Callable[[], float | None] | None = None
    _ca_file: Path
    _cert_file: Path
    _anchors: list[Any] | None = None
    _floor: float | None = None
    #: set by the link after OpenSSL refused the broker certificate's dates while the clock is unchecked
    defer_dates = False
    #: the broker certificate (DER) of the connection whose date check waits for the server's time
    pending: bytes | None = None
    _local: threading.local

    @property
    def anchors(self) -> list[x509.Certificate]:
        """The fleet CA's certificates, read the first time a date check of our own needs them."""
        if self._anchors is None:
            self._anchors = load_certificates(self._ca_file)
        return self._anchors

    @property
    def floor(self) -> float:
        if self._floor is None:
            self._floor = time_floor(self._cert_file, self.anchors)
        return self._floor

    def wrap_socket(self, sock, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        if self.saved_session is not None and kwargs.get("session") is None:
            kwargs["session"] = self.saved_session
        check = self._date_check_now()
        flags = int(self.verify_flags)
        self.verify_flags = flags | NO_CHECK_TIME if check is not None else flags & ~NO_CHECK_TIME
        self.pending = None
        self._local.check = check  # a socket made with do_handshake_on_connect shakes hands inside wrap_socket
        try:
            ssock = super().wrap_socket(sock, *args, **kwargs)
        finally:
            self._local.check = None
        ssock._date_check = check
        return ssock

    def _date_check_now(self) -> float | str | None:
        """None: OpenSSL checks the dates with the system clock. A time: ours, against it. DEFER: the server's."""
        if self.best_time is None:
            return None
        best = self.best_time()
        if best is None:
            return DEFER if self.defer_dates else None
        return best if abs(best - time.time()) > SYSTEM_CLOCK_SLACK_S else None

    def after_handshake(self, sock: _CheckedSocket) -> None:
        check = sock.__dict__.get("_date_check", getattr(self._local, "check", None))
        if check is None:
            return
        der = sock.getpeercert(binary_form=True)
        if der is None:  # not possible with CERT_REQUIRED; refuse rather than pass
            sock.close()
            raise CertificateTimeError("the broker sent no certificate", 0)
        if check == DEFER:
            self.pending = der
            log.info("the clock is unchecked and the broker certificate is not valid by it: chain and host name "
                     "verified, its dates will be checked against the server's time")
            return
        problem = validity_problem(der, self.anchors, float(check))
        if problem is not None:
            sock.close()
            raise CertificateTimeError(f"{problem[0]} (by the clock as corrected by the server)", problem[1])

    def vouched(self, server_time: float) -> str | None:
        """The server's time arrived on the connection whose date check was deferred: None when the broker
        certificate is valid at that time (the check is done, the time can be adopted), else why not."""
        der, self.pending = self.pending, None
        if der is None:
            return None
        if server_time < self.floor:
            return (f"the server's time {_iso(server_time)} is implausible: earlier than this terminal's certificate "
                    f"or the fleet CA ({_iso(self.floor)})")
        problem = validity_problem(der, self.anchors, server_time)
        return None if problem is None else f"{problem[0]} (by the server's time)"


def agent_context(ca_file: Path, cert_file: Path) -> AgentContext:
    ctx = AgentContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx._local = threading.local()
    ctx.sslsocket_class = _CheckedSocket
    ctx._ca_file, ctx._cert_file = Path(ca_file), Path(cert_file)
    return ctx
