"""Enrolment on the terminal: the private key is born here and never leaves; only the CSR does.

Run as root into a folder another user owns (the package's /etc/posfleet is posfleet's), the key and the CSR are
given to that folder's owner and group, so the agent's user can read its key without a chown by hand.
"""

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
    owner = _folder_owner(out_dir)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # re-enrolling over a key file with a looser mode must not keep that mode
    if owner is not None:
        os.fchown(fd, *owner)  # before a byte of the key is written
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sn)]))
        .sign(key, hashes.SHA256())
    )
    csr_path = out_dir / "terminal.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    if owner is not None:
        os.chown(csr_path, *owner)
    return key_path, csr_path


def _folder_owner(out_dir: Path) -> tuple[int, int] | None:
    """(uid, gid) of ``out_dir`` when root writes into a folder another user owns, else None."""
    if os.geteuid() != 0:
        return None
    st = out_dir.stat()
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)
