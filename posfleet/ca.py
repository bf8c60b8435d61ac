"""The fleet CA: one directory holding the CA key (encrypted at rest), what it issued, and the CRL.

ECDSA P-256 throughout: a full mutual-TLS handshake costs about 4.6 KB on the cellular
link against 7.3 KB with RSA-2048 (measured, docs/performance.md).

Layout of a CA directory::

    ca.pem  ca.key (encrypted)  index.json  crl.pem
    broker.pem broker.key       server-client.pem server-client.key
    mosquitto.conf acl          (written by write_broker_config)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire.topics import RESERVED_NAMES, valid_sn

SERVER_CLIENT_CN = "posfleet-server"


class CAError(Exception):
    """A CA operation failed; the message says why (wrong passphrase, bad CSR, unknown serial...)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: str = "") -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass
class Issued:
    serial: int
    cn: str
    kind: str
    not_after: str
    revoked: str = ""


class FleetCA:
    def __init__(self, directory: str | Path, passphrase: str) -> None:
        self.dir = Path(directory)
        self.passphrase = passphrase
        if not (self.dir / "ca.pem").is_file():
            raise CAError(f"{self.dir}: no fleet CA here (run `posfleet ca init`)")
        self.cert = x509.load_pem_x509_certificate((self.dir / "ca.pem").read_bytes())
        try:
            key = serialization.load_pem_private_key(
                (self.dir / "ca.key").read_bytes(), passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError) as err:
            raise CAError("cannot unlock the CA key: wrong passphrase?") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError("CA key is not an EC key")
        self.key = key

    # creation ------------------------------------------------------------------
    @classmethod
    def init(cls, directory: str | Path, passphrase: str, name: str = "posfleet fleet CA", days: int = 3650) -> FleetCA:
        d = Path(directory)
        if (d / "ca.pem").exists():
            raise CAError(f"{d}: a fleet CA already exists here")
        if len(passphrase) < 8:
            raise CAError("the CA passphrase must have at least 8 characters")
        d.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        (d / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(d / "ca.key", _key_pem(key, passphrase))
        (d / "index.json").write_text("[]")
        ca = cls(d, passphrase)
        ca.write_crl()
        return ca

    # index --------------------------------------------------------------------
    def _index(self) -> list[Issued]:
        path = self.dir / "index.json"
        return [Issued(**row) for row in json.loads(path.read_text())] if path.exists() else []

    def _save_index(self, rows: list[Issued]) -> None:
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
        tmp.replace(self.dir / "index.json")

    def issued(self) -> list[Issued]:
        return self._index()

    # issuing -------------------------------------------------------------------
    def _sign(self, public_key: ec.EllipticCurvePublicKey, cn: str, kind: str, days: int,
              san: list[str] | None = None) -> x509.Certificate:
        serial = x509.random_serial_number()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(public_key).serial_number(serial)
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if san:
            names: list[x509.GeneralName] = []
            for n in san:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    names.append(x509.DNSName(n))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        rows = self._index()
        rows.append(Issued(serial, cn, kind, cert.not_valid_after_utc.isoformat()))
        self._save_index(rows)
        return cert

    def issue_keypair(self, cn: str, kind: str, out_stem: Path, days: int = 825,
                      san: list[str] | None = None) -> tuple[Path, Path]:
        """Make a key and certificate here (broker, server client); for terminals use sign_csr."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(key.public_key(), cn, kind, days, san)
        cert_path, key_path = out_stem.with_suffix(".pem"), out_stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_path, _key_pem(key))
        return cert_path, key_path

    def issue_broker(self, names: list[str], days: int = 825) -> tuple[Path, Path]:
        return self.issue_keypair(names[0], "broker", self.dir / "broker", days, san=names)

    def issue_server_client(self, days: int = 825) -> tuple[Path, Path]:
        return self.issue_keypair(SERVER_CLIENT_CN, "server", self.dir / "server-client", days)

    def sign_csr(self, csr_pem: bytes, days: int = 825, expect_sn: str = "") -> bytes:
        """Sign a terminal's CSR (its key never left the terminal). CN must be a valid SN."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise CAError(f"not a PEM certificate request: {err}") from err
        if not csr.is_signature_valid:
            raise CAError("the request's signature does not verify")
        attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(attrs) != 1:
            raise CAError("the request must have exactly one CN (the terminal SN)")
        cn = str(attrs[0].value)
        if cn.lower() in RESERVED_NAMES or not valid_sn(cn):
            raise CAError(f"CN {cn!r} is not a valid terminal SN")
        if expect_sn and cn != expect_sn:
            raise CAError(f"request is for {cn!r}, expected {expect_sn!r}")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise CAError("terminal keys must be EC (P-256)")
        cert = self._sign(pub, cn, "terminal", days)
        return cert.public_bytes(serialization.Encoding.PEM)

    # revocation -----------------------------------------------------------------
    def revoke(self, serial: int | None = None, cn: str = "") -> list[Issued]:
        rows = self._index()
        hit = [r for r in rows if not r.revoked and ((serial is not None and r.serial == serial) or (cn and r.cn == cn))]
        if not hit:
            raise CAError(f"nothing issued matches serial={serial} cn={cn!r}")
        for r in hit:
            r.revoked = _now().isoformat()
        self._save_index(rows)
        self.write_crl()
        return hit

    def write_crl(self, days: int = 30) -> Path:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject).last_update(_now() - dt.timedelta(minutes=5))
            .next_update(_now() + dt.timedelta(days=days))
        )
        for r in self._index():
            if r.revoked:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(r.serial)
                    .revocation_date(dt.datetime.fromisoformat(r.revoked)).build()
                )
        crl = builder.sign(self.key, hashes.SHA256())
        path = self.dir / "crl.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


