"""Enrolment on the terminal: the private key is born here and never leaves; only the CSR does."""

from __future__ import annotations

import os
from pathlib import Path


def make_key_and_csr(sn: str, out_dir: Path, passphrase: str = "") -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from wire.topics import valid_sn

    if not valid_sn(sn):
        raise ValueError(f"sn: {sn!r} is not a valid terminal SN")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    key_path = out_dir / "terminal.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # re-enrolling over a key file with a looser mode must not keep that mode
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sn)]))
        .sign(key, hashes.SHA256())
    )
    csr_path = out_dir / "terminal.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return key_path, csr_path
