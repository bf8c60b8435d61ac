"""Extra broker identities for tests that watch or act beside a running server and agents.

The broker takes each certificate's CN as the client id (decision 011), so a test client holding the server's or a
unit's certificate would log the real one out (and be logged out in turn). Tests use identities of their own:

* ``server_identity(pki, broker, "sender")``: ``posfleet-server-sender``, the fleet server's rights (reads every
  unit's t/s/r, writes a/c) under its own session — what an intruder holding *a* server certificate could do;
* ``observer(pki, broker)``: ``posfleet-observer``, a test-only identity allowed to read everything under ``pf/``
  (no such rule exists in the generated ACL; it is appended here for the test broker only).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from pki.ca import write_acl
from simulator.local import Broker, Pki

OBSERVER_CN = "posfleet-observer"


def reload(pki: Pki, broker: Broker) -> None:
    """Rewrite the ACL from the CA's index (plus the observer's test rule) and make the broker reload it."""
    path = write_acl(pki.dir)
    if (pki.dir / "observer.pem").exists():
        with path.open("a") as f:
            f.write(f"\n# test only\nuser {OBSERVER_CN}\ntopic read pf/#\n")
    assert broker.proc is not None and broker.proc.poll() is None, "the broker is not running"
    broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)  # the signal wakes mosquitto's loop at once; the reload itself takes a few ms


def server_identity(pki: Pki, broker: Broker, name: str) -> tuple[Path, Path]:
    cert, key = pki.dir / f"server-client-{name}.pem", pki.dir / f"server-client-{name}.key"
    if not cert.exists():
        pki.ca.issue_server_client(name=f"posfleet-server-{name}")
    reload(pki, broker)
    return cert, key


def observer(pki: Pki, broker: Broker) -> tuple[Path, Path]:
    cert, key = pki.dir / "observer.pem", pki.dir / "observer.key"
    if not cert.exists():
        pki.ca.issue_keypair(OBSERVER_CN, "observer", pki.dir / "observer")
    reload(pki, broker)
    return cert, key