def acl_text(server_cn: str = SERVER_CLIENT_CN) -> str:
    return f"""# posfleet broker ACL (generated). Identity = certificate CN.
# The fleet server: reads every terminal's telemetry, state and results; writes acks and commands.
user {server_cn}
topic read pf/+/t
topic read pf/+/s
topic read pf/+/r
topic write pf/+/a
topic write pf/+/c

# Every terminal: only under its own SN.
pattern write pf/%u/t
pattern write pf/%u/s
pattern write pf/%u/p
pattern write pf/%u/r
pattern read pf/%u/a
pattern read pf/%u/c
"""


def mosquitto_conf(ca_dir: Path, port: int, bind: str = "127.0.0.1", data_dir: Path | None = None,
                   user: str = "") -> str:
    """``user``: the account mosquitto drops to when started as root; it must be able to read broker.key."""
    d = ca_dir.resolve()
    user_line = f"user {user}\n" if user else ""
    persistence = (
        f"persistence true\npersistence_location {data_dir.resolve()}/\nautosave_interval 30\n" if data_dir else "persistence false\n"
    )
    return f"""# posfleet broker configuration (generated by `posfleet ca broker-config`).
{user_line}per_listener_settings false
allow_anonymous false
acl_file {d}/acl
{persistence}
# A subscriber that falls behind (the fleet server during a restart or a backlog) must not have
# QoS 1 messages silently dropped: mosquitto's default max_queued_messages is 1000.
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 100
# Large enough that an oversize payload reaches the server, which refuses and counts it.
max_packet_size 16777216
# Without this every connect stalls ~40 ms on Nagle's algorithm.
set_tcp_nodelay true
log_type error
log_type warning
log_type notice
connection_messages true

# TLS only: there is no plain-TCP listener at all.
listener {port} {bind}
protocol mqtt
cafile {d}/ca.pem
certfile {d}/broker.pem
keyfile {d}/broker.key
crlfile {d}/crl.pem
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
"""


def write_broker_config(ca_dir: Path, port: int, bind: str = "127.0.0.1", data_dir: Path | None = None,
                        user: str = "", name: str = "mosquitto.conf") -> Path:
    (ca_dir / "acl").write_text(acl_text())
    conf = ca_dir / name
    conf.write_text(mosquitto_conf(ca_dir, port, bind, data_dir, user))
    return conf
