"""Firmware profiles: one TOML file per peripheral model, with ``inherits``.

Files live in the ``firmware_profiles`` package: ``modems/``, ``printers/``, ``readers/``.
A profile is merged over its parent (tables merged key by key, other values replaced),
then validated against the driver's own ``msgspec.Struct`` with unknown keys refused.
Errors name the file and the dotted field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import msgspec

KINDS = {"modem": "modems", "printer": "printers", "reader": "readers"}

T = TypeVar("T")


class ProfileError(ValueError):
    """A profile file is missing, malformed, or does not validate."""


def profiles_root() -> Path:
    import firmware_profiles

    return Path(firmware_profiles.__file__).parent


def available(kind: str, root: Path | None = None) -> list[str]:
    folder = (root or profiles_root()) / KINDS[kind]
    return sorted(p.stem for p in folder.glob("*.toml"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(kind: str, name: str, root: Path | None = None, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if kind not in KINDS:
        raise ProfileError(f"unknown profile kind {kind!r} (expected one of {', '.join(KINDS)})")
    path = (root or profiles_root()) / KINDS[kind] / f"{name}.toml"
    if name in _seen:
        raise ProfileError(f"{path}: inheritance loop {' -> '.join((*_seen, name))}")
    if not path.is_file():
        known = ", ".join(available(kind, root)) or "none"
        raise ProfileError(f"unknown {kind} profile {name!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{path}: not valid TOML: {err}") from err
    parent = data.pop("inherits", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ProfileError(f"{path}: inherits: expected a profile name")
        data = _merge(load_raw(kind, parent, root, (*_seen, name)), data)
    data["name"] = name
    return data


def load(kind: str, name: str, struct: type[T], root: Path | None = None) -> T:
    """Load profile ``name`` of ``kind`` and validate it as ``struct``."""
    data = load_raw(kind, name, root)
    try:
        return msgspec.convert(data, struct, strict=True)
    except msgspec.ValidationError as err:
        path = (root or profiles_root()) / KINDS[kind] / f"{name}.toml"
        raise ProfileError(f"{path}: {dotted_error(str(err))}") from err


def dotted_error(message: str) -> str:
    """msgspec says ``... - at `$.timeouts.cops```; put the dotted path first: ``timeouts.cops: ...``."""
    if " - at `$" in message:
        text, _, where = message.partition(" - at `$")
        where = where.rstrip("`").lstrip(".")
        return f"{where}: {text}" if where else text
    return message
