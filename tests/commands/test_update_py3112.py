"""Update packages unpack the same on Debian 12's own Python 3.11.2 as on newer ones (issue 13, item 5).

``tarfile``'s extraction filters came in 3.11.4: on 3.11.2 ``extractall(..., filter="data")`` is a TypeError, so
every software update failed there and left a ``.unpack`` folder behind. ``agent.untar`` (what ``agent.update``
unpacks with) checks every member itself and extracts member by member where the filter is missing.

Real parts: the extraction runs in a child process of Debian's ``/usr/bin/python3`` (3.11.2, with nothing but the
standard library: ``agent.untar`` needs no more), of this virtualenv's Python with the filter, and of this
virtualenv's Python with the filter taken away; a good package and hostile ones (symbolic link, hard link, ``../``
name, absolute name, device, FIFO) give the same tree or the same refusal in all three, and never a ``.unpack``
folder left over or a byte outside the target. This machine is the kind CI runs on: a missing ``/usr/bin/python3``
or one that is not 3.11.2 fails the test (it does not skip).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")
DEBIAN_VERSION = "3.11.2"

# Runs in the child: unpack each archive into its own folder and describe what came out.
CHILD = r'''
import json, os, sys, tarfile
from pathlib import Path
if sys.argv[1] == "nofilter":
    for name in ("data_filter", "tar_filter", "fully_trusted_filter"):
        if hasattr(tarfile, name):
            delattr(tarfile, name)
from agent.untar import has_filter, unpack
work = Path(sys.argv[2])
out = {"python": sys.version.split()[0], "filter": has_filter(), "results": {}}
for archive in sorted(work.glob("*.tar.gz")):
    case = archive.name[:-len(".tar.gz")]
    area = work / ("area-" + sys.argv[1]) / case
    area.mkdir(parents=True)
    dest = area / "1.0.0"
    try:
        unpack(archive, dest)
        error = None
    except Exception as err:
        error = type(err).__name__ + ": " + str(err)
    tree = []
    for dirpath, dirnames, filenames in os.walk(area):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            kind = "link" if os.path.islink(p) else "dir" if p.is_dir() else "file" if p.is_file() else "other"
            entry = {"path": str(p.relative_to(area)), "kind": kind}
            if kind == "file":
                entry["mode"] = oct(st.st_mode & 0o7777)
                entry["data"] = p.read_bytes().decode("latin-1")
                entry["mtime"] = int(st.st_mtime)
            tree.append(entry)
    outside = sorted(str(p.relative_to(work)) for p in work.rglob("escaped*"))
    out["results"][case] = {"error": error, "tree": sorted(tree, key=lambda e: e["path"]), "outside": outside}
print(json.dumps(out))
'''


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _archive(path: Path, hostile: tuple[str, dict[str, object]] | None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "manifest.json", b'{"component": "app", "version": "1.0.0", "health_check": ["./hc"]}')
        _add(tar, "bin", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "bin/hc", b"#!/bin/sh\nexit 0\n", mode=0o4777)  # setuid and world-writable: dropped
        _add(tar, "lib/deep/data.txt", b"payload", mode=0o600)  # its folders are not members
        _add(tar, "notes.txt", b"no exec for the owner", mode=0o677)  # executable by others only: by nobody
        if hostile is not None:
            name, attrs = hostile
            _add(tar, name, b"evil", **attrs)


HOSTILE: dict[str, tuple[str, dict[str, object]] | None] = {
    "good": None,
    "symlink": ("bin/sh", {"type": tarfile.SYMTYPE, "linkname": "/bin/sh"}),
    "symlink_inside": ("bin/alias", {"type": tarfile.SYMTYPE, "linkname": "hc"}),
    "hardlink": ("passwd", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
    "hardlink_inside": ("bin/hc2", {"type": tarfile.LNKTYPE, "linkname": "bin/hc"}),
    "dotdot": ("../../escaped-dotdot", {}),
    "dotdot_inside": ("lib/../../escaped-inner", {}),
    "absolute": ("/tmp/escaped-absolute", {}),
    "device": ("dev/null", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    "fifo": ("pipe", {"type": tarfile.FIFOTYPE}),
}
REFUSAL = {"symlink": "symbolic link", "symlink_inside": "symbolic link", "hardlink": "hard link",
           "hardlink_inside": "hard link", "dotdot": "'..'", "dotdot_inside": "'..'", "absolute": "absolute",
           "device": "device", "fifo": "FIFO"}


def _run_child(python: str, mode: str, work: Path) -> dict:
    out = subprocess.run([python, "-c", CHILD, mode, str(work)], capture_output=True, text=True, timeout=60,
                         cwd=work, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(work)})
    assert out.returncode == 0, f"{python} ({mode}) failed:\n{out.stderr}"
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("untar")
    for case, hostile in HOSTILE.items():
        _archive(w / f"{case}.tar.gz", hostile)
    return w


def test_debian_python_is_the_one_ci_needs() -> None:
    """Not a skip: CI runs on Debian 12, whose python3 is the oldest this project claims to support."""
    assert DEBIAN_PYTHON.exists(), (f"{DEBIAN_PYTHON} is missing: install Debian 12's python3 (apt-get install "
                                    f"python3); the update tests must run on Python {DEBIAN_VERSION}")
    out = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sys, tarfile; print(sys.version.split()[0], "
                          "hasattr(tarfile, 'data_filter'))"], capture_output=True, text=True, timeout=30)
    version, has = out.stdout.split()
    assert version == DEBIAN_VERSION, (f"{DEBIAN_PYTHON} is Python {version}, not Debian 12's {DEBIAN_VERSION}: "
                                       "this test must run the unpacking on the oldest Python the terminals have")
    assert has == "False", "Python 3.11.2 was expected to have no tarfile extraction filters"


def _python_with_filters() -> str:
    """A Python 3.11.4+ (tarfile's extraction filters) beside Debian's: this test's own when it has them, else the
    first on PATH that does (./dev makes the suite's virtualenv from Debian's 3.11.2, which has none)."""
    import shutil

    candidates = [sys.executable] + [p for n in ("python3", "python3.13", "python3.12", "python3.11")
                                     if (p := shutil.which(n)) is not None]
    for python in candidates:
        done = subprocess.run([python, "-c", "import tarfile; print(hasattr(tarfile, 'data_filter'))"],
                              capture_output=True, text=True, timeout=30)
        if done.stdout.strip() == "True":
            return python
    pytest.fail(f"no Python with tarfile extraction filters among {candidates}: the comparison needs one")


def test_same_tree_and_same_refusals_on_3_11_2_and_newer(work: Path) -> None:
    test_debian_python_is_the_one_ci_needs()
    newer = _python_with_filters()
    old = _run_child(str(DEBIAN_PYTHON), "debian", work)
    new = _run_child(newer, "venv", work)
    forced = _run_child(newer, "nofilter", work)
    assert old["python"] == DEBIAN_VERSION and not old["filter"]
    assert new["filter"] and not forced["filter"]
    assert old["results"] == new["results"] == forced["results"]
    res = old["results"]

    good = res["good"]
    assert good["error"] is None and good["outside"] == []
    files = {e["path"]: e for e in good["tree"] if e["kind"] == "file"}
    assert {e["path"] for e in good["tree"]} == {
        "1.0.0", "1.0.0/manifest.json", "1.0.0/bin", "1.0.0/bin/hc", "1.0.0/lib", "1.0.0/lib/deep",
        "1.0.0/lib/deep/data.txt", "1.0.0/notes.txt"}
    assert files["1.0.0/bin/hc"]["mode"] == oct(0o755) and files["1.0.0/bin/hc"]["data"] == "#!/bin/sh\nexit 0\n"
    assert files["1.0.0/lib/deep/data.txt"]["mode"] == oct(0o600)
    assert files["1.0.0/notes.txt"]["mode"] == oct(0o644)
    assert files["1.0.0/manifest.json"]["mode"] == oct(0o644)
    assert all(f["mtime"] == 1_700_000_000 for f in files.values())

    for case, word in REFUSAL.items():
        r = res[case]
        assert r["error"] is not None and r["error"].startswith("UnsafeArchive: refused:"), (case, r)
        assert word in r["error"], (case, r["error"])
        assert r["tree"] == [], (case, "nothing may be left: no .unpack folder, no half-written version", r["tree"])
        assert r["outside"] == [], (case, r["outside"])
    assert not Path("/tmp/escaped-absolute").exists()


def test_a_damaged_archive_leaves_nothing_behind_on_3_11_2(work: Path, tmp_path: Path) -> None:
    """A truncated download that still passed as an archive: the .unpack folder is removed (it was left on 3.11.2)."""
    test_debian_python_is_the_one_ci_needs()
    (tmp_path / "truncated.tar.gz").write_bytes((work / "good.tar.gz").read_bytes()[:200])
    res = _run_child(str(DEBIAN_PYTHON), "debian", tmp_path)["results"]["truncated"]
    assert res["error"] is not None and res["tree"] == [], res


def test_agent_update_unpack_reports_and_cleans_up(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The update's own step, on this Python with the filter taken away (as on 3.11.2): refused with the reason,
    no .unpack folder; a good package lands in place."""
    from agent import update

    for name in ("data_filter", "tar_filter", "fully_trusted_filter"):
        monkeypatch.delattr(tarfile, name, raising=False)
    with pytest.raises(update.UpdateError, match="cannot unpack: refused: 'bin/sh' is a symbolic link"):
        update._unpack(work / "symlink.tar.gz", tmp_path / "1.0.0")
    assert list(tmp_path.iterdir()) == []
    update._unpack(work / "good.tar.gz", tmp_path / "1.0.0")
    assert (tmp_path / "1.0.0" / "bin" / "hc").read_bytes() == b"#!/bin/sh\nexit 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.0.0"]


def test_the_suite_runs_on_debian_python() -> None:
    """``./dev`` makes the virtualenv from the distribution's python3 (Debian 12: 3.11.2), so every update test (and
    the rest of the suite) runs on the oldest Python the project supports, as CI must (issue 13, item 5)."""
    if not DEBIAN_PYTHON.exists():
        pytest.fail(f"{DEBIAN_PYTHON} is missing: this suite expects a Debian/Ubuntu machine (./dev)")
    debian = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if tuple(int(x) for x in debian.split(".")[:2]) < (3, 11):
        pytest.skip(f"{DEBIAN_PYTHON} is {debian}, older than the project supports: ./dev uses python3 from PATH")
    here = ".".join(map(str, sys.version_info[:3]))
    assert here == debian, (f"the suite runs on Python {here} ({sys.executable}), not the distribution's {debian}: "
                            "remove .venv and run ./dev again")
