"""`posfleet demo` as the README's newcomer runs it: the default, relative working directory, the printed
dashboard URL and token answer, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from simulator.local import free_port


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> tuple[re.Match[str] | None, str]:
    seen = ""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        m = re.search(pattern, seen)
        if m:
            return m, seen
    return None, seen


def test_demo_from_a_relative_directory_answers_its_printed_token_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    # the console script, run from a fresh folder with the default relative --dir (.demo)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "posfleet"), "demo", "--units", "3", "--history-days", "1", "--port", str(port),
         "--seed", "7"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        m, out = _read_until(proc, r"dashboard:\s+(\S+)/dashboard/\s+admin token:\s+(\S+)", 150)
        assert m, f"the demo did not print its dashboard URL; it printed:\n{out[-3000:]}"
        base, token = m.group(1), m.group(2)
        assert (tmp_path / ".demo" / "server" / "server.toml").exists()
        live = httpx.get(f"{base}/api/v1/analytics/live", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert live.status_code == 200, live.text
        assert httpx.get(f"{base}/dashboard/", timeout=10).status_code == 200
        units = httpx.get(f"{base}/api/v1/units", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert len(units["items"] if isinstance(units, dict) else units) >= 3
        proc.send_signal(signal.SIGINT)
        m, rest = _read_until(proc, r"stopped\.", 60)
        assert m, f"Ctrl-C did not stop the demo cleanly:\n{rest[-3000:]}"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
