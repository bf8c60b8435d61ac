"""Software update on the terminal: signed package, resumable paced download, A/B install, health
check, automatic rollback.

A package is a ``.tar.gz`` with ``manifest.json`` at its root (:mod:`wire.package`, the reader the server
shares)::

    {"component": "agent", "version": "1.4.0", "models": ["A8"], "health_check": ["./healthcheck"]}

The fleet's update key (Ed25519, endorsed by the fleet CA for purpose ``update``) signs
:func:`~wire.package.statement` (component, version and SHA-256 of the archive). The ``software_update``
command (itself signed by the command key) carries the URL, size, SHA-256, signature and
endorsement. In order, the agent refuses (code 2, nothing touched) when:

1. the update key is not endorsed by the fleet CA for updates, is revoked or expired, or the
   signature does not verify;
2. the target models do not include this terminal's model (``[components.model]`` in the
   agent configuration says how to read it; a package naming models is refused when the
   model cannot be read);
3. the version is not above the installed one, unless ``allow_downgrade`` (administrators only);
4. after the download, the size or SHA-256 differ (the partial file is deleted), or the
   manifest does not match the signed component and version.

Download: into ``<data_dir>/updates/<sha256>.tar.gz.part`` with ``Range: bytes=N-`` so a broken 4G
link resumes where it stopped, paced to the command's ``pace_bytes_per_s`` (default
:data:`wire.commands.PACE_BYTES_PER_S`), in blocks sized to the link (:class:`BlockSize`), each fsynced.

An update of the ``agent`` component itself hands over to the new release: see :mod:`agent.release`.

Install (A/B): each version is unpacked into ``<data_dir>/components/<component>/<version>/``
and ``current`` (a symlink) is flipped atomically; the previous version stays on disk. The
package's health check runs in the new directory within ``health_timeout_s``; it must exit 0,
and the link to the server must be up. Otherwise ``current`` is flipped back and the result
says so (code 1), naming the version that is current again. Older versions than the previous
one are removed after a successful install.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from wire.commands import PACE_BYTES_PER_S, PACE_RANGE
from wire.package import NAME_RE, Manifest, PackageError, read_manifest, statement

log = logging.getLogger(__name__)

BLOCK_START = 16 * 1024  # download block: read, written and fsynced at a time (see BlockSize)
BLOCK_FLOOR = 4 * 1024
BLOCK_CAP = 256 * 1024
BLOCK_SECONDS = 1.0  # a block should take about this long to arrive
DOWNLOAD_TIMEOUT_S = 30.0
DOWNLOAD_ATTEMPTS = 5
PENDING = "pending.json"  # written before ``current`` flips, removed once the health check decided

UpdateError = PackageError  # a package is unusable (its manifest, its download, its unpacking); the message says why


class Refused(UpdateError):
    """The update must not be installed (signature, hash, model, version floor)."""


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Orders 1.2.10 after 1.2.9; non-numeric parts compare as text after numbers."""
    parts = re.split(r"[.\-+]", version.strip())
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in parts if p)


# ---------------------------------------------------------------- install layout
def component_dir(data_dir: Path, component: str) -> Path:
    return data_dir / "components" / component


def current_version(data_dir: Path, component: str) -> str | None:
    link = component_dir(data_dir, component) / "current"
    try:
        return os.readlink(link).rstrip("/").split("/")[-1]
    except OSError:
        return None


