"""Every relative link in the repository's markdown resolves inside the repository (issue 13, docs).

For each ``*.md`` file (outside .venv, .git, node_modules and tool caches): every inline link or image
(``[text](path)``, ``[text](path#anchor)``, ``![alt](path)``) and every reference definition
(``[label]: path``) outside code blocks and code spans must name a file or folder that exists inside the
repository. ``http(s)://`` and ``mailto:`` links are not followed; any other scheme, an absolute path or a
``../`` that climbs out of the repository root is a failure (a dead link in any clone). An ``#anchor`` into a
markdown file (or into the same file) must match one of its headings, slugged as GitHub does, or an HTML
``id``/``name`` in it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", "venv", ".git", "node_modules", ".pytest_cache", ".ruff_cache", ".mypy_cache",
             ".hypothesis", "__pycache__", "build", "dist"}
ALLOWED_SCHEMES = ("http://", "https://", "mailto:")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") or ![alt](target); the text may hold one level of brackets ([`a`](b), [[x]](y))
_INLINE = re.compile(
    r"!?\[(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*\]"
    r"\(\s*(<[^>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
_REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_ATX = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_HTML_ID = re.compile(r"<[a-zA-Z][^>]*\s(?:id|name)\s*=\s*[\"']([^\"']+)[\"']")


def markdown_files(root: Path = ROOT) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".md")]
    return out


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked out unless ``blank_code`` is off."""
    out: list[tuple[int, str]] = []
    fence = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence = ""
            continue
        if m:
            fence = m.group(1)
            continue
        out.append((n, _CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line) if blank_code else line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link in the prose of a markdown text."""
    found = []
    for n, line in prose_lines(text):
        for m in _INLINE.finditer(line):
            found.append((n, m.group(1)))
        m = _REFDEF.match(line)
        if m:
            found.append((n, m.group(1)))
    return [(n, t[1:-1] if t.startswith("<") and t.endswith(">") else t) for n, t in found]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|(?<!\w)_|_(?!\w))", "", text)  # emphasis markers, not snake_case
    text = text.strip().lower()
    kept = "".join(
        ch for ch in text
        if ch in "-_ " or unicodedata.category(ch)[0] in "LNM" or unicodedata.category(ch) == "Pc"
    )
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a markdown text offers: heading slugs (with GitHub's -1, -2 for repeats) and HTML ids."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    lines = prose_lines(text, blank_code=False)  # a heading's code span is part of its anchor
    headings = []
    for i, (n, line) in enumerate(lines):
        m = _ATX.match(line)
        if m:
            headings.append(m.group(1))
        elif i + 1 < len(lines) and lines[i + 1][0] == n + 1 and line.strip() and _SETEXT.match(lines[i + 1][1]) \
                and not line.lstrip().startswith(("|", "-", "*", ">")):
            headings.append(line.strip())
        out.update(_HTML_ID.findall(line))
    for h in headings:
        s = slug(h)
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.add(s if k == 0 else f"{s}-{k}")
    return out


def problems(md: Path, root: Path = ROOT) -> list[str]:
    """Every link of ``md`` that does not resolve inside ``root``, each as 'file:line: target: why'."""
    root = root.resolve()
    text = md.read_text(encoding="utf-8")
    rel = md.relative_to(root) if md.resolve().is_relative_to(root) else md
    bad = []
    for n, target in links(text):
        def fail(why: str, n: int = n, target: str = target) -> None:
            bad.append(f"{rel}:{n}: ({target}): {why}")

        if not target:
            fail("empty link")
            continue
        low = target.lower()
        if low.startswith(ALLOWED_SCHEMES):
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*:", low):
            fail("a scheme other than http(s)/mailto: not inside the repository")
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part.split("?", 1)[0])
        if path_part.startswith("/"):
            fail("absolute path: use a path relative to this file")
            continue
        dest = (md.parent / path_part).resolve() if path_part else md.resolve()
        if not dest.is_relative_to(root):
            fail("leaves the repository (a dead link in any clone): copy the text into docs/ and link the copy")
            continue
        if not dest.exists():
            fail(f"no such file or folder: {dest.relative_to(root)}")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md":
            if unquote(anchor).lower() not in {a.lower() for a in anchors(dest.read_text(encoding="utf-8"))}:
                fail(f"no heading in {dest.relative_to(root)} has the anchor #{anchor}")
    return bad


FILES = markdown_files()


def test_the_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "docs/architecture.md", "docs/availability.md", "docs/scenario-format.md"} <= names
    assert not any(part in SKIP_DIRS for p in FILES for part in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("md", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_every_relative_link_resolves(md: Path) -> None:
    bad = problems(md)
    assert not bad, "dead or outside links:\n" + "\n".join(bad)


# ---------------------------------------------------------------- the checker itself, on a made-up repository
def _repo(tmp_path: Path, readme: str) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("# Guide\n\n## Put it into service\n\n## Step 2: `posfleet ca init`\n\n"
                                            "Setext title\n------------\n\n## Put it into service\n")
    (root / "deploy").mkdir()
    (tmp_path / "outside.md").write_text("# outside\n")
    (root / "README.md").write_text(readme)
    return root


def test_checker_accepts_good_links(tmp_path: Path) -> None:
    root = _repo(tmp_path, "\n".join([
        "# Top",
        "[guide](docs/guide.md) [folder](docs/) [deploy](deploy) ![img](<docs/guide.md> \"title\")",
        "[anchor](docs/guide.md#put-it-into-service) [again](docs/guide.md#put-it-into-service-1)",
        "[code heading](docs/guide.md#step-2-posfleet-ca-init) [setext](docs/guide.md#setext-title)",
        "[here](#top) [web](https://example.org/x) [mail](mailto:ops@example.org)",
        "`[not a link](../nowhere.md)`",
        "```", "[in a fence](../outside.md)", "```",
        "[ref]: docs/guide.md",
    ]))
    assert problems(root / "README.md", root) == []


@pytest.mark.parametrize("link, why", [
    ("[dead](docs/missing.md)", "no such file"),
    ("[dead anchor](docs/guide.md#no-such-heading)", "anchor"),
    ("[self anchor](#nowhere)", "anchor"),
    ("[out](../outside.md)", "leaves the repository"),
    ("[sneaky](docs/../../outside.md)", "leaves the repository"),
    ("[abs](/etc/passwd)", "absolute path"),
    ("[file](file:///etc/passwd)", "scheme"),
    ("[ref]: ../shared/reference/availability.md", "leaves the repository"),
])
def test_checker_refuses_bad_links(tmp_path: Path, link: str, why: str) -> None:
    root = _repo(tmp_path, f"# Top\n\n{link}\n")
    bad = problems(root / "README.md", root)
    assert len(bad) == 1 and why in bad[0], bad
    assert bad[0].startswith("README.md:3: ")


def test_slugs_as_github_makes_them() -> None:
    assert slug("5. Operations report as PDF (issue 4)") == "5-operations-report-as-pdf-issue-4"
    assert slug("The `posfleet` command") == "the-posfleet-command"
    assert slug("Put it into service: terminal") == "put-it-into-service-terminal"
    assert slug("a – b") == "a--b"
    assert slug("sampling.interval_s and **bold**") == "samplinginterval_s-and-bold"
    assert slug("部署与运维") == "部署与运维"
