"""An operator who installs another version of the terminal package means that code to run (issue 13: "software
updates of the agent itself keep working from the package layout"): an over-the-air release made current before
the package changed no longer wins over it; while the package stays, the release keeps running.

Each case runs the real launcher (``agent.release.launch``) in its own process, with a release that says so when
the launcher execs into it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.release import PACKAGE_SEEN, installed_version

RUN_PY = "print('release', __file__.split('/')[-2], 'ran')\n"


def _data(tmp_path: Path, release: str, seen: str | None) -> Path:
    cdir = tmp_path / "components" / "agent"
    (cdir / release).mkdir(parents=True)
    (cdir / release / "run.py").write_text(RUN_PY)
    (cdir / "current").symlink_to(release)
    if seen is not None:
        (cdir / PACKAGE_SEEN).write_text(seen + "\n")
    return cdir


def _launch(tmp_path: Path) -> str:
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s');"
            f"from agent.release import launch; launch({str(tmp_path)!r}, []); print('installed package ran')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout


def test_the_release_runs_while_the_package_stays(tmp_path: Path) -> None:
    cdir = _data(tmp_path, "9.9.1", seen=installed_version())
    assert _launch(tmp_path).strip() == "release 9.9.1 ran"
    assert (cdir / "current").is_symlink()


@pytest.mark.parametrize("before", ["0.0.1", "99.0"], ids=["upgraded", "downgraded"])
def test_a_changed_package_runs_instead_of_an_older_release(tmp_path: Path, before: str) -> None:
    cdir = _data(tmp_path, "9.9.1", seen=before)
    out = _launch(tmp_path)
    assert "installed package ran" in out and "release 9.9.1 ran" not in out, out
    assert f"the installed package changed from {before} to {installed_version()}" in out, out
    assert not (cdir / "current").exists() and (cdir / "9.9.1" / "run.py").is_file()  # kept for rollbacks
    assert (cdir / PACKAGE_SEEN).read_text().strip() == installed_version()
    # and the next start stays on the package
    assert _launch(tmp_path).strip() == "installed package ran"


def test_first_start_of_this_launcher_keeps_a_newer_release_and_drops_an_older_one(tmp_path: Path) -> None:
    newer = _data(tmp_path / "a", "99.0.0", seen=None)
    assert _launch(tmp_path / "a").strip() == "release 99.0.0 ran"
    assert (newer / PACKAGE_SEEN).read_text().strip() == installed_version()
    older = _data(tmp_path / "b", "0.0.1", seen=None)
    assert "installed package ran" in _launch(tmp_path / "b")
    assert not (older / "current").exists()
