"""The fleet CA: one directory holding the CA key (encrypted at rest), what it issued, and the CRL.

ECDSA P-256 throughout: a full mutual-TLS handshake costs about 4.6 KB on the cellular
link against 7.3 KB with RSA-2048 (measured, docs/performance.md).

Layout of a CA directory::

    ca.pem  ca.key (encrypted)  index.json  crl.pem
    broker.pem broker.key       server-client.pem server-client.key
    mosquitto.conf acl          (written by write_broker_config; the ACL is rewritten from index.json
                                 whenever a certificate is issued or revoked, see write_acl)

Identity on the broker: the certificate's CN is the MQTT username (use_identity_as_username) *and*
the client id (use_username_as_clientid), whatever id the client sends. The fleet server's
identities are ``posfleet-server`` and ``posfleet-server-<name>`` (one per ingest process, each
its own session); no terminal SN may start with ``posfleet-server``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire.topics import RESERVED_NAMES, valid_sn

SERVER_CLIENT_CN = "posfleet-server"
_SERVER_CN_RE = re.compile(r"^posfleet-server(-[a-z0-9][a-z0-9_-]{0,15})?$")


def server_cn_ok(cn: str) -> bool:
    """A name the fleet server's MQTT identities may have: posfleet-server or posfleet-server-<name>."""
    return bool(_SERVER_CN_RE.match(cn))


