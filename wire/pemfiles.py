"""Checking the PEM files a configuration names, before anything starts (agent and server alike).

Each check returns :class:`Problem` s that name the dotted setting and the path: the file exists, is a regular
file, can be read by the user running this process, parses as what it should be (certificates, a private key),
the key belongs to the certificate, and the certificate has not expired. A certificate not yet valid is only a
warning (a clock behind, which the agent's clock handling copes with: docs/agent.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    setting: str  # dotted, as written in the configuration file (``mqtt.ca_file``)
    path: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.setting}: {self.path}: {self.message}" if self.path else f"{self.setting}: {self.message}"


def running_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def read_file(setting: str, path: Path, problems: list[Problem]) -> bytes | None:
    """The file's bytes, or None with a problem: missing, not a file, not readable by this user."""
    where = str(path)
    if not str(path) or not path.name:
        problems.append(Problem(setting, where, "no file named"))
        return None
    try:
        st = path.stat()
    except FileNotFoundError:
        problems.append(Problem(setting, where, "no such file"))
        return None
    except OSError as err:  # e.g. a folder on the way not searchable by this user
        problems.append(Problem(setting, where, f"cannot be reached by user {running_user()}: {err.strerror}"))
        return None
    if not path.is_file():
        problems.append(Problem(setting, where, "not a regular file" + (" (a folder)" if path.is_dir() else "")))
        return None
    try:
        return path.read_bytes()
    except PermissionError:
        mode = f"{st.st_mode & 0o777:04o}"
        problems.append(Problem(setting, where, f"not readable by user {running_user()} (owner uid {st.st_uid}, "
                                                f"group gid {st.st_gid}, mode {mode})"))
    except OSError as err:
        problems.append(Problem(setting, where, f"cannot read: {err.strerror}"))
    return None


def _when(d: datetime) -> str:
    return d.strftime("%Y-%m-%d %H:%M UTC")


def certificates(setting: str, path: Path, problems: list[Problem], now: float | None = None,
                 what: str = "certificate", expired_fatal: bool = True) -> list[Any]:
    """The PEM certificates in the file (x509 objects), with problems for a missing or unparsable file and for
    dates: every certificate expired is fatal (unless not ``expired_fatal``), one not yet valid a warning."""
    from cryptography import x509

    data = read_file(setting, path, problems)
    if data is None:
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        problems.append(Problem(setting, str(path), f"not a PEM {what} (no -----BEGIN CERTIFICATE----- block that "
                                                    "parses)"))
        return []
    t = time.time() if now is None else now
    at = datetime.fromtimestamp(t, UTC)
    expired = [c for c in certs if c.not_valid_after_utc.timestamp() < t]
    if len(expired) == len(certs):
        c = certs[0]
        problems.append(Problem(setting, str(path), f"{what} {_subject(c)} expired on {_when(c.not_valid_after_utc)} "
                                                    f"(this machine's clock says {_when(at)})", fatal=expired_fatal))
    early = [c for c in certs if c.not_valid_before_utc.timestamp() > t]
    for c in early:
        problems.append(Problem(setting, str(path), f"{what} {_subject(c)} is not valid before "
                                                    f"{_when(c.not_valid_before_utc)} and this machine's clock says "
                                                    f"{_when(at)}: is the clock behind?", fatal=False))
    return certs


def _subject(cert: Any) -> str:
    from cryptography.x509.oid import NameOID

    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return repr(cn[0].value) if cn else "(no CN)"


def private_key(setting: str, path: Path, problems: list[Problem], passphrase: str = "",
                passphrase_setting: str = "") -> Any:
    """The private key in the PEM file, or None with a problem (unreadable, not a key, wrong passphrase)."""
    from cryptography.hazmat.primitives import serialization

    data = read_file(setting, path, problems)
    if data is None:
        return None
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        problems.append(Problem(setting, str(path), "not a PEM private key (no -----BEGIN ... PRIVATE KEY----- block)"))
        return None
    encrypted = b"ENCRYPTED" in data
    try:
        return serialization.load_pem_private_key(data, passphrase.encode() if passphrase and encrypted else None)
    except TypeError:  # encrypted and no passphrase given, or a passphrase for a key that has none
        if encrypted:
            problems.append(Problem(passphrase_setting or setting, "", f"cannot decrypt {path} (the key is encrypted "
                                    "and no passphrase is set)"))
        else:
            problems.append(Problem(setting, str(path), "not a usable PEM private key"))
    except ValueError:
        if encrypted and passphrase:
            problems.append(Problem(passphrase_setting or setting, "", f"cannot decrypt {path} (wrong passphrase)"))
        else:
            problems.append(Problem(setting, str(path), "not a usable PEM private key (damaged or an unsupported "
                                                        "format)"))
    except Exception as err:  # noqa: BLE001 - cryptography raises several kinds for damaged keys
        problems.append(Problem(setting, str(path), f"not a usable PEM private key ({type(err).__name__})"))
    return None


def key_matches(cert_setting: str, cert_path: Path, cert: Any, key_setting: str, key_path: Path, key: Any,
                problems: list[Problem]) -> None:
    """A problem when ``key`` is not the private key of ``cert``."""
    from cryptography.hazmat.primitives import serialization

    def raw(pub: Any) -> bytes:
        return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    try:
        same = raw(cert.public_key()) == raw(key.public_key())
    except Exception:  # noqa: BLE001
        same = False
    if not same:
        problems.append(Problem(key_setting, str(key_path), f"is not the private key of {cert_setting} {cert_path}"))


def cert_and_key(prefix: str, cert_name: str, cert_path: Path, key_name: str, key_path: Path,
                 problems: list[Problem], now: float | None = None, passphrase: str = "",
                 passphrase_name: str = "", expired_fatal: bool = True) -> list[Any]:
    """The usual pair: ``<prefix>.<cert_name>`` and ``<prefix>.<key_name>`` (and an optional passphrase setting).
    Returns the certificates."""
    certs = certificates(f"{prefix}.{cert_name}", cert_path, problems, now, expired_fatal=expired_fatal)
    key = private_key(f"{prefix}.{key_name}", key_path, problems, passphrase,
                      f"{prefix}.{passphrase_name}" if passphrase_name else "")
    if certs and key is not None:
        key_matches(f"{prefix}.{cert_name}", cert_path, certs[0], f"{prefix}.{key_name}", key_path, key, problems)
    return certs


def report(problems: list[Problem]) -> str:
    """Problems as lines for stderr: errors first, then warnings."""
    lines = [f"error: {p}" for p in problems if p.fatal] + [f"warning: {p}" for p in problems if not p.fatal]
    return "\n".join(lines)