def _point_current(cdir: Path, version: str | None) -> None:
    link = cdir / "current"
    if version is None:
        link.unlink(missing_ok=True)
        return
    tmp = cdir / ".current.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)
    os.replace(tmp, link)  # atomic: never a moment without a current version
    fd = os.open(cdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_pending(data_dir: Path) -> list[str]:
    """At start-up: an install whose health check never decided (power cut, agent killed) is rolled
    back, since nothing proved the new version healthy. Returns what was rolled back."""
    out = []
    root = Path(data_dir) / "components"
    for marker in root.glob(f"*/{PENDING}") if root.is_dir() else []:
        try:
            info = json.loads(marker.read_text())
            previous = info.get("previous")
        except (OSError, ValueError):
            previous = None
        _point_current(marker.parent, previous)
        marker.unlink(missing_ok=True)
        log.error("update of %s interrupted before its health check passed: rolled back to %s",
                  marker.parent.name, previous or "nothing")
        out.append(f"{marker.parent.name}: {previous or 'none'}")
    return out


def _unpack(archive: Path, dest: Path) -> None:
    """Into ``dest`` through ``dest.unpack`` (removed on any failure): regular files and folders only, nothing
    outside ``dest``, on Pythons with and without tarfile's extraction filters (:mod:`agent.untar`)."""
    from .untar import unpack

    try:
        unpack(archive, dest)
    except Exception as err:  # noqa: BLE001 - whatever it was, the update fails with the reason, nothing left over
        raise UpdateError(f"cannot unpack: {err}") from err


# ---------------------------------------------------------------- download
class BlockSize:
    """How much the download reads, writes and fsyncs at a time: the most a power cut can cost, and what a
    weak link has to deliver before the next bit of progress is safe on disk.

    Starts at :data:`BLOCK_START`; doubles after a full block that arrived within :data:`BLOCK_SECONDS`
    (up to :data:`BLOCK_CAP`, and to no more than one second of the pace, so pacing stays smooth);
    halves after a block that took over twice that, and after a read that failed or timed out (the
    resumed request starts smaller); never below :data:`BLOCK_FLOOR`. It lives for one download
    (every attempt of it). ``history`` records each change, for the logs and the tests."""

    def __init__(self, pace: float = PACE_BYTES_PER_S) -> None:
        self.cap = BLOCK_CAP if pace <= 0 else max(BLOCK_FLOOR, min(BLOCK_CAP, int(pace * BLOCK_SECONDS)))
        self.size = min(BLOCK_START, self.cap)
        self.history: list[tuple[str, int]] = [("start", self.size)]

    def arrived(self, nbytes: int, seconds: float) -> None:
        if nbytes >= self.size and seconds <= BLOCK_SECONDS and self.size < self.cap:
            self.size = min(self.cap, self.size * 2)
            self.history.append(("grow", self.size))
        elif seconds > 2 * BLOCK_SECONDS:
            self._shrink("slow")

    def failed(self) -> None:
        self._shrink("failed")

    def _shrink(self, why: str) -> None:
        self.size = max(BLOCK_FLOOR, self.size // 2)
        self.history.append((why, self.size))


def download(url: str, dest: Path, size: int, sha256_hex: str, pace: float = PACE_BYTES_PER_S,
             timeout: float = DOWNLOAD_TIMEOUT_S, attempts: int = DOWNLOAD_ATTEMPTS,
             blocks: BlockSize | None = None) -> Path:
    """Fetch ``url`` into ``dest`` (resuming ``dest.part``), paced, in blocks sized to the link
    (:class:`BlockSize`); verify size and SHA-256.

    Raises Refused when the content is not what was signed (the partial file is removed), and
    UpdateError when the server cannot be reached after ``attempts`` tries (the part is kept for
    the next attempt)."""
    blocks = blocks or BlockSize(pace)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_err = ""
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            try:
                _fetch(url, part, have, size, pace, timeout, blocks)
            except Refused:
                part.unlink(missing_ok=True)
                raise
            except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as err:
                last_err = str(getattr(err, "reason", err)) or type(err).__name__
                blocks.failed()
                log.warning("update download interrupted at %d of %d bytes (%s); resuming in %d KiB blocks",
                            part.stat().st_size if part.exists() else 0, size, last_err, blocks.size // 1024)
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
                continue
        got = part.stat().st_size if part.exists() else 0
        if got != size:
            part.unlink(missing_ok=True)
            raise Refused(f"size mismatch: got {got} bytes, the command says {size}")
        h = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                h.update(block)
        if h.hexdigest() != sha256_hex.lower():
            part.unlink(missing_ok=True)
            raise Refused(f"sha256 mismatch: got {h.hexdigest()[:16]}..., expected {sha256_hex[:16]}...")
        os.replace(part, dest)
        return dest
    raise UpdateError(f"download failed after {attempts} attempts: {last_err}")


def _fetch(url: str, part: Path, have: int, size: int, pace: float, timeout: float, blocks: BlockSize) -> None:
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL from a signed command
        if have and resp.status != 206:
            have = 0  # the server ignored the range: start again
        mode = "ab" if have else "wb"
        t0, got = time.monotonic(), 0
        with open(part, mode) as f:
            while True:
                t_read = time.monotonic()
                block = resp.read(blocks.size)
                if not block:
                    break
                if have + got + len(block) > size:
                    raise Refused(f"the server sent more than the {size} bytes the command names")
                f.write(block)
                f.flush()
                os.fsync(f.fileno())  # what arrived is kept, whatever happens next
                got += len(block)
                blocks.arrived(len(block), time.monotonic() - t_read)
                if pace > 0:
                    ahead = got / pace - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
    # urllib returns b"" when the link drops mid-body: keep what arrived and resume, never refuse a short read
    if have + got < size:
        raise ConnectionError(f"connection closed after {have + got} of {size} bytes")


# ---------------------------------------------------------------- the command
def _terminal_model(agent: Any) -> str | None:
    from .collectors import read_component_version

    src = agent.cfg.components.get("model")
    if src is None:
        return None
    return read_component_version(src.file, src.command, src.pattern)


def _installed_version(agent: Any, component: str) -> str | None:
    v = current_version(agent.data_dir, component)
    if v is not None:
        return v
    if component == "agent":
        from wire import __version__

        return __version__
    src = agent.cfg.components.get(component)
    if src is not None:
        from .collectors import read_component_version

        return read_component_version(src.file, src.command, src.pattern)
    return None


def _verify_signature(agent: Any, params: dict[str, Any]) -> str:
    import msgspec

    from wire.commands import Endorsement
    from wire.signing import SignatureError, verify_detached

    endo = params["endorsement"]
    try:
        endorsement = msgspec.convert(endo, Endorsement)
    except msgspec.ValidationError as err:
        raise Refused(f"update key endorsement unreadable: {err}") from err
    check = getattr(agent, "signed_check", verify_detached)
    try:
        key = check(agent.cfg.path(agent.cfg.link.ca_file), endorsement, "update",
                              statement(str(params["component"]), str(params["version"]), str(params["sha256"])),
                              bytes(params["signature"]), agent.clock.now(),
                              frozenset(agent.cfg.commands.revoked_keys))
    except SignatureError as err:
        raise Refused(f"package signature: {err}") from err
    return key.key_id


def check(agent: Any, params: dict[str, Any]) -> tuple[str, str | None]:
    """Everything that can be refused before a byte is downloaded; returns (key id, installed version)."""
    component, version = str(params["component"]), str(params["version"])
    if not NAME_RE.match(component) or not NAME_RE.match(version) or version == "current":
        raise Refused("component or version is not a plain name")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", str(params["sha256"])):
        raise Refused("sha256 is not 64 hex digits")
    pace = params.get("pace_bytes_per_s", PACE_BYTES_PER_S)
    if isinstance(pace, bool) or not isinstance(pace, int | float) or not PACE_RANGE[0] <= pace <= PACE_RANGE[1]:
        raise Refused(f"pace_bytes_per_s must be {PACE_RANGE[0]}..{PACE_RANGE[1]}")
    key_id = _verify_signature(agent, params)
    models = [str(m) for m in params.get("models") or []]
    if models:
        model = _terminal_model(agent)
        if model is None:
            raise Refused(f"package is for models {', '.join(models)}; this terminal's model is unknown")
        if model not in models:
            raise Refused(f"package is for models {', '.join(models)}, this terminal is {model}")
    installed = _installed_version(agent, component)
    if installed is not None and not params.get("allow_downgrade"):
        if version_key(version) <= version_key(installed):
            raise Refused(f"version {version} is not above the installed {installed} (no downgrade without "
                          "allow_downgrade)")
    return key_id, installed


def _health(agent: Any, new_dir: Path, manifest: Manifest, timeout: float) -> tuple[bool, str]:
    argv = list(manifest.health_check)
    if argv[0].startswith("./"):
        argv[0] = str(new_dir / argv[0][2:])
    deadline = time.monotonic() + timeout
    env = dict(os.environ, POSFLEET_COMPONENT_DIR=str(new_dir), POSFLEET_COMPONENT=manifest.component,
               POSFLEET_VERSION=manifest.version, POSFLEET_PYTHON=sys.executable)
    try:
        proc = subprocess.run(argv, cwd=new_dir, capture_output=True, text=True, timeout=timeout, env=env,  # noqa: S603
                              check=False)
    except subprocess.TimeoutExpired:
        return False, f"health check did not finish within {timeout:g} s"
    except OSError as err:
        return False, f"health check could not start: {err.strerror or err}"
    tail = (proc.stdout + proc.stderr).strip()[-300:]
    if proc.returncode != 0:
        return False, f"health check exited {proc.returncode}: {tail}"
    link = getattr(agent, "link", None)
    while link is not None and not link.connected:
        if time.monotonic() > deadline:
            return False, "health check passed but the link to the server is down"
        time.sleep(0.5)
    return True, tail


def apply_update(agent: Any, cmd: Any, params: dict[str, Any]) -> tuple[int, str]:
    """The ``software_update`` command: (0, ...) installed; (1, ...) failed and rolled back; (2, ...) refused."""
    component, version = str(params["component"]), str(params["version"])
    try:
        key_id, installed = check(agent, params)
    except Refused as err:
        return 2, f"refused: {err}"
    data_dir = Path(agent.data_dir)
    archive = data_dir / "updates" / f"{str(params['sha256']).lower()}.tar.gz"
    try:
        download(str(params["url"]), archive, int(params["size"]), str(params["sha256"]),
                 pace=float(params.get("pace_bytes_per_s") or PACE_BYTES_PER_S))
        manifest = read_manifest(archive)
    except Refused as err:
        return 2, f"refused: {err}"
    except UpdateError as err:
        return 1, f"failed: {err}"
    if manifest.component != component or manifest.version != version:
        archive.unlink(missing_ok=True)
        return 2, (f"refused: the manifest says {manifest.component} {manifest.version}, the signed command "
                   f"{component} {version}")
    cdir = component_dir(data_dir, component)
    cdir.mkdir(parents=True, exist_ok=True)
    previous = current_version(data_dir, component)
    new_dir = cdir / version
    if component == "agent" and (cdir / "handover.json").exists():
        return 1, "failed: an update of the agent is still handing over; send it again once that one has a result"
    try:
        _unpack(archive, new_dir)
    except UpdateError as err:
        return 1, f"failed: {err}"
    if component == "agent":  # the running agent itself: the new release takes over and reports (agent.release)
        from .release import hand_over

        archive.unlink(missing_ok=True)
        return hand_over(agent, cmd, params, manifest, new_dir, previous, installed, key_id)
    marker = cdir / PENDING
    marker.write_text(json.dumps({"command": getattr(cmd, "id", ""), "version": version, "previous": previous}))
    _point_current(cdir, version)
    log.warning("%s %s installed (previous %s); running its health check", component, version, previous or "none")
    ok, detail = _health(agent, new_dir, manifest, float(params.get("health_timeout_s") or 300))
    if not ok:
        _point_current(cdir, previous)
        marker.unlink(missing_ok=True)
        log.error("%s %s failed its health check (%s); rolled back to %s", component, version, detail,
                  previous or "nothing")
        return 1, (f"rolled back: {component} {version} failed its health check ({detail}); "
                   f"current version: {previous or installed or 'none'}")
    marker.unlink(missing_ok=True)
    archive.unlink(missing_ok=True)
    for old in cdir.iterdir():
        if old.is_dir() and not old.is_symlink() and old.name not in (version, previous):
            shutil.rmtree(old, ignore_errors=True)
    return 0, (f"installed {component} {version} (key {key_id}); previous {previous or installed or 'none'} kept; "
               f"health check passed{': ' + detail if detail else ''}")
