"""The terminal's Debian package, built as ``./dev package`` builds it and installed into a fresh Debian root.

The root is made here with debootstrap from Debian's mirror (bookworm minbase + python3.11, systemd,
libpam-systemd, dbus, polkitd: what a terminal has before the package), tarred once under
/var/cache/posfleet-test/ and unpacked for each run. Then, with chroot (the root shares this machine's network
namespace, so the test broker on 127.0.0.1 is reachable; ``dpkg -i`` alone runs with no network at all):

* ``dpkg -i`` offline; user posfleet in dialout; the folders, owners and modes the package promises;
* the unit verifies (``systemd-analyze verify``) and its exposure is at most 3.0 (``systemd-analyze security``);
* polkitd (on a dbus-daemon started in the root) grants reboot and power-off to user posfleet and not to another
  user, and not to posfleet either once the package's rule is gone;
* ``posfleet agent enroll`` run as root gives the key to posfleet; the agent runs as posfleet from the installed
  files only, reads its key, connects to the test broker, delivers samples the server stores, and rewrites its
  configuration on a remote ``set_config``;
* ``posfleet server``, ``ca``, ``sim`` on the terminal say the fleet server is not installed there (exit 2);
* ``dpkg -i`` of the next version over it keeps the enrolment, configuration and data, and the upgraded agent runs
  and reports its new version;
* ``dpkg -r`` keeps configuration and data, ``dpkg -P`` leaves nothing but the system user (Debian policy).

* under a real systemd (a copy of the root booted with ``systemd-nspawn -b``; this machine's PID 1 is not systemd,
  but nspawn boots one in the container): the unit starts by itself as posfleet, delivers, updates itself over
  the air from the package layout (a signed ``software_update`` of the agent: the release is unpacked under
  /var/lib/posfleet, health-checked and exec'ed into by the hardened unit), and a remote reboot reboots the
  container through the polkit rule.

What cannot run here is skipped with the reason.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from simulator.local import stop_process
from tests.commands.conftest import Fleet
from tests.fleet import Broker, Pki, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = os.environ.get("POSFLEET_TEST_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = "python3.11,systemd,libpam-systemd,dbus,polkitd"
CACHE = Path(os.environ.get("POSFLEET_TEST_CACHE", "/var/cache/posfleet-test"))
SN = "HN77000001"
REBOOT_ACTIONS = ["reboot", "reboot-multiple-sessions", "reboot-ignore-inhibit",
                  "power-off", "power-off-multiple-sessions", "power-off-ignore-inhibit"]


def _run(cmd: list[str], timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _host_arch() -> str:
    return _run(["dpkg", "--print-architecture"]).stdout.strip()


def _needs() -> None:
    if platform.system() != "Linux" or not shutil.which("dpkg"):
        pytest.skip("needs a Debian-based Linux machine (dpkg)")
    if os.geteuid() != 0:
        pytest.skip("needs root: chroot, mount and dpkg inside a Debian root (./dev test as root)")
    if not shutil.which("debootstrap") and not Path("/usr/sbin/debootstrap").exists():
        pytest.skip("debootstrap is not installed (./dev installs it: apt-get install debootstrap)")
    if not Path("/usr/bin/python3.11").exists():
        pytest.skip("the package is built against Debian's /usr/bin/python3.11, absent here")


# ---------------------------------------------------------------- the packages
@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _needs()
    out = tmp_path_factory.mktemp("dist")
    arches = [_host_arch()] + (["arm64"] if _host_arch() == "amd64" else [])
    done = _run([str(REPO / "packaging" / "build-agent-deb.sh"), *arches], timeout=900, env={**os.environ, "OUT": str(out)})
    found = {a: out / f"posfleet-agent_{_version()}_{a}.deb" for a in arches}
    for deb in found.values():
        assert deb.is_file(), done.stdout + done.stderr
        installed = int(re.search(r"Installed-Size: (\d+)", _run(["dpkg-deb", "-I", str(deb)]).stdout).group(1))
        # the figures for docs/performance.md
        print(f"\n{deb.name}: {deb.stat().st_size / 1048576:.2f} MiB, installed {installed / 1024:.1f} MiB")
    return found


def _version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


NEXT_VERSION = _version() + ".9"  # an over-the-air agent release, and the next package: above this tree's version


@pytest.fixture(scope="module")
def next_deb(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The next release's package for this machine: this tree (committed and working files) with its version
    raised to NEXT_VERSION, built by the same script."""
    src = tmp_path_factory.mktemp("next-src")
    listed = _run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file() and not rel.startswith(("tests/", "docs/", "benchmarks/")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    for rel, pattern, line in (("pyproject.toml", r'^version = ".*"$', f'version = "{NEXT_VERSION}"'),
                               ("wire/__init__.py", r'^__version__ = .*$', f'__version__ = "{NEXT_VERSION}"')):
        text, n = re.subn(pattern, line, (src / rel).read_text(), count=1, flags=re.M)
        assert n == 1, rel
        (src / rel).write_text(text)
    out = tmp_path_factory.mktemp("next-dist")
    _run([str(src / "packaging" / "build-agent-deb.sh"), _host_arch()], timeout=900,
         env={**os.environ, "OUT": str(out), "PY": sys.executable})
    deb = out / f"posfleet-agent_{NEXT_VERSION}_{_host_arch()}.deb"
    assert deb.is_file(), sorted(out.iterdir())
    return deb


def test_package_contents(debs: dict[str, Path]) -> None:
    for arch, deb in debs.items():
        names = _run(["dpkg-deb", "-c", str(deb)]).stdout
        sp = "./opt/posfleet-agent/lib/python3.11/site-packages/"
        for present in ("agent/main.py", "drivers/printer/testpage.py", "wire/__init__.py", "segno/__init__.py",
                        "cryptography/", "paho/", "serial/", "msgspec/", "psutil/"):
            assert sp + present in names, f"{arch}: {present} missing"
        # no server, simulator or CA code, no server extras, none of python-escpos' image stack
        for absent in ("server/", "simulator/", "pki/", "counting/", "fastapi", "uvicorn", "aiosqlite", "jinja2", "escpos",
                       "PIL/", "qrcode", "yaml/", "barcode", "appdirs"):
            assert sp + absent not in names, f"{arch}: {absent} shipped"
        for path in ("./lib/systemd/system/posfleet-agent.service", "./usr/lib/sysusers.d/posfleet-agent.conf",
                     "./usr/lib/tmpfiles.d/posfleet-agent.conf", "./usr/share/polkit-1/rules.d/50-posfleet-agent.rules",
                     "./usr/share/posfleet-agent/agent.example.toml", "./opt/posfleet-agent/pyvenv.cfg",
                     "./usr/bin/posfleet -> /opt/posfleet-agent/bin/posfleet",
                     "./opt/posfleet-agent/bin/python3 -> /usr/bin/python3.11"):
            assert path in names, f"{arch}: {path} missing"
        # every extension module is for the package's CPU (ELF e_machine: 62 x86-64, 183 aarch64)
        tmp = deb.parent / f"x-{arch}"
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        machine = {"amd64": 62, "arm64": 183}[arch]
        sos = list(tmp.rglob("*.so"))
        assert len(sos) >= 4, sos
        for so in sos:
            assert int.from_bytes(so.read_bytes()[18:20], "little") == machine, f"{arch}: {so} is not for this CPU"
        # bytecode compiled for Python 3.11 at build time, so a read-only /opt never recompiles
        assert list(tmp.rglob("agent/__pycache__/main.cpython-311.pyc"))
        shutil.rmtree(tmp)


# ---------------------------------------------------------------- a fresh Debian root
def _base_tar(arch: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"{SUITE}-{arch}-minbase.tar"
    if tar.exists():
        return tar
    work = CACHE / f"{SUITE}-{arch}.building"
    shutil.rmtree(work, ignore_errors=True)
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={BASE_PACKAGES}", SUITE,
                           str(work), MIRROR], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        log = work / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-1500:] if log.exists() else done.stderr[-1500:]
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip(f"debootstrap {SUITE} from {MIRROR} failed (exit {done.returncode}): {detail}")
    _run(["tar", "-C", str(work), "-cf", str(tar) + ".part", "."], timeout=600)
    os.replace(str(tar) + ".part", tar)
    shutil.rmtree(work, ignore_errors=True)
    return tar


