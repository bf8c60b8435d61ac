"""The broker's files as the CA writes them: readable by the broker's own user whatever the operator's umask.

Seen while following docs/deployment.md (issue 13): with ``umask 077`` the CA wrote ``acl`` and ``crl.pem``
unreadable by the ``mosquitto`` user; on the next reload Mosquitto 2.0 logged "Unable to open acl_file" and let
every terminal read every topic. And ``broker-config --user mosquitto`` left ``broker.key`` readable by root
only, so a broker started as root that drops to ``mosquitto`` could not start at all.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from pki.ca import FleetCA, write_broker_config
from tests.fleet import free_port, port_open, wait_for


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_public_files_are_world_readable_under_umask_077(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        ca = FleetCA.init(tmp_path / "CA", "pass-phrase")
        ca.issue_broker(["localhost"])
        ca.issue_server_client()
        write_broker_config(ca.dir, free_port())
        ca.revoke(cn="posfleet-server")  # rewrites crl.pem and acl
    finally:
        os.umask(old)
    for name in ("ca.pem", "crl.pem", "acl", "mosquitto.conf"):
        assert _mode(ca.dir / name) == 0o644, name
    assert _mode(ca.dir / "ca.key") == 0o600 and _mode(ca.dir / "broker.key") == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="mosquitto drops to its own user only when started as root")
def test_broker_started_as_root_runs_as_mosquitto_and_reads_its_key() -> None:
    with tempfile.TemporaryDirectory(prefix="posfleet-broker-", dir="/tmp") as tmp:  # pytest's tmp_path is 0700
        _broker_as_mosquitto(Path(tmp))


def _broker_as_mosquitto(tmp_path: Path) -> None:
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.fail("the mosquitto package creates the mosquitto user; ./dev installs it")
    ca_dir = tmp_path / "CA"
    ca = FleetCA.init(ca_dir, "pass-phrase")
    ca.issue_broker(["localhost"])
    ca.issue_server_client()
    # the broker's user must reach the files through the folders too
    for d in (tmp_path, ca_dir):
        d.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()
    conf = write_broker_config(ca_dir, port, data_dir=data, user="mosquitto")
    key = ca_dir / "broker.key"
    assert key.stat().st_gid == user.pw_gid and _mode(key) == 0o640, grp.getgrgid(key.stat().st_gid).gr_name
    # a renewal keeps that access
    ca.issue_broker(["localhost"])
    assert key.stat().st_gid == user.pw_gid and _mode(key) == 0o640
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 10, "mosquitto to listen")
        assert proc.poll() is None, log.read_text()
        assert port_open(port)
        owner = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{user.pw_uid}" in owner, "mosquitto did not drop to its user"
    finally:
        proc.terminate()
        proc.wait(5)
