"""Resumable package download: the agent's real download() against the server's real
/api/v1/packages/{id}/download endpoint, through a relay that drops the link mid-transfer as a
weak 4G link would. The relay only forwards bytes and records the request lines and headers."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.update import BLOCK_CAP, BLOCK_FLOOR, BLOCK_START, BlockSize, Refused, download
from tests.commands.conftest import Fleet
from tests.commands.test_update import _package, _upload
from tests.conftest import epoch
from tests.fleet import Broker, Pki


class CuttingRelay:
    """TCP relay to the server; the first ``cuts`` responses are cut after ``cut_after`` body-ish bytes."""

    def __init__(self, port: int, cut_after: int, cuts: int = 1) -> None:
        self.target = ("127.0.0.1", port)
        self.cut_after = cut_after
        self.cuts = cuts
        self.requests: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(client, len(self.requests) < self.cuts), daemon=True).start()

    def _one(self, client: socket.socket, cut: bool) -> None:
        with client, socket.create_connection(self.target, timeout=10) as up:
            head = b""
            while b"\r\n\r\n" not in head:
                block = client.recv(4096)
                if not block:
                    return
                head += block
            self.requests.append(head.decode("latin-1"))
            up.sendall(head)
            sent = 0
            while True:
                block = up.recv(4096)
                if not block:
                    return
                if cut and sent + len(block) > self.cut_after:
                    client.sendall(block[: self.cut_after - sent])
                    client.shutdown(socket.SHUT_RDWR)  # the 4G link drops
                    return
                client.sendall(block)
                sent += len(block)

    def close(self) -> None:
        self.sock.close()


def _token(fleet: Fleet, cid: str) -> str:
    dbs = [p for p in (fleet.root / "server").rglob("*") if p.suffix in (".sqlite", ".db", ".sqlite3")]
    assert len(dbs) == 1, dbs
    con = sqlite3.connect(dbs[0], timeout=10)
    try:
        return str(con.execute("SELECT token FROM cmd_commands WHERE id=?", (cid,)).fetchone()[0])
    finally:
        con.close()


@pytest.fixture(scope="module")
def served(pki: Pki, keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Fleet, Path, str, str]]:
    """One broker and server for the download tests that only read from it (one start instead of four): a
    package of about 300 KiB of incompressible content, uploaded; a software_update command queued for an
    offline unit keeps its download token live. Yields (fleet, archive, package id, token)."""
    root = tmp_path_factory.mktemp("downloads")
    broker = Broker(pki, root / "broker").start()
    fleet = Fleet(pki, broker, keys, root)
    try:
        fleet.start_server()
        src_extra = root / "payload"
        src_extra.write_bytes(os.urandom(300 * 1024))
        archive = _package(root, fleet, "4.0.0", payload=src_extra)
        r = _upload(fleet, archive)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = fleet.send(type="software_update", sn="HN58000001", params={"package": pid}, expires_s=600)
        assert r.status_code == 201, r.text
        yield fleet, archive, pid, _token(fleet, r.json()["command"]["id"])
    finally:
        fleet.stop()
        broker.stop()


def test_a_download_cut_twice_mid_transfer_resumes_with_range_requests_in_smaller_blocks_and_verifies(
        served: tuple[Fleet, Path, str, str], tmp_path: Path) -> None:
    fleet, archive, pid, token = served
    size = archive.stat().st_size
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    relay = CuttingRelay(fleet.server.http_port, cut_after=100 * 1024, cuts=2)
    blocks = BlockSize(pace=0)
    try:
        dest = tmp_path / "updates" / f"{digest}.tar.gz"
        url = f"http://127.0.0.1:{relay.port}/api/v1/packages/{pid}/download?t={token}"
        got = download(url, dest, size, digest, pace=0, timeout=5, attempts=3, blocks=blocks)
    finally:
        relay.close()
    assert got == dest and hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    assert not dest.with_name(dest.name + ".part").exists()
    assert len(relay.requests) == 3, relay.requests
    assert "range:" not in relay.requests[0].lower()
    # each resumed request asks only for what is missing: the part kept what arrived before each cut
    starts = []
    for req in relay.requests[1:]:
        ranges = [ln for ln in req.split("\r\n") if ln.lower().startswith("range:")]
        assert len(ranges) == 1
        starts.append(int(ranges[0].split("=")[1].rstrip("-")))
    assert 50 * 1024 < starts[0] < 100 * 1024 < starts[1] < 200 * 1024 < size, (starts, size)
    # the blocks grew on the fast loopback and were halved after each cut
    events = [e for e, _ in blocks.history]
    assert events[0] == "start" and "grow" in events and events.count("failed") == 2, blocks.history
    for i, (event, n) in enumerate(blocks.history):
        if event == "failed":
            assert n == max(BLOCK_FLOOR, blocks.history[i - 1][1] // 2), blocks.history


def test_block_size_grows_on_a_fast_link_shrinks_on_a_slow_or_broken_one_within_its_bounds() -> None:
    b = BlockSize(pace=0)
    assert b.size == BLOCK_START
    for _ in range(10):
        b.arrived(b.size, 0.1)
    assert b.size == BLOCK_CAP
    b.arrived(b.size // 3, 0.1)  # a short read (the end of the file, or a cut) says nothing about the link
    assert b.size == BLOCK_CAP
    b.arrived(b.size, 2.5)
    assert b.size == BLOCK_CAP // 2
    for _ in range(10):
        b.failed()
    assert b.size == BLOCK_FLOOR
    b.arrived(b.size, 1.5)  # neither fast nor slow: stays
    assert b.size == BLOCK_FLOOR
    # a paced download never reads more than a second of its pace at once (nor less than the floor)
    assert BlockSize(pace=64 * 1024).cap == 64 * 1024 and BlockSize(pace=1024).size == BLOCK_FLOOR
    assert BlockSize(pace=100 * 1024 * 1024).cap == BLOCK_CAP


def _left_part(archive: Path, tmp_path: Path, first: bytes | None) -> tuple[bytes, str, Path, Path]:
    """The package's bytes and digest, its download path, and the <sha>.tar.gz.part a killed agent left there."""
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "updates" / f"{digest}.tar.gz"
    dest.parent.mkdir(parents=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data[:123_457] if first is None else first)
    return data, digest, dest, part


