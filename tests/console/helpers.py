from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from posfleet.diagconsole import remote as remote_cli


def remote(port: str, *words: str, credential: Path | None = None, as_json: bool = True,
           lang: str = "en") -> tuple[int, str, Any]:
    """`posfleet diag remote --port PORT --lang LANG [--credential F] [--json] WORDS...`: exit code, output, parsed
    JSON. English by default here, so the tests read the labels they assert on; the command's default is Chinese."""
    args = ["--port", port, "--lang", lang]
    if credential is not None:
        args += ["--credential", str(credential)]
    if as_json:
        args.append("--json")
    result = CliRunner().invoke(remote_cli.command, args + list(words), catch_exceptions=False)
    parsed = None
    if as_json:
        parsed = json.loads(result.stdout.strip().splitlines()[-1])
    return result.exit_code, result.output, parsed
