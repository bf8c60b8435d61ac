"""Bytes on the link for one update download (issue 5): the agent's streaming, resumable download
(``agent.update.download``) against the real server's package endpoint, through the counting proxy
(:class:`benchmarks._harness.CountingProxy`, MSS clamped to a cellular 1400), compared with fetching the
same package as one ``Range`` request per 16 KiB chunk.

Runs, each on a fresh download of the same package:

* ``stream``: the agent's download, nothing cut.
* ``stream+cuts``: the same, with a relay behind the proxy ending the first ``--cuts`` connections after an
  even share of the package each; the resumed requests ask for what is missing.
* ``chunks/close``: one request per 16 KiB chunk, each on its own connection (what ``urllib`` does: no
  keep-alive), plain HTTP. Over HTTPS each connection also costs a TLS handshake: added as computed, with
  the resumed mutual-TLS handshake measured in docs/performance.md (2,486 B; a full one is 4,675 B).
* ``chunks/keep-alive``: one request per 16 KiB chunk on a single kept-alive connection (headers only).

Bytes are TCP payload both ways, and IP bytes = payload plus 52 B per segment (IPv4 + TCP + timestamps), as
the carrier bills. The segment counts come from TCP_INFO on loopback and vary from run to run with how ACKs
and offloads fall (the same streaming download has shown 862 and 1,557 segments); the TCP payload and the
connection count are the stable comparison.

    .venv/bin/python -m benchmarks.bench_download             # 2 MiB package, 3 cuts (~20 s)
    .venv/bin/python -m benchmarks.bench_download --mib 4 --cuts 4
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.update import BlockSize, download
from benchmarks._harness import CountingProxy, machine_line
from server.commands.keys import make_key
from tests.commands.conftest import Fleet
from tests.commands.test_download import CuttingRelay
from tests.commands.test_update import _package, _upload
from tests.fleet import Broker, Pki, wait_for

RESUMED_TLS = 2486  # B, docs/performance.md: resumed mutual-TLS 1.3 handshake incl. TCP open and close
FULL_TLS = 4675
CHUNK = 16 * 1024


def _token(fleet: Fleet, cid: str) -> str:
    con = sqlite3.connect(fleet.root / "server" / "fleet.sqlite", timeout=10)
    try:
        return str(con.execute("SELECT token FROM cmd_commands WHERE id=?", (cid,)).fetchone()[0])
    finally:
        con.close()


def _measure(proxy: CountingProxy, before: int) -> dict[str, int]:
    wait_for(lambda: all(c.closed for c in proxy.snapshot()[before:]), 10, "the connections to close")
    conns = proxy.snapshot()[before:]
    return {"connections": len(conns), "up": sum(c.up_bytes for c in conns), "down": sum(c.down_bytes for c in conns),
            "segments": sum(c.up_segs + c.down_segs for c in conns), "ip": sum(c.ip_bytes for c in conns)}


def _chunks(port: int, path: str, size: int, keep_alive: bool) -> None:
    conn: http.client.HTTPConnection | None = None
    for start in range(0, size, CHUNK):
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        end = min(size, start + CHUNK) - 1
        conn.request("GET", path, headers={"Range": f"bytes={start}-{end}",
                                           **({} if keep_alive else {"Connection": "close"})})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 206 and len(body) == end - start + 1, (resp.status, len(body))
        if not keep_alive:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def run(mib: float, cuts: int, workdir: Path) -> dict[str, Any]:
    pki = Pki(workdir / "pki")
    broker = Broker(pki, workdir / "broker").start()
    keys = {}
    ck, ce, _ = make_key(pki.ca, workdir / "command", "command", 30)
    uk, ue, _ = make_key(pki.ca, workdir / "update", "update", 30)
    keys = {"command_key": ck, "command_endorsement": ce, "update_key": uk, "update_endorsement": ue}
    fleet = Fleet(pki, broker, keys, workdir / "fleet")
    out: dict[str, Any] = {"mib": mib, "cuts": cuts}
    try:
        fleet.start_server()
        payload = workdir / "payload"
        payload.write_bytes(os.urandom(int(mib * 1024 * 1024)))
        archive = _package(workdir, fleet, "1.0.0", payload=payload)
        up = _upload(fleet, archive)
        assert up.status_code == 201, up.text  # type: ignore[attr-defined]
        pid = up.json()["id"]  # type: ignore[attr-defined]
        r = fleet.send(type="software_update", sn="HN58990001", params={"package": pid}, expires_s=3600)
        assert r.status_code == 201, r.text
        token = _token(fleet, r.json()["command"]["id"])
        size = archive.stat().st_size
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        out["size"] = size
        path = f"/api/v1/packages/{pid}/download?t={token}"
        proxy = CountingProxy(fleet.server.http_port).start()  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{proxy.port}{path}"
        try:
            # stream, nothing cut
            n = len(proxy.snapshot())
            blocks = BlockSize(pace=0)
            dest = workdir / "a" / f"{digest}.tar.gz"
            download(url, dest, size, digest, pace=0, blocks=blocks)
            out["stream"] = _measure(proxy, n) | {"blocks": blocks.history}

            # stream, cut `cuts` times: a relay behind the proxy ends each of the first `cuts` connections after
            # an even share of the package (the agent has received exactly what was relayed when its link drops)
            relay = CuttingRelay(fleet.server.http_port, cut_after=size // (cuts + 1), cuts=cuts)  # type: ignore[union-attr]
            cut_proxy = CountingProxy(relay.port).start()
            try:
                dest = workdir / "b" / f"{digest}.tar.gz"
                blocks = BlockSize(pace=0)
                t0 = time.monotonic()
                download(f"http://127.0.0.1:{cut_proxy.port}{path}", dest, size, digest, pace=0, attempts=cuts + 2,
                         blocks=blocks)
                out["stream+cuts"] = _measure(cut_proxy, 0) | {"blocks": blocks.history,
                                                               "seconds": time.monotonic() - t0}
            finally:
                cut_proxy.stop()
                relay.close()

            for name, keep in (("chunks/close", False), ("chunks/keep-alive", True)):
                n = len(proxy.snapshot())
                _chunks(proxy.port, path, size, keep)
                out[name] = _measure(proxy, n)
        finally:
            proxy.stop()
    finally:
        fleet.stop()
        broker.stop()
    return out


def report(r: dict[str, Any]) -> None:
    size = r["size"]
    print(machine_line())
    print(f"package: {size:,} B ({r['mib']:g} MiB of random content), plain HTTP through the counting proxy")
    print(f"{'run':<20} {'conns':>5} {'payload up':>11} {'payload down':>13} {'TCP payload over':>17} "
          f"{'segments':>9} {'IP bytes':>11} {'IP over':>8}")
    for name in ("stream", "stream+cuts", "chunks/close", "chunks/keep-alive"):
        m = r[name]
        tcp = m["up"] + m["down"]
        print(f"{name:<20} {m['connections']:>5} {m['up']:>11,} {m['down']:>13,} {(tcp - size) / size:>17.2%} "
              f"{m['segments']:>9,} {m['ip']:>11,} {(m['ip'] - size) / size:>8.1%}")
    c = r["chunks/close"]
    for label, hs in (("resumed", RESUMED_TLS), ("full", FULL_TLS)):
        https = c["ip"] + c["connections"] * hs
        print(f"chunks/close over HTTPS, + one {label} TLS handshake per connection ({hs:,} B, computed): "
              f"{https:,} B, {(https - size) / size:.1%} over the package")
    s, sc = r["stream"], r["stream+cuts"]
    print(f"cost of {r['cuts']} cuts to the streaming download: {sc['ip'] - s['ip']:+,} B "
          f"({sc['connections']} connections, {sc['seconds']:.1f} s, mostly the back-off between tries)")
    print("blocks, stream: " + " ".join(f"{e}:{n // 1024}K" for e, n in s["blocks"]))
    print("blocks, stream+cuts: " + " ".join(f"{e}:{n // 1024}K" for e, n in sc["blocks"]))
    month = 500 * 1000 * 1000
    print(f"on a 500 MB/month SIM, per 20 MB of packages: stream {20e6 * (s['ip'] - size) / size / month:.2%} of "
          f"the month in overhead, chunks/close over HTTPS (resumed) "
          f"{20e6 * (c['ip'] + c['connections'] * RESUMED_TLS - size) / size / month:.2%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=float, default=2.0, help="package payload in MiB (default 2)")
    p.add_argument("--cuts", type=int, default=3, help="connection cuts in the second run (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        report(run(a.mib, a.cuts, tmp))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