class Root:
    """A Debian root with /proc and /dev mounted; commands run in it with chroot."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounts: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def mount(self) -> None:
        for args, target in ((["-t", "proc", "proc"], "proc"), (["--bind", "/dev"], "dev")):
            mp = self.path / target
            _run(["mount", *args, str(mp)])
            self.mounts.append(mp)

    def run(self, *cmd: str, check: bool = True, offline: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        prefix = ["unshare", "--net"] if offline else []
        return _run([*prefix, "chroot", str(self.path), *cmd], check=check, timeout=timeout,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})

    def spawn(self, *cmd: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            p = subprocess.Popen(["chroot", str(self.path), *cmd], stdout=f, stderr=subprocess.STDOUT,
                                 env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        self.procs.append(p)
        return p

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        time.sleep(0.2)
        for mp in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(mp)], capture_output=True)
        self.mounts.clear()

    def tree(self) -> set[str]:
        """Every path in the root outside the mounts, /tmp and the files dpkg and the tests always touch."""
        skip = ("proc/", "dev/", "tmp/", "run/", "var/lib/dpkg/", "var/log/", "var/cache/debconf/")
        out = set()
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = os.path.relpath(dirpath, self.path)
            rel = "" if rel == "." else rel + "/"
            if rel.startswith(skip):
                dirnames[:] = []
                continue
            out.update(rel + n for n in dirnames + filenames)
        return out


@pytest.fixture(scope="module")
def root(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    arch = _host_arch()
    tar = _base_tar(arch)
    path = tmp_path_factory.mktemp("debian-root")
    with tarfile.open(tar) as t:
        t.extractall(path, filter="fully_trusted") if hasattr(tarfile, "fully_trusted_filter") else t.extractall(path)
    r = Root(path)
    r.mount()
    try:
        r.before = r.tree()  # type: ignore[attr-defined]
        shutil.copy(debs[arch], path / "tmp" / "posfleet-agent.deb")
        yield r
    finally:
        r.close()


# ---------------------------------------------------------------- install
def test_offline_install_user_and_modes(root: Root) -> None:
    done = root.run("dpkg", "-i", "/tmp/posfleet-agent.deb", offline=True)
    assert "Setting up posfleet-agent" in done.stdout, done.stdout
    ids = root.run("id", "posfleet").stdout
    assert re.search(r"groups=.*\(posfleet\)", ids) and "(dialout)" in ids, ids
    shell = root.run("getent", "passwd", "posfleet").stdout.strip().split(":")
    assert shell[5:] == ["/var/lib/posfleet", "/usr/sbin/nologin"], shell
    for folder in ("/etc/posfleet", "/var/lib/posfleet"):
        st = root.run("stat", "-c", "%U:%G %a", folder).stdout.strip()
        assert st == "posfleet:posfleet 750", (folder, st)
    assert root.run("stat", "-c", "%U %a", "/opt/posfleet-agent/bin/posfleet").stdout.strip() == "root 755"
    assert (root.path / "etc/systemd/system/multi-user.target.wants/posfleet-agent.service").is_symlink()
    assert not (root.path / "etc/posfleet/agent.toml").exists()  # the unit waits for it (ConditionPathExists)
    # the runtime is Debian's python3.11 in a virtualenv of the package's own, not the system's site-packages
    out = root.run("/opt/posfleet-agent/bin/python3", "-c",
                   "import sys, segno, cryptography, posfleet; print(sys.prefix, sys.version_info[:2], posfleet.__file__)").stdout
    assert out.startswith("/opt/posfleet-agent (3, 11) /opt/posfleet-agent/lib/python3.11/site-packages/"), out
    assert root.run("posfleet", "--version").stdout.strip().endswith(_version())
    # what the terminal package leaves out says so, rather than a traceback
    for cmd in (("server", "run"), ("ca", "init", "--dir", "/tmp/ca"), ("sim", "run", "x.json")):
        done = root.run("posfleet", *cmd, check=False)
        assert done.returncode == 2 and "is not installed here" in done.stderr and "Traceback" not in done.stderr, \
            (cmd, done.returncode, done.stderr)


def test_unit_verifies_and_is_hardened(root: Root) -> None:
    unit = "/lib/systemd/system/posfleet-agent.service"
    done = root.run("systemd-analyze", "verify", unit, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    sec = root.run("systemd-analyze", "security", "--offline=true", unit, check=False)
    level = re.search(r"Overall exposure level for posfleet-agent.service: ([\d.]+)", sec.stdout)
    assert level, sec.stdout + sec.stderr
    print(f"\nsystemd-analyze security: {level.group(1)}")
    assert float(level.group(1)) <= 3.0, sec.stdout


def test_polkit_grants_reboot_to_posfleet_only(root: Root, tmp_path: Path) -> None:
    (root.path / "run/dbus").mkdir(parents=True, exist_ok=True)
    pid = root.run("dbus-daemon", "--system", "--fork", "--print-pid").stdout.strip()
    root.pids.append(int(pid))
    root.spawn("runuser", "-u", "polkitd", "--", "/usr/lib/polkit-1/polkitd", "--no-debug", log=tmp_path / "polkitd.log")
    subjects = {user: root.spawn("runuser", "-u", user, "--", "sleep", "600", log=tmp_path / "sleep.log")
                for user in ("posfleet", "nobody")}

    def pid_of(user: str) -> str:
        # runuser's child, the sleep, running as that user
        uid = int(root.run("id", "-u", user).stdout)
        kids = wait_for(lambda: [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_sleep_of(p, uid)],
                        10, f"sleep as {user}")
        return kids[0].name

    def check(user: str, action: str) -> int:
        return root.run("pkcheck", "--action-id", f"org.freedesktop.login1.{action}", "--process", pid_of(user),
                        check=False).returncode

    wait_for(lambda: check("posfleet", "reboot") != 127 and "polkitd" in _ps_names(), 15, "polkitd")
    results = {(user, action): check(user, action) for user in subjects for action in REBOOT_ACTIONS}
    assert all(results[("posfleet", a)] == 0 for a in REBOOT_ACTIONS), results
    assert all(results[("nobody", a)] != 0 for a in REBOOT_ACTIONS), results  # 2: would need an administrator
    assert check("posfleet", "halt") != 0 and check("posfleet", "suspend") != 0  # only what it needs
    # and it is the package's rule that grants it: without the file, posfleet is refused too
    rule = root.path / "usr/share/polkit-1/rules.d/50-posfleet-agent.rules"
    aside = rule.with_suffix(".off")
    rule.rename(aside)
    try:
        wait_for(lambda: check("posfleet", "reboot") != 0, 15, "polkitd to drop the rule")
    finally:
        aside.rename(rule)
    wait_for(lambda: check("posfleet", "reboot") == 0, 15, "polkitd to load the rule again")


def _is_sleep_of(p: Path, uid: int) -> bool:
    try:
        status = (p / "status").read_text()
        return "\nName:\tsleep\n" in "\n" + status and re.search(rf"\nUid:\t{uid}\t", status) is not None
    except OSError:
        return False


def _ps_names() -> set[str]:
    names = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                names.add((p / "comm").read_text().strip())
            except OSError:
                pass
    return names


# ---------------------------------------------------------------- run
def test_agent_runs_from_the_package(root: Root, pki: Pki, broker: Broker, tmp_path: Path) -> None:
    from server.commands.keys import make_key

    ck, ce, _ = make_key(pki.ca, tmp_path / "command", "command", 30)
    fleet = Fleet(pki, broker, {"command_key": ck, "command_endorsement": ce}, tmp_path)
    server = fleet.start_server()
    agent = None
    try:
        # enrol as root, as the README says: the key and CSR go to the folder's owner
        root.run("posfleet", "agent", "enroll", "--sn", SN, "--out", "/etc/posfleet")
        for name, mode in (("terminal.key", "600"), ("terminal.csr", "644")):
            assert root.run("stat", "-c", "%U:%G %a", f"/etc/posfleet/{name}").stdout.strip() == f"posfleet:posfleet {mode}"
        etc = root.path / "etc/posfleet"
        (etc / "terminal.pem").write_bytes(pki.ca.sign_csr((etc / "terminal.csr").read_bytes(), expect_sn=SN))
        shutil.copy(pki.dir / "ca.pem", etc / "ca.pem")
        # the package's example, pointed at the test broker, sampling every 5 s, no serial ports on this machine
        config = tomllib.loads((root.path / "usr/share/posfleet-agent/agent.example.toml").read_text())
        config["link"].update(host="127.0.0.1", port=broker.port, batch_interval_s=0, backlog_rate=50.0,
                              ack_timeout_s=5, reconnect_min_s=0.2, reconnect_max_s=2.0)
        config["sampling"]["interval_s"] = 5
        del config["peripherals"], config["components"]["terminal_app"]
        (etc / "agent.toml").write_text(tomli_w.dumps(config))
        root.run("chown", "posfleet:posfleet", "/etc/posfleet/terminal.pem", "/etc/posfleet/ca.pem", "/etc/posfleet/agent.toml")
        root.run("chmod", "0640", "/etc/posfleet/agent.toml")
        check = root.run("runuser", "-u", "posfleet", "--", "posfleet", "agent", "check-config",
                         "--config", "/etc/posfleet/agent.toml", check=False)
        assert check.returncode == 0, check.stdout + check.stderr

        # the unit's command line, as its user, from the installed files only
        log = tmp_path / "agent.log"
        agent = root.spawn("runuser", "-u", "posfleet", "-g", "posfleet", "-G", "dialout", "--",
                           "/opt/posfleet-agent/bin/posfleet", "agent", "run", "--config", "/etc/posfleet/agent.toml",
                           log=log)
        fleet.wait_online(SN, timeout=60)
        wait_for(lambda: _samples(server, SN) >= 2, 60, "samples stored by the server", interval=0.5)
        assert agent.poll() is None, log.read_text()[-3000:]
        maps = _agent_maps(agent.pid)
        assert "/opt/posfleet-agent/lib/python3.11/site-packages/msgspec/_core" in maps, "not the package's runtime"
        assert "/usr/bin/python3.11" in maps, "not Debian's python3.11"

        # a remote set_config: the agent (user posfleet) rewrites /etc/posfleet/agent.toml and keeps running
        r = fleet.send(type="set_config", sn=SN, params={"changes": {"sampling.interval_s": 10}})
        assert r.status_code in (200, 201, 202), r.text
        done = fleet.wait_state(r.json()["command"]["id"], timeout=60)
        assert done["state"] == "succeeded", (done.get("output"), log.read_text()[-2000:])
        assert tomllib.loads((etc / "agent.toml").read_text())["sampling"]["interval_s"] == 10
        assert root.run("stat", "-c", "%U", "/etc/posfleet/agent.toml").stdout.strip() == "posfleet"
        assert agent.poll() is None, log.read_text()[-3000:]
        text = log.read_text()
        assert "Traceback" not in text and "Permission denied" not in text, text[-3000:]
    finally:
        stop_process(agent, timeout=15)
        fleet.stop()


def _samples(server, sn: str) -> int:  # type: ignore[no-untyped-def]
    from tests.conftest import sqlite_count

    return sqlite_count(server.db, f"SELECT count(*) FROM samples WHERE sn = '{sn}'")


def _agent_maps(pid: int) -> str:
    """The files the agent's Python process (runuser's child) has mapped: where its interpreter and modules came from."""
    import psutil

    maps = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            maps.append(Path(f"/proc/{p.pid}/maps").read_text())
        except OSError:
            pass
    return "\n".join(maps)


# ---------------------------------------------------------------- booted
def _container_pid(nspawn: subprocess.Popen[bytes]) -> int | None:
    """The container's PID 1 (systemd), a child of systemd-nspawn."""
    import psutil

    try:
        kids = psutil.Process(nspawn.pid).children()
    except psutil.Error:
        return None
    return next((k.pid for k in kids if k.name() == "systemd"), None)


