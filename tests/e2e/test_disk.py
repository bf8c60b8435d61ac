"""A full or read-only disk: the agent keeps running, says so, and keeps delivering from memory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import AgentProc, agent_config, wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def storage_check(server, sn: str) -> list:
    items = server.get(f"/api/v1/units/{sn}/samples", limit=1).json().get("items", [])
    return items[0]["checks"]["storage"] if items else [None, ""]


def sample_count(server, sn: str) -> int:
    return len(server.get(f"/api/v1/units/{sn}/samples", limit=10000).json().get("items", []))


def fill(directory: Path) -> Path:
    big = directory / "filler"
    with open(big, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return big


def test_disk_full_then_freed(pki, broker, server, small_disk: Path, tmp_path: Path) -> None:
    sn = "HN00090001"
    cfg = agent_config(pki, broker, sn, small_disk / "data", sampling_interval=5, link="batch_interval_s = 0")
    agent = AgentProc(cfg, tmp_path / "full.log").start()
    try:
        wait_for(lambda: storage_check(server, sn)[0] == 0, 30, "healthy samples")
        filler = fill(small_disk)
        wait_for(lambda: storage_check(server, sn)[0] == 1, 30, "storage fault reported")
        reason = storage_check(server, sn)[1]
        assert "space" in reason.lower() or "full" in reason.lower(), reason
        n = sample_count(server, sn)
        wait_for(lambda: sample_count(server, sn) >= n + 1, 30, "samples still delivered while the disk is full")
        assert agent.alive()
        os.unlink(filler)
        wait_for(lambda: storage_check(server, sn)[0] == 0, 30, "storage ok again")
    finally:
        agent.stop()
    log = (tmp_path / "full.log").read_text()
    assert "Traceback" not in log
    assert log.count("holding samples in memory") == 1, "the failure is logged once, not at every sample"
    assert "outbox writable again" in log


def test_read_only_data_dir(pki, broker, server, small_disk: Path, tmp_path: Path) -> None:
    """The terminal loses power and comes back with its data filesystem read-only (what the kernel
    does after I/O errors); later the filesystem is repaired while the agent runs."""
    sn = "HN00090002"
    cfg = agent_config(pki, broker, sn, small_disk / "data", sampling_interval=5, link="batch_interval_s = 0")
    agent = AgentProc(cfg, tmp_path / "ro.log").start()
    try:
        wait_for(lambda: storage_check(server, sn)[0] == 0, 30, "healthy samples")
        agent.kill()  # power cut
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        agent = AgentProc(cfg, tmp_path / "ro.log").start()
        wait_for(lambda: storage_check(server, sn)[0] == 1, 30, "storage fault reported")
        assert "read-only" in storage_check(server, sn)[1].lower()
        n = sample_count(server, sn)
        wait_for(lambda: sample_count(server, sn) >= n + 1, 30, "samples still delivered from memory")
        assert agent.alive()
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        wait_for(lambda: storage_check(server, sn)[0] == 0, 30, "storage ok again after the repair")
        n = sample_count(server, sn)
        wait_for(lambda: sample_count(server, sn) >= n + 1, 30, "samples flow through the outbox again")
    finally:
        agent.stop()
    log = (tmp_path / "ro.log").read_text()
    assert "Traceback" not in log
    assert "holding samples in memory" in log


def test_fresh_terminal_on_a_read_only_data_dir(pki, broker, server, small_disk: Path, tmp_path: Path) -> None:
    """No outbox file yet and the filesystem read-only from the start: the agent cannot even create its outbox,
    and still runs, reports the fault and delivers from memory."""
    sn = "HN00090003"
    (small_disk / "data").mkdir()
    cfg = agent_config(pki, broker, sn, small_disk / "data", sampling_interval=5, link="batch_interval_s = 0")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    agent = AgentProc(cfg, tmp_path / "fresh.log").start()
    try:
        wait_for(lambda: storage_check(server, sn)[0] == 1, 30, "storage fault reported")
        assert "read-only" in storage_check(server, sn)[1].lower()
        n = sample_count(server, sn)
        wait_for(lambda: sample_count(server, sn) >= n + 1, 30, "samples delivered from memory")
        assert agent.alive()
        assert not (small_disk / "data" / "outbox.sqlite").exists()
    finally:
        agent.stop()
    log = (tmp_path / "fresh.log").read_text()
    assert "Traceback" not in log
    assert "holding samples in memory" in log
