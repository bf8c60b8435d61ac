"""The import table: which package of this repository may import which (docs/architecture.md, decision 015).

Each shared thing sits on a floor below all of its users. Every ``.py`` file of every top-level package is parsed
with ``ast`` and each import is checked against the table: ``import x``, ``from x import y`` and
``importlib.import_module("x")`` with a literal name, at module level *and* inside functions, classes and
``if TYPE_CHECKING:`` blocks (the code imports lazily, and a lazy import is a dependency all the same). Relative
imports are resolved to the module they name. Text is not an import: a generated file's source held in a string
(``wire.package.RUN_PY``) names what the *release* imports, not what its module does.

The floors, from the ground up::

    wire  counting  firmware_profiles   what crosses a wire; the contract's counting rule; the profiles' data
    drivers  pki                   peripherals; the fleet CA
    agent                          the terminal
    server                         the fleet server
    simulator  benchmarks          harnesses: real agents and server, emulated peripherals
    posfleet                       the console script: everything, lazily; nothing imports it
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Rule:
    may: frozenset[str]  # project modules it may import (a package names all of its modules); its own always
    never: frozenset[str] = frozenset()  # other top-level modules (stdlib or third-party) it must not import
    excepted: dict[str, frozenset[str]] = field(default_factory=dict)  # file -> imports of `never` allowed there


def rule(may: tuple[str, ...] = (), never: tuple[str, ...] = (), excepted: dict[str, tuple[str, ...]] | None = None
         ) -> Rule:
    return Rule(frozenset(may), frozenset(never), {f: frozenset(n) for f, n in (excepted or {}).items()})


STORAGE_AND_TRANSPORT = ("paho", "sqlite3", "aiosqlite")  # MQTT and databases belong to the agent and the server
CONFIG_FILES = ("tomllib", "tomli", "tomli_w")  # configuration files are read by the agent, the server, the CLI
EVERYTHING = ("wire", "counting", "firmware_profiles", "drivers", "pki", "agent", "server", "simulator", "benchmarks", "tests")

TABLE: dict[str, Rule] = {
    # What crosses a wire (topics, schemas, codec, signing, command parameters, the package manifest, console
    # frames): shared by the agent and the server, so it imports neither, nor anything with a disk or a socket.
    "wire": rule(never=(*STORAGE_AND_TRANSPORT, *CONFIG_FILES)),
    # The contract's counting rule (service hours, the pure counter): the server counts with it and the
    # simulator's oracle checks the server against it; a pure function of its arguments, no disk, no socket.
    "counting": rule(never=(*STORAGE_AND_TRANSPORT, *CONFIG_FILES)),
    # Data: one TOML file per peripheral model, read by drivers.profiles.
    "firmware_profiles": rule(),
    # Peripherals: knows nothing of the agent, MQTT, SQLite or configuration files. The one TOML reader is
    # drivers/profiles.py, which reads the drivers' own data (firmware_profiles/), not configuration.
    "drivers": rule(may=("firmware_profiles",), never=(*STORAGE_AND_TRANSPORT, *CONFIG_FILES),
                    excepted={"drivers/profiles.py": ("tomllib",)}),
    # The fleet CA, the broker configuration and ACL: used by the CLI, the simulator's local fleet and the tests.
    "pki": rule(may=("wire",), never=STORAGE_AND_TRANSPORT),
    # The terminal: its wire and its peripherals; never the server, the harnesses or the CLI.
    "agent": rule(may=("wire", "drivers")),
    # The fleet server: never the agent. From the drivers it takes the one redactor of ID card data, which the
    # ingest applies to what terminals send (the agent's logs use the same one).
    "server": rule(may=("wire", "counting", "drivers.idcard.mask")),
    # Harnesses run the real agent and server against emulated peripherals and a local CA.
    "simulator": rule(may=("wire", "counting", "drivers", "pki", "agent", "server")),
    "benchmarks": rule(may=("wire", "counting", "drivers", "pki", "agent", "server", "simulator", "tests")),
    # The console script, the demo and the diagnostic console's laptop side: everything, lazily.
    "posfleet": rule(may=EVERYTHING),
    # The tests may import anything (they test the CLI too); they are checked by nothing here.
    "tests": rule(may=(*EVERYTHING, "posfleet")),
}

CLI = "posfleet"  # nothing but the CLI package itself (and the tests that drive it) imports it

# Parts of a package held to less than their package's rule: (folder under the repository, project packages it
# must not import). The laptop side of the diagnostic console speaks to the terminal only over the serial line,
# so it shares with the agent only what crosses it (wire.console's frames, commands and secret-key rule,
# wire.credentials), never the agent's own console code (issue 14).
NARROWER: dict[str, tuple[str, ...]] = {
    "posfleet/diagconsole/": ("agent",),
}


def top_packages() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("."))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of everything ``source`` imports, anywhere in it. ``from a import b`` gives ``a.b``
    (b may be a module or a name in a: either way the import reaches into a)."""
    out: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            out += [(node.lineno, f"{origin}.{a.name}" if a.name != "*" else origin) for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("import_module",
                                                                                         "__import__")):
            out.append((node.lineno, node.args[0].value))
    return out


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rel: str, source: str, table: dict[str, Rule] = TABLE) -> list[str]:
    """What ``source`` (the file at ``rel``, a path under the repository) imports against the table."""
    path = ROOT / rel
    own = Path(rel).parts[0]
    r = table[own]
    projects = set(table)
    found = []
    for line, name in imports(source, module_name(path), path.name == "__init__.py"):
        top = name.split(".")[0]
        where = f"{rel}:{line}: {own} imports {name}"
        if top in projects:
            if top == own:
                continue
            narrower = [d for d, banned in NARROWER.items() if rel.startswith(d) and top in banned]
            if narrower:
                found.append(f"{where} ({narrower[0]} must not import {top}: share it through wire/)")
                continue
            if not any(within(name, allowed) for allowed in r.may):
                found.append(f"{where} ({own}/ may import only {', '.join(sorted(r.may)) or 'none of them'})")
            elif within(name, CLI) and own not in (CLI, "tests"):
                found.append(f"{where} (nothing imports the CLI package)")
        elif top in r.never and top not in r.excepted.get(rel, frozenset()):
            found.append(f"{where} ({own}/ must not import {top})")
    return found


