"""SQL lives only in ``server/storage/`` (house rule 6, issue 15): the domains call their stores and keep their rules in
Python, so a query written in a domain would run on one backend and not be contract-tested on the other.

Every ``.py`` file of ``server/`` outside ``server/storage/`` is parsed with ``ast``: no string (f-strings' literal
parts included) may read as a statement (``SELECT ... FROM``, ``INSERT INTO``, ``UPDATE ... SET``, ``DELETE FROM``,
DDL), and no call may be a database cursor's (``.execute(...)``, ``.executemany(...)``, ``.executescript(...)``,
``.fetchone()``, ``.fetchall()``). Docstrings and comments are prose, not queries, and are not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
STORAGE = SERVER / "storage"

STATEMENT = re.compile(r"^\s*(SELECT\b.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|"
                       r"CREATE\s+(TABLE|INDEX|UNIQUE|TRIGGER)\b|ALTER\s+TABLE\b|DROP\s+TABLE\b)", re.S)
CURSOR_CALLS = frozenset({"execute", "executemany", "executescript", "execute_fetchall", "fetchone", "fetchall"})


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def scan(source: str, name: str) -> list[str]:
    """Where ``source`` holds a statement or calls a cursor: ``name:line: what``."""
    tree = ast.parse(source, name)
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose \
                and STATEMENT.match(node.value):
            found.append(f"{name}:{node.lineno}: {node.value[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CURSOR_CALLS:
            found.append(f"{name}:{node.lineno}: .{node.func.attr}(...)")
    return sorted(found)


def test_no_sql_outside_storage() -> None:
    found = [f for path in sorted(SERVER.rglob("*.py")) if STORAGE not in path.parents
             for f in scan(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "SQL outside server/storage/ (move it into the domain's store):\n" + "\n".join(found)


def test_the_check_sees_a_query_and_a_cursor_not_prose() -> None:
    source = ('"""SELECT the units FROM a list: prose."""\n'
              'async def f(db, s):\n'
              '    """INSERT INTO the docs: prose too."""\n'
              '    await db.execute(f"SELECT id FROM cmd_jobs WHERE state={s!r}")\n'
              '    x = "UPDATE audit SET actor=?"\n'
              '    return "Select a unit from the list"\n')
    assert scan(source, "f.py") == ["f.py:4: 'SELECT id FROM cmd_jobs WHERE state='", "f.py:4: .execute(...)",
                                    "f.py:5: 'UPDATE audit SET actor=?'"]
