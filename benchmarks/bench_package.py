"""The terminal package's sizes (issue 13): the .deb a 4G SIM or a USB stick carries, and what it installs.

Builds the packages with the same script `./dev package` runs (into a temporary folder, so dist/ is left alone),
then prints, per architecture, the .deb's size, dpkg's Installed-Size, and the largest parts of the runtime.

    .venv/bin/python -m benchmarks.bench_package            # amd64 and arm64, ~1 min
    .venv/bin/python -m benchmarks.bench_package amd64
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from benchmarks._harness import machine_line

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    arches = argv or ["amd64", "arm64"]
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-package-") as out:
        subprocess.run([str(ROOT / "packaging" / "build-agent-deb.sh"), *arches], check=True, cwd=ROOT,
                       env={**os.environ, "OUT": out}, stdout=subprocess.DEVNULL)
        for deb in sorted(Path(out).glob("*.deb")):
            installed_kib = int(subprocess.run(["dpkg-deb", "-f", str(deb), "Installed-Size"], check=True,
                                               capture_output=True, text=True).stdout.strip())
            parts: dict[str, int] = {}
            data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.seek(0)
                with tarfile.open(fileobj=f) as tar:
                    for m in tar:
                        if m.isfile():
                            bits = m.name.lstrip("./").split("/")
                            i = bits.index("site-packages") if "site-packages" in bits else -1
                            key = bits[i + 1] if i >= 0 and len(bits) > i + 1 else "/".join(bits[:3])
                            parts[key] = parts.get(key, 0) + m.size
            top = sorted(parts.items(), key=lambda kv: -kv[1])[:6]
            print(f"{deb.name}: .deb {deb.stat().st_size / 2**20:.2f} MiB, installed {installed_kib / 1024:.1f} MiB; "
                  "largest: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