def test_every_package_is_in_the_table() -> None:
    assert top_packages() == sorted(TABLE), "a top-level package is missing from the import table, or gone"


@pytest.mark.parametrize("package", [p for p in sorted(TABLE) if p != "tests"])
def test_imports_follow_the_table(package: str) -> None:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found += violations(rel, path.read_text(encoding="utf-8"))
    assert not found, "imports against the layering table:\n" + "\n".join(found)


def test_the_exceptions_are_still_needed() -> None:
    """An exception that no file uses any more is removed from the table."""
    for package, r in TABLE.items():
        for rel, names in r.excepted.items():
            used = {name.split(".")[0] for _, name in imports((ROOT / rel).read_text(), module_name(ROOT / rel), False)}
            assert names <= used, f"{package}: {rel} no longer imports {sorted(names - used)}: drop the exception"


# ---------------------------------------------------------------- the checker catches what it should
@pytest.mark.parametrize(("rel", "source", "expected"), [
    ("server/x.py", "def f():\n    from agent.update import read_manifest\n", "server imports agent.update"),
    ("server/commands/x.py", "from ...agent import update\n", "imports agent.update"),
    ("server/x.py", "import importlib\nimportlib.import_module('simulator.run')\n", "imports simulator.run"),
    ("server/x.py", "from drivers.modem import device\n", "imports drivers.modem.device"),
    ("agent/x.py", "class A:\n    def f(self):\n        import posfleet.cli\n", "imports posfleet.cli"),
    ("agent/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from server.app import App\n",
     "imports server.app"),
    ("drivers/x.py", "def f():\n    import sqlite3\n", "must not import sqlite3"),
    ("drivers/x.py", "import tomllib\n", "must not import tomllib"),
    ("drivers/x.py", "from paho.mqtt import client\n", "must not import paho"),
    ("wire/x.py", "from drivers.idcard.mask import redact_text\n", "wire imports drivers.idcard.mask"),
    ("simulator/x.py", "from posfleet.ca import FleetCA\n", "imports posfleet.ca"),
    ("posfleet/diagconsole/x.py", "def f():\n    from agent.console.commands import REGISTRY\n",
     "diagconsole/ must not import agent"),
])
def test_a_violation_is_found(rel: str, source: str, expected: str) -> None:
    found = violations(rel, source)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(("rel", "source"), [
    ("server/x.py", "from drivers.idcard.mask import redact_text\n"),
    ("server/x.py", "from wire.package import read_manifest\nfrom .y import z\n"),
    ("agent/console/x.py", "from ..logs import RING\nfrom drivers.errors import DriverError\n"),
    ("drivers/profiles.py", "import tomllib\n"),
    ("wire/x.py", "RUN_PY = 'from posfleet.cli import main'\n"),
    ("posfleet/x.py", "def f():\n    from simulator.run import Player\n"),
    ("posfleet/diagconsole/x.py", "from wire.credentials import prove\nfrom drivers.idcard.mask import mask_id\n"),
])
def test_an_allowed_import_passes(rel: str, source: str) -> None:
    assert violations(rel, source) == []