def _inside(pid: int, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return _run(["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--pid", "--", *cmd], check=check,
                timeout=60)


def _journal(pid: int) -> str:
    return _inside(pid, "journalctl", "-u", "posfleet-agent", "--no-pager", "-n", "60").stdout[-4000:]


def test_booted_unit_starts_delivers_and_may_reboot(root: Root, pki: Pki, broker: Broker, tmp_path: Path) -> None:
    """The package under a real systemd: a copy of the installed root booted with ``systemd-nspawn -b`` (Debian's
    systemd-container; this machine's own PID 1 is not systemd, but nspawn boots one in the container). The unit
    starts by itself once agent.toml exists, as user posfleet with its hardening, delivers samples, and a remote
    reboot runs ``systemctl reboot`` as posfleet through polkit: the container reboots (nspawn exits 133)."""
    from server.commands.keys import make_key

    if not shutil.which("systemd-nspawn"):
        pytest.fail("systemd-nspawn is missing: ./dev installs systemd-container")
    etc = root.path / "etc/posfleet"
    if not (etc / "terminal.pem").exists():
        pytest.fail("the enrolment of test_agent_runs_from_the_package is needed first (run the whole module)")
    config = tomllib.loads((etc / "agent.toml").read_text())
    config["link"]["port"] = broker.port
    (etc / "agent.toml").write_text(tomli_w.dumps(config))
    booted = tmp_path / "booted"
    _run(["cp", "-a", "--one-file-system", f"{root.path}/.", str(booted)], timeout=300)
    ck, ce, _ = make_key(pki.ca, tmp_path / "command", "command", 30)
    uk, ue, _ = make_key(pki.ca, tmp_path / "update", "update", 30)
    fleet = Fleet(pki, broker, {"command_key": ck, "command_endorsement": ce, "update_key": uk,
                                "update_endorsement": ue}, tmp_path / "fleet")
    server = fleet.start_server()
    log = tmp_path / "nspawn.log"
    with open(log, "wb") as out:
        nspawn = subprocess.Popen(["systemd-nspawn", "-D", str(booted), "-b", "--register=no", "--keep-unit",
                                   "--console=pipe", "--machine=posfleet-test"], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        pid = wait_for(lambda: _container_pid(nspawn) or (nspawn.poll() is not None and -1), 60, "the container's systemd")
        assert pid != -1, log.read_text()[-3000:]
        wait_for(lambda: _inside(pid, "systemctl", "is-active", "posfleet-agent").stdout.strip() == "active", 90,
                 "posfleet-agent.service active in the booted container", interval=1)
        show = _inside(pid, "systemctl", "show", "posfleet-agent", "-p", "User", "-p", "MainPID").stdout
        assert "User=posfleet" in show, show
        fleet.wait_online(SN, timeout=60)
        wait_for(lambda: _samples(server, SN) >= 2, 60, "samples from the booted unit stored", interval=0.5)

        # the agent updates itself over the air from the package layout, under the unit's hardening: unpacked
        # under /var/lib/posfleet, its health check run, exec'ed into (same PID), confirmed and reported
        from tests.commands.test_agent_update import _agent_package, _update

        main_pid = _inside(pid, "systemctl", "show", "posfleet-agent", "-p", "MainPID", "--value").stdout.strip()
        cid = _update(fleet, SN, _agent_package(tmp_path, fleet, NEXT_VERSION))
        done = fleet.wait_state(cid, timeout=120)
        assert done["state"] == "succeeded" and done["output"].startswith(f"installed agent {NEXT_VERSION}"), \
            (done, _journal(pid))
        wait_for(lambda: server.get(f"/api/v1/units/{SN}").json().get("agent_version") == NEXT_VERSION, 60,
                 "the unit to report the release's version", interval=0.5)
        assert _inside(pid, "systemctl", "show", "posfleet-agent", "-p", "MainPID", "--value").stdout.strip() \
            == main_pid, "the release runs in the unit's own process (exec), no restart"
        assert _inside(pid, "readlink", "/var/lib/posfleet/components/agent/current").stdout.strip() == NEXT_VERSION

        r = fleet.send(type="reboot", sn=SN, params={})
        assert r.status_code in (200, 201, 202), r.text
        code = wait_for(lambda: nspawn.poll(), 120, "the container to reboot on the remote command", interval=0.5)
        journal = _run(["journalctl", "-D", str(booted / "var/log/journal"), "-u", "posfleet-agent", "--no-pager"],
                       check=False).stdout if (booted / "var/log/journal").exists() else ""
        assert code == 133, f"nspawn exited {code}, not 133 (reboot): {log.read_text()[-2000:]} {journal[-2000:]}"
    finally:
        if nspawn.poll() is None:
            nspawn.terminate()
            try:
                nspawn.wait(30)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait()
        fleet.stop()
        shutil.rmtree(booted, ignore_errors=True)


# ---------------------------------------------------------------- upgrade
def test_upgrade_keeps_enrolment_configuration_and_data(root: Root, next_deb: Path, pki: Pki, broker: Broker,
                                                        tmp_path: Path) -> None:
    from server.commands.keys import make_key

    etc = root.path / "etc/posfleet"
    if not (etc / "terminal.pem").exists():
        pytest.fail("the enrolment of test_agent_runs_from_the_package is needed first (run the whole module)")

    def state() -> dict[str, str]:
        files = root.run("find", "/etc/posfleet", "/var/lib/posfleet", "-printf", r"%p %U:%G %m %s\n").stdout
        return {line.split()[0]: line for line in files.splitlines() if not line.startswith("/var/lib/posfleet/")
                or "/outbox" not in line}  # the outbox's size moves with every sample

    before, uid = state(), root.run("id", "-u", "posfleet").stdout
    keyhash = root.run("sha256sum", "/etc/posfleet/terminal.key", "/etc/posfleet/agent.toml").stdout
    shutil.copy(next_deb, root.path / "tmp" / "posfleet-agent-next.deb")
    done = root.run("dpkg", "-i", "/tmp/posfleet-agent-next.deb", offline=True)
    assert f"Unpacking posfleet-agent ({NEXT_VERSION}) over ({_version()})" in done.stdout, done.stdout
    assert root.run("posfleet", "--version").stdout.strip().endswith(NEXT_VERSION)
    assert root.run("id", "-u", "posfleet").stdout == uid
    assert root.run("sha256sum", "/etc/posfleet/terminal.key", "/etc/posfleet/agent.toml").stdout == keyhash
    assert state() == before
    assert (root.path / "etc/systemd/system/multi-user.target.wants/posfleet-agent.service").is_symlink()
    assert (root.path / "usr/share/polkit-1/rules.d/50-posfleet-agent.rules").is_file()

    # the upgraded agent runs as its user with the enrolment it had, and reports its new version
    config = tomllib.loads((etc / "agent.toml").read_text())
    config["link"]["port"] = broker.port
    (etc / "agent.toml").write_text(tomli_w.dumps(config))
    ck, ce, _ = make_key(pki.ca, tmp_path / "command", "command", 30)
    fleet = Fleet(pki, broker, {"command_key": ck, "command_endorsement": ce}, tmp_path)
    server = fleet.start_server()
    agent = root.spawn("runuser", "-u", "posfleet", "-g", "posfleet", "-G", "dialout", "--",
                       "/opt/posfleet-agent/bin/posfleet", "agent", "run", "--config", "/etc/posfleet/agent.toml",
                       log=tmp_path / "agent.log")
    try:
        fleet.wait_online(SN, timeout=60)
        wait_for(lambda: server.get(f"/api/v1/units/{SN}").json().get("agent_version") == NEXT_VERSION, 60,
                 "the upgraded agent's version on the server", interval=0.5)
    finally:
        stop_process(agent, timeout=15)
        fleet.stop()


# ---------------------------------------------------------------- remove, purge
def test_remove_then_purge(root: Root) -> None:
    root.run("dpkg", "-r", "posfleet-agent", offline=True)
    assert not (root.path / "opt/posfleet-agent").exists()
    assert not (root.path / "usr/bin/posfleet").exists()
    assert not (root.path / "usr/share/polkit-1/rules.d/50-posfleet-agent.rules").exists()
    assert (root.path / "etc/posfleet").is_dir() and (root.path / "var/lib/posfleet").is_dir()  # configuration, data
    root.run("dpkg", "-P", "posfleet-agent", offline=True)
    assert "posfleet" in root.run("getent", "passwd", "posfleet").stdout  # kept, as Debian policy advises
    left = root.tree() - root.before  # type: ignore[attr-defined]
    assert left == set(), sorted(left)
    gone = root.before - root.tree()  # type: ignore[attr-defined]
    # /opt is owned by no Debian package (debootstrap makes it, empty): dpkg removes an empty folder only this
    # package listed, as it does for every package under /opt
    assert gone <= {"opt"}, sorted(gone)
