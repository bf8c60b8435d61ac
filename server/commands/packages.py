"""Building update packages (on an administrator's machine that holds the update key).

The package format (manifest, signed statement, an agent release's layout) is :mod:`wire.package`, shared with
the terminals that install packages: what is built here is read back with their reader before it is signed."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import time
from pathlib import Path

from wire.package import (
    ENTRY,
    HEALTHCHECK,
    MANIFEST,
    RELEASE_PACKAGES,
    RUN_PY,
    VERSION_FILE,
    code_root,
    read_manifest,
    statement,
)

from .keys import SigningKey


def build_package(src_dir: Path, component: str, version: str, models: list[str], health_check: list[str],
                  out: Path) -> Path:
    """Pack ``src_dir`` with a manifest into ``out`` (.tar.gz); the manifest is checked by the terminals' reader."""
    manifest = {"component": component, "version": version, "models": models, "health_check": health_check}
    data = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(src_dir.rglob("*")):
            rel = path.relative_to(src_dir).as_posix()
            if rel == MANIFEST:
                continue
            tar.add(path, arcname=rel, recursive=False)
    read_manifest(out)  # refuse to produce what a terminal would refuse
    return out


def sign_package(archive: Path, key: SigningKey) -> tuple[str, bytes]:
    """(sha256 hex, signature) of a built package with the update key."""
    if key.purpose != "update":
        raise ValueError(f"key {key.key_id} is endorsed for {key.purpose!r}, not 'update'")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    m = read_manifest(archive)
    return digest, key.sign(statement(m.component, m.version, digest))


def stage_agent_release(out: Path, version: str, src_root: Path | None = None) -> Path:
    """A source tree for an ``agent`` package: the agent's packages from ``src_root`` (default: the running
    code), ``__version__`` set to ``version`` (in ``wire/__init__.py``, which ``posfleet.__version__`` names), the
    release entry point ``run.py`` and a pre-flight ``healthcheck``. Build it with
    ``build_package(out, "agent", version, models, ["./healthcheck"], ...)``."""
    src_root = src_root or code_root()
    out.mkdir(parents=True, exist_ok=False)
    for name in RELEASE_PACKAGES:
        shutil.copytree(src_root / name, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    init = out / VERSION_FILE
    text, n = re.subn(r'^__version__ = .*$', f"__version__ = {version!r}", init.read_text(), flags=re.M)
    if n != 1:
        raise ValueError(f"{init}: no __version__ line to set")
    init.write_text(text)
    (out / ENTRY).write_text(RUN_PY)
    hc = out / "healthcheck"
    hc.write_text(HEALTHCHECK)
    hc.chmod(0o755)
    return out
