"""The agent's TLS context: TLS 1.2 at least (1.3 when configured), the broker verified against the fleet CA by name,
and the terminal's own certificate presented."""

from __future__ import annotations

import ssl
from pathlib import Path

from agent.config import ConfigError, parse
from agent.link import tls_context
from simulator.local import Pki


def test_tls_context(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    t = pki.terminal("HN00190001")
    assert parse("").link.tls_min_version == "1.2"
    ctx = tls_context(t / "ca.pem", t / "terminal.pem", t / "terminal.key")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert tls_context(t / "ca.pem", t / "terminal.pem", t / "terminal.key", min_version="1.3").minimum_version \
        == ssl.TLSVersion.TLSv1_3
    other = pki.terminal("HN00190002")
    try:
        tls_context(t / "ca.pem", t / "terminal.pem", other / "terminal.key")
    except ConfigError as err:
        assert str(err).startswith("link.cert_file:"), err
    else:
        raise AssertionError("a key that does not match the certificate must be refused")