class CAError(Exception):
    """A CA operation failed; the message says why (wrong passphrase, bad CSR, unknown serial...)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: a world-readable old key must not stay so
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes) -> None:
    """Write a file the broker (another user) must read: 0644 whatever the umask, replaced atomically (a broker
    reloading never reads half a file). An ACL or CRL the broker cannot open on a reload is worse than stale:
    Mosquitto 2.0 then logs "Unable to open acl_file" and lets every client read every topic."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


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
        _write_public(d / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
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
        _refresh_acl(self.dir)
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
        """A renewal keeps the group read access ``broker-config --user`` gave the old key (the broker must still
        read the new one)."""
        old = self.dir / "broker.key"
        prior = old.stat() if old.exists() else None
        cert, key = self.issue_keypair(names[0], "broker", self.dir / "broker", days, san=names)
        if prior is not None and stat.S_IMODE(prior.st_mode) & 0o040:
            os.chown(key, -1, prior.st_gid)
            os.chmod(key, 0o640)
        return cert, key

    def issue_server_client(self, days: int = 825, name: str = SERVER_CLIENT_CN) -> tuple[Path, Path]:
        """The fleet server's MQTT identity. One per ingest process (``posfleet-server-2``...): the broker
        takes the CN as the client id, so two processes sharing one certificate would log each other out.
        Reload the broker afterwards (the ACL grants the server's topics per identity)."""
        if not server_cn_ok(name):
            raise CAError(f"{name!r}: a server identity is posfleet-server or posfleet-server-<name> (a-z, 0-9, -, _)")
        stem = "server-client" if name == SERVER_CLIENT_CN else f"server-client-{name[len(SERVER_CLIENT_CN) + 1:]}"
        return self.issue_keypair(name, "server", self.dir / stem, days)

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
        if cn.lower() in RESERVED_NAMES or not valid_sn(cn) or cn.lower().startswith(SERVER_CLIENT_CN):
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
        _refresh_acl(self.dir)
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
        _write_public(path, crl.public_bytes(serialization.Encoding.PEM))
        return path


def _read_index(ca_dir: Path) -> list[Issued]:
    path = ca_dir / "index.json"
    return [Issued(**row) for row in json.loads(path.read_text())] if path.exists() else []


def identities(ca_dir: Path) -> tuple[list[str], list[str]]:
    """From the CA's index: (server identities with a certificate in force, CNs every certificate of which
    is revoked). A CN that still has one certificate in force is not in the second list: its holder must
    keep working; a revoked copy's open session is then logged out by the holder's next connect (same
    client id) and cannot come back (CRL)."""
    rows = _read_index(ca_dir)
    live = {r.cn for r in rows if not r.revoked}
    servers = sorted({r.cn for r in rows if r.kind == "server" and not r.revoked and server_cn_ok(r.cn)})
    dead = sorted({r.cn for r in rows if r.kind in ("server", "terminal") and r.cn not in live})
    return servers, dead


def acl_text(server_cns: list[str] | tuple[str, ...] = (SERVER_CLIENT_CN,), revoked_cns: list[str] | tuple[str, ...] = ()) -> str:
    """The broker's ACL (docs/decisions/011-broker-identity-and-acl.md).

    mosquitto 2.0's acl_file checks publishes and deliveries only: every SUBSCRIBE is granted (the
    default ACL check returns success for subscriptions). A terminal's subscription to another unit's
    topic, ``#`` or ``$SYS/#`` therefore gets a SUBACK but never a message (the read check drops each
    delivery); the one subscription that could do harm, joining the server's shared-subscription group,
    is kept out by the group's name being a secret of the server (server/settings.py, ``share_group``)."""
    out = ["# posfleet broker ACL (generated from the CA's index.json by posfleet ca broker-config / sign / revoke).",
           "# Identity = certificate CN = client id. Reload the broker (SIGHUP) after a change.", ""]
    for cn in server_cns:
        out += [f"# The fleet server ({cn}): reads every terminal's telemetry, state and results; writes acks, commands and renewed certificates.",
                f"user {cn}", "topic read pf/+/t", "topic read pf/+/s", "topic read pf/+/r",
                "topic write pf/+/a", "topic write pf/+/c", "topic write pf/+/x", ""]
    for cn in revoked_cns:
        # a user's own rules are checked before the patterns and a matching deny wins: nothing from or to
        # this identity passes once the broker has reloaded, even on a session that was open at revocation
        out += [f"# revoked: every certificate of {cn}", f"user {cn}", "topic deny #", ""]
    out += ["# Every terminal: only under its own SN.",
            "pattern write pf/%u/t", "pattern write pf/%u/s", "pattern write pf/%u/p", "pattern write pf/%u/r",
            "pattern read pf/%u/a", "pattern read pf/%u/c", "pattern read pf/%u/x", ""]
    return "\n".join(out)


def write_acl(ca_dir: Path) -> Path:
    """(Re)write ``ca_dir/acl`` from the index, atomically (a broker reloading must never read half a file)."""
    servers, dead = identities(ca_dir)
    path = ca_dir / "acl"
    _write_public(path, acl_text(servers or [SERVER_CLIENT_CN], dead).encode())
    return path


def _refresh_acl(ca_dir: Path) -> None:
    if (ca_dir / "acl").exists():
        write_acl(ca_dir)


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
# The client id is the certificate's CN too, whatever the client sends: a certificate can hold only its
# own session, so nobody can log a unit (or the server, posfleet-server) out by connecting under its id.
use_username_as_clientid true
tls_version tlsv1.2
"""


def write_broker_config(ca_dir: Path, port: int, bind: str = "127.0.0.1", data_dir: Path | None = None,
                        user: str = "", name: str = "mosquitto.conf") -> Path:
    write_acl(ca_dir)
    conf = ca_dir / name
    _write_public(conf, mosquitto_conf(ca_dir, port, bind, data_dir, user).encode())
    if user:
        broker_key_for(ca_dir, user)
    return conf


def broker_key_for(ca_dir: Path, user: str) -> None:
    """Let ``user`` (the account mosquitto drops to) read broker.key: group-owned by that user's group, 0640.
    As root only (nobody else can chgrp to a group it is not in); otherwise :class:`CAError` says what to run."""
    import grp
    import pwd

    key = ca_dir / "broker.key"
    if not key.exists():
        return
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError as err:
        raise CAError(f"--user {user!r}: no such user on this machine (install mosquitto first)") from err
    st = key.stat()
    if st.st_gid == gid and stat.S_IMODE(st.st_mode) == 0o640:
        return
    if os.geteuid() != 0 and st.st_uid == os.geteuid() and gid not in os.getgroups():
        raise CAError(f"{key}: the broker's user {user!r} cannot read it; as root run: "
                      f"chgrp {grp.getgrgid(gid).gr_name} {key} && chmod 0640 {key}")
    os.chown(key, -1, gid)
    os.chmod(key, 0o640)