def test_a_partial_file_left_by_a_killed_agent_is_resumed(served: tuple[Fleet, Path, str, str],
                                                          tmp_path: Path) -> None:
    """What a power cut leaves behind: the first bytes in <sha>.tar.gz.part. The server answers 206 from there."""
    fleet, archive, pid, token = served
    data, digest, dest, part = _left_part(archive, tmp_path, None)
    relay = CuttingRelay(fleet.server.http_port, cut_after=1 << 30)
    try:
        download(f"http://127.0.0.1:{relay.port}/api/v1/packages/{pid}/download?t={token}", dest, len(data), digest,
                 pace=0, timeout=5, attempts=2)
    finally:
        relay.close()
    assert dest.read_bytes() == data
    assert "range: bytes=123457-" in relay.requests[0].lower()


def test_a_partial_file_that_is_not_the_package_is_refused_and_deleted(
        served: tuple[Fleet, Path, str, str], tmp_path: Path) -> None:
    """A stale part from another package: resuming onto it cannot verify; the agent deletes it, nothing kept."""
    fleet, archive, pid, token = served
    data, digest, dest, part = _left_part(archive, tmp_path, os.urandom(1000))
    url = f"http://127.0.0.1:{fleet.server.http_port}/api/v1/packages/{pid}/download?t={token}"
    with pytest.raises(Refused, match="sha256 mismatch"):
        download(url, dest, len(data), digest, pace=0, timeout=5, attempts=2)
    assert not part.exists() and not dest.exists()
    # and the next attempt starts over and succeeds
    assert download(url, dest, len(data), digest, pace=0, timeout=5, attempts=2).read_bytes() == data


def test_the_download_url_needs_a_live_token(served: tuple[Fleet, Path, str, str]) -> None:
    import httpx

    fleet, archive, pid, token = served
    base = f"http://127.0.0.1:{fleet.server.http_port}/api/v1/packages/{pid}/download"
    assert httpx.get(base, timeout=10).status_code == 404
    assert httpx.get(base + "?t=" + token[::-1], timeout=10).status_code == 404
    r = httpx.get(base + "?t=" + token, headers={"Range": "bytes=1000-"}, timeout=10)
    assert r.status_code == 206 and r.content == archive.read_bytes()[1000:]
    assert r.headers["content-range"] == f"bytes 1000-{archive.stat().st_size - 1}/{archive.stat().st_size}"


def test_download_pacing_is_a_parameter_of_the_software_update_command(fleet: Fleet, tmp_path: Path) -> None:
    """400 KiB at 100 KiB/s takes about 4 s; at 4 MiB/s a fraction of one. Timed by the agent's own
    started/finished stamps on the real update path (download, verify, install, health check)."""
    sn = "HN58000002"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(400 * 1024))
    took = {}
    for version, pace in (("5.0.0", 4 * 1024 * 1024), ("5.1.0", 100 * 1024)):
        r = _upload(fleet, _package(tmp_path, fleet, version, payload=payload))
        assert r.status_code == 201, r.text
        r = fleet.send(type="software_update", sn=sn,
                       params={"package": r.json()["id"], "pace_bytes_per_s": pace, "health_timeout_s": 20})
        assert r.status_code == 201, r.text
        done = fleet.wait_state(r.json()["command"]["id"], timeout=40)
        assert done["state"] == "succeeded", done
        took[version] = epoch(done["finished"]) - epoch(done["started"])
    assert took["5.0.0"] <= 2.0 and took["5.1.0"] >= 3.0, took
    current = fleet.agent_dir(sn) / "data" / "components" / "demo" / "current"
    assert os.readlink(current) == "5.1.0"
    # out of range or not a number: refused by the server, the field named
    pid = fleet.server.get("/api/v1/packages").json()["items"][0]["id"]
    for bad in (0, 10, "fast", True, 10**12):
        r = fleet.send(type="software_update", sn=sn, params={"package": pid, "pace_bytes_per_s": bad})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.pace_bytes_per_s", (bad, r.text)
