"""The broker certificate's dates against the terminal's best known time (agent/tls.py), with real TLS handshakes on
loopback against brokers whose certificates are not yet valid, expired, for another name or from another CA. The
system clock cannot be moved in-process, so a certificate dated in the future stands for a clock behind it."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.link import tls_context
from agent.tls import DEFER, NO_CHECK_TIME, AgentContext, CertificateTimeError, validity_problem
from simulator.local import PASS, Pki

DAY = 86400.0


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def broker_cert(pki: Pki, d: Path, *, start: float, days: float, name: str = "localhost",
                self_signed: bool = False) -> tuple[Path, Path]:
    """A broker certificate signed by the fleet CA (or by itself) valid from ``start`` for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key = key if self_signed else pki.ca.key
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]) if self_signed else pki.ca.cert.subject
    not_before = dt.datetime.fromtimestamp(start, dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    (d / "b.pem").write_bytes(_pem(cert))
    (d / "b.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return d / "b.pem", d / "b.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    assert PASS
    return Pki(tmp_path_factory.mktemp("pki"))


class TlsServer:
    """Accepts TLS connections in a thread (client certificate optional: the broker's check is not under test)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(pki: Pki, tmp_path: Path) -> Iterator:
    servers: list[TlsServer] = []

    def make(**kw) -> TlsServer:  # type: ignore[no-untyped-def]
        s = TlsServer(*broker_cert(pki, tmp_path / f"b{len(servers)}", **kw))
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def agent_ctx(pki: Pki, best: float | None, defer: bool = False) -> AgentContext:
    t = pki.terminal("HN00130009")
    ctx = tls_context(t / "ca.pem", t / "terminal.pem", t / "terminal.key")
    assert isinstance(ctx, AgentContext)
    ctx.best_time = lambda: best
    ctx.defer_dates = defer
    return ctx


def handshake(ctx: ssl.SSLContext, port: int, name: str = "localhost") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        ctx.wrap_socket(raw, server_hostname=name).close()


def test_a_clock_behind_the_certificate_is_refused_until_the_dates_are_deferred(pki: Pki, serve) -> None:  # type: ignore[no-untyped-def]
    b = serve(start=time.time() + 540 * DAY, days=365)  # the terminal's clock is 18 months behind it
    # the clock unchecked: OpenSSL checks the dates with the system clock first, as before
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(agent_ctx(pki, None), b.port)
    assert err.value.verify_code == 9, err.value
    # the link saw that refusal (dates only) and defers them: the handshake passes, the certificate is kept
    ctx = agent_ctx(pki, None, defer=True)
    handshake(ctx, b.port)
    assert ctx.verify_flags & NO_CHECK_TIME and ctx.pending is not None
    # ... for the server's time: inside the validity it is done, outside it is refused and the time not adopted
    assert ctx.vouched(time.time() + 600 * DAY) is None and ctx.pending is None
    handshake(ctx, b.port)
    why = ctx.vouched(time.time())
    assert why is not None and "not valid before" in why and "by the server's time" in why


def test_a_corrected_clock_checks_the_dates_itself(pki: Pki, serve) -> None:  # type: ignore[no-untyped-def]
    b = serve(start=time.time() + 540 * DAY, days=365)
    ctx = agent_ctx(pki, time.time() + 541 * DAY)  # the server's offset says it is 541 days later than the system clock
    handshake(ctx, b.port)
    assert ctx.verify_flags & NO_CHECK_TIME and ctx.pending is None, "checked at once, nothing deferred"
    ctx = agent_ctx(pki, time.time() + 1000 * DAY)  # by the corrected clock it has expired
    with pytest.raises(CertificateTimeError) as err:
        handshake(ctx, b.port)
    assert err.value.verify_code == 10 and "expired" in str(err.value)
    # a clock checked and right: OpenSSL's own check, the flag cleared again
    ctx = agent_ctx(pki, time.time())
    with pytest.raises(ssl.SSLCertVerificationError) as err2:
        handshake(ctx, b.port)
    assert err2.value.verify_code == 9 and not ctx.verify_flags & NO_CHECK_TIME


@pytest.mark.parametrize("case", ["other-name", "self-signed"])
def test_chain_and_name_are_verified_even_with_the_dates_deferred(pki: Pki, serve, case: str) -> None:  # type: ignore[no-untyped-def]
    if case == "other-name":
        b = serve(start=time.time() + 540 * DAY, days=365, name="broker.elsewhere")
    else:
        b = serve(start=time.time() + 540 * DAY, days=365, self_signed=True)
    ctx = agent_ctx(pki, None, defer=True)
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(ctx, b.port)
    assert err.value.verify_code in (18, 20, 62), err.value  # self-signed, unknown issuer, host name mismatch
    assert ctx.pending is None


def test_an_implausible_server_time_is_refused(pki: Pki, serve) -> None:  # type: ignore[no-untyped-def]
    # a broker certificate issued years ago, still valid; a server claiming a time before this terminal was enrolled
    b = serve(start=time.time() - 900 * DAY, days=3650)
    ctx = agent_ctx(pki, None, defer=True)
    handshake(ctx, b.port)
    why = ctx.vouched(time.time() - 400 * DAY)
    assert why is not None and "implausible" in why


def test_without_a_clock_the_context_is_plain(pki: Pki, serve) -> None:  # type: ignore[no-untyped-def]
    """The console's netcheck and the simulator (no best_time): OpenSSL checks the dates, nothing is deferred."""
    b = serve(start=time.time() + 540 * DAY, days=365)
    t = pki.terminal("HN00130009")
    ctx = tls_context(t / "ca.pem", t / "terminal.pem", t / "terminal.key")
    ctx.defer_dates = True  # type: ignore[attr-defined]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ctx, b.port)


def test_validity_problem_covers_the_ca_too(pki: Pki, tmp_path: Path) -> None:
    cert, _ = broker_cert(pki, tmp_path, start=time.time() - DAY, days=30)
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert validity_problem(der, [pki.ca.cert], time.time()) is None
    ca_end = pki.ca.cert.not_valid_after_utc.timestamp()
    leaf_only = validity_problem(der, [], ca_end + DAY)
    assert leaf_only is not None and leaf_only[1] == 10
    why = validity_problem(der, [pki.ca.cert], pki.ca.cert.not_valid_before_utc.timestamp() - 60)
    assert why is not None and "not valid before" in why[0] and why[1] == 9
    assert DEFER == "defer"
