"""An update package as it travels to a terminal: the manifest, what the update key signs, and the layout of an
agent release.

A package is a ``.tar.gz`` with ``manifest.json`` at its root::

    {"component": "agent", "version": "1.4.0", "models": ["A8"], "health_check": ["./healthcheck"]}

The server builds and checks packages (``server.commands.packages``, ``server.commands.service``) with the same
reader as the terminals that install them (``agent.update``), so a package the server accepts is one a terminal
can read. The fleet's update key signs :func:`statement` (component, version and SHA-256 of the archive).

A package of component ``agent`` is a release of the agent's own code: :data:`RELEASE_PACKAGES` side by side,
the entry point :data:`ENTRY` (text :data:`RUN_PY`) and a pre-flight ``healthcheck`` (:data:`HEALTHCHECK`); the
launcher that runs it is ``agent.release``, the stager that writes it ``server.commands.packages``.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a component or version: a plain name, never a path


class PackageError(Exception):
    """A package is unusable; the message says why."""


@dataclass(frozen=True)
class Manifest:
    component: str
    version: str
    models: list[str]
    health_check: list[str]


def statement(component: str, version: str, sha256_hex: str) -> bytes:
    """The bytes the update key signs: what the package is and its exact content."""
    return b"posfleet-update\x00" + component.encode() + b"\x00" + version.encode() + b"\x00" + \
        sha256_hex.lower().encode()


def read_manifest(archive: Path) -> Manifest:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            try:
                member = tar.getmember(MANIFEST)
            except KeyError:
                try:
                    member = tar.getmember("./" + MANIFEST)
                except KeyError as err:
                    raise PackageError(f"no {MANIFEST} at the root of the package") from err
            f = tar.extractfile(member)
            if f is None or member.size > 64 * 1024:
                raise PackageError(f"{MANIFEST} is not a small regular file")
            data = json.loads(f.read().decode("utf-8"))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise PackageError(f"not a readable .tar.gz: {err}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageError(f"{MANIFEST}: not JSON: {err}") from err
    if not isinstance(data, dict):
        raise PackageError(f"{MANIFEST}: not an object")
    component, version = data.get("component"), data.get("version")
    models, check = data.get("models", []), data.get("health_check", [])
    if not isinstance(component, str) or not NAME_RE.match(component):
        raise PackageError(f"{MANIFEST}: component: a short name of letters, digits, . _ -")
    if not isinstance(version, str) or not NAME_RE.match(version) or version == "current":
        raise PackageError(f"{MANIFEST}: version: letters, digits, . _ -")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise PackageError(f"{MANIFEST}: models: a list of model names")
    if not isinstance(check, list) or not check or not all(isinstance(c, str) for c in check):
        raise PackageError(f"{MANIFEST}: health_check: a non-empty argv list")
    return Manifest(component, version, models, check)


# ---------------------------------------------------------------- an agent release
ENTRY = "run.py"

# The packages of a release, side by side in its directory (the ``posfleet`` console script runs the agent).
RELEASE_PACKAGES = ("posfleet", "agent", "wire", "drivers", "firmware_profiles")

# The file of RELEASE_PACKAGES that names the release's version (``__version__ = ...``), set by the stager.
VERSION_FILE = "wire/__init__.py"

RUN_PY = '''"""Entry point of a posfleet agent release: this directory comes first on sys.path (Python puts a
script's directory there), so this release's code runs with the terminal's Python and libraries."""
import sys

from posfleet.cli import main

sys.argv[0] = "posfleet"
main()
'''

HEALTHCHECK = """#!/bin/sh
# Pre-flight check of an agent release, run in its directory by the agent that installs it: this
# release's code imports with the terminal's Python and is the version it was signed as.
exec "${POSFLEET_PYTHON:-python3}" -c 'import sys, posfleet, posfleet.cli, agent.main, agent.release
sys.exit(0 if posfleet.__version__ == sys.argv[1] else "version " + posfleet.__version__ + ", expected " + sys.argv[1])' \\
  "$POSFLEET_VERSION"
"""


def code_root() -> Path:
    """The directory the running posfleet code was imported from (a release, or the installed package): the
    one that holds :data:`RELEASE_PACKAGES`, this module's package among them."""
    return Path(__file__).resolve().parent.parent
