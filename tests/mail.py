"""A local mail server for the tests of e-mailed reports (aiosmtpd): STARTTLS required, with a certificate from a CA
of its own whose ``ca.pem`` the server under test is told to trust."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from pki.ca import FleetCA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def starttls_smtp(ca_dir: Path, handler: Any) -> Controller:
    """A started mail server on 127.0.0.1 that refuses mail before STARTTLS; its CA's certificate is
    ``ca_dir / "ca.pem"``. Stop it with ``.stop()``."""
    ca = FleetCA.init(ca_dir, "passphrase-for-tests")
    cert, key = ca.issue_broker(["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    smtp = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=True)
    smtp.start()
    return smtp
