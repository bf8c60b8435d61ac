"""Signed commands and packages are checked in a child process, so the agent never holds ``cryptography``
(issue 13: agent RSS <= 40 MB in every state; decision 019).

The checks run the real verifier (``python -P -m wire.signing``) against keys the real fleet CA endorsed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from server.commands.keys import load_key, make_key
from wire.signing import SignatureError, verify_detached


@pytest.fixture(scope="module")
def signer(pki, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("verify-keys")
    key_file, endo_file, _ = make_key(pki.ca, d, "command", 30)
    return load_key(key_file, endo_file, "command"), pki.ca.dir / "ca.pem"


def test_good_signature_gives_the_endorsed_key(signer) -> None:  # type: ignore[no-untyped-def]
    key, ca_pem = signer
    body = b"reboot the terminal"
    got = verify_detached(ca_pem, key.endorsement, "command", body, key.sign(body), time.time())
    assert got.key_id == key.key_id and got.purpose == "command"


@pytest.mark.parametrize("case", ["tampered body", "wrong purpose", "revoked", "expired"])
def test_bad_signatures_are_refused_with_the_reason(signer, case: str) -> None:  # type: ignore[no-untyped-def]
    key, ca_pem = signer
    body = b"set_config link.keepalive_s=600"
    sig = key.sign(body)
    kw = {"purpose": "command", "data": body, "now": time.time(), "revoked": frozenset()}
    expected = {"tampered body": "signature does not verify", "wrong purpose": "not 'update'",
                "revoked": "is revoked", "expired": "endorsement expired"}[case]
    if case == "tampered body":
        kw["data"] = body + b"0"
    elif case == "wrong purpose":
        kw["purpose"] = "update"
    elif case == "revoked":
        kw["revoked"] = frozenset({key.key_id})
    else:
        kw["now"] = time.time() + 365 * 86400
    with pytest.raises(SignatureError, match=expected):
        verify_detached(ca_pem, key.endorsement, sig=sig, **kw)  # type: ignore[arg-type]


def test_an_unreadable_ca_file_is_named_and_nothing_is_trusted(signer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, _ = signer
    missing = tmp_path / "no-ca.pem"
    with pytest.raises(SignatureError, match="no-ca.pem"):
        verify_detached(missing, key.endorsement, "command", b"x", key.sign(b"x"), time.time())


def test_the_agent_process_never_loads_cryptography(signer) -> None:  # type: ignore[no-untyped-def]
    """What the RSS target rests on: after the agent's own modules are imported and a signature has been
    checked the agent's way, ``cryptography`` is still not in the process (it costs ~10 MB for good)."""
    key, ca_pem = signer
    body = b"test_page"
    script = textwrap.dedent(f"""
        import sys, time, msgspec
        import agent.main, agent.commands, agent.update, agent.tls
        from wire.commands import Endorsement
        endo = msgspec.msgpack.decode({msgspec.msgpack.encode(key.endorsement)!r}, type=Endorsement)
        k = agent.main.Agent.signed_check({str(ca_pem)!r}, endo, "command", {body!r}, {key.sign(body)!r},
                                          time.time())
        print(k.key_id, sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [key.key_id, "[]"], out.stdout + out.stderr
