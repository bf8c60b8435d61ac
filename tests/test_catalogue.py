"""tests/catalogue.py against the reliability catalogue and the suite: every catalogue ID mapped, every mapped test
present, every weaker or missing entry explained, and docs/reliability.md generated from the same table.

The catalogue lives in the repository's sibling folder (../shared/reference/reliability-catalogue.md), present on
developer machines and in CI; the ID check is skipped, saying so, only when that file is absent.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.catalogue import CATALOGUE, STATUSES, render

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE_MD = ROOT.parent / "shared" / "reference" / "reliability-catalogue.md"
ROW = re.compile(r"^\|\s*([DVBSRTU]\d{1,2})\s*\|\s*([^|]+?)\s*\|")


def _catalogue_rows() -> dict[str, str]:
    if not CATALOGUE_MD.is_file():
        pytest.skip(f"{CATALOGUE_MD} is absent: cannot compare tests/catalogue.py with the catalogue")
    rows = {}
    for line in CATALOGUE_MD.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _functions(path: Path) -> set[str]:
    """``name`` of every top-level function and ``Class::name`` of every method (nested classes included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.add(prefix + node.name)
            elif isinstance(node, ast.ClassDef):
                walk(node.body, f"{prefix}{node.name}::")

    walk(tree.body, "")
    return found


def test_every_catalogue_id_has_an_entry_and_no_entry_is_unknown() -> None:
    rows = _catalogue_rows()
    assert len(rows) == 49, f"the catalogue has {len(rows)} tests, not 49: the parser or the catalogue changed"
    assert sorted(set(rows) - set(CATALOGUE)) == [], "catalogue IDs without an entry in tests/catalogue.py"
    assert sorted(set(CATALOGUE) - set(rows)) == [], "entries in tests/catalogue.py for IDs the catalogue lacks"
    wrong = {cid: (e.name, rows[cid]) for cid, e in CATALOGUE.items() if e.name != rows[cid]}
    assert wrong == {}, "entry names differ from the catalogue's"


def test_every_named_test_exists() -> None:
    missing = []
    cache: dict[str, set[str]] = {}
    for cid, e in CATALOGUE.items():
        for node in e.tests:
            path, sep, func = node.partition("::")
            file = ROOT / path
            if not sep or not func or not file.is_file():
                missing.append(f"{cid}: {node} (no such file)")
                continue
            if path not in cache:
                cache[path] = _functions(file)
            if func not in cache[path]:
                missing.append(f"{cid}: {node} (no such function)")
            elif not func.rsplit("::", 1)[-1].startswith("test"):
                missing.append(f"{cid}: {node} (not a test function)")
    assert missing == [], "tests named in tests/catalogue.py that do not exist:\n" + "\n".join(missing)


def test_entries_are_well_formed() -> None:
    problems = []
    for cid, e in CATALOGUE.items():
        if e.status not in STATUSES:
            problems.append(f"{cid}: status {e.status!r}")
        if e.status in ("weaker", "missing") and not e.why.strip():
            problems.append(f"{cid}: {e.status} without a why")
        if e.status in ("full", "weaker") and not (e.tests and e.figure.strip()):
            problems.append(f"{cid}: {e.status} needs tests and the figure they assert")
        if e.status == "missing" and e.tests:
            problems.append(f"{cid}: missing, yet names tests")
        if len(set(e.tests)) != len(e.tests):
            problems.append(f"{cid}: a test named twice")
    assert problems == []


def test_docs_reliability_is_generated_from_the_table() -> None:
    doc = ROOT / "docs" / "reliability.md"
    assert doc.is_file(), "docs/reliability.md is missing: python -m tests.catalogue > docs/reliability.md"
    assert doc.read_text(encoding="utf-8") == render(), \
        "docs/reliability.md is stale: regenerate it with python -m tests.catalogue > docs/reliability.md"


def test_links_in_docs_reliability_resolve_inside_the_repository() -> None:
    doc = ROOT / "docs" / "reliability.md"
    targets = re.findall(r"\]\(([^)]+)\)", render())
    assert targets, "no links: the table lost its tests"
    for t in targets:
        resolved = (doc.parent / t).resolve()
        assert resolved.is_file() and ROOT in resolved.parents, t
