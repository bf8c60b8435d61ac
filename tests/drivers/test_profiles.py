"""Firmware profiles: every shipped file validates, each model inherits from its generic base, and a bad file is
refused with an error naming the file and the dotted field."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from drivers import profiles
from drivers.idcard import load_profile as load_reader
from drivers.modem import load_profile as load_modem
from drivers.modem.device import ModemProfile
from drivers.printer import load_profile as load_printer
from drivers.profiles import ProfileError

SHIPPED = {
    "modem": {"generic-3gpp", "quectel-ec20", "quectel-ec25", "simcom-sim7600", "huawei-me909s", "fibocom-l610"},
    "printer": {"generic-58mm", "generic-80mm"},
    "reader": {"generic-sam"},
}
BASES = {"modem": "generic-3gpp", "printer": "generic-58mm", "reader": "generic-sam"}
LOADERS = {"modem": load_modem, "printer": load_printer, "reader": load_reader}


@pytest.mark.parametrize("kind", sorted(SHIPPED))
def test_every_shipped_profile_loads_and_inherits_from_the_generic_base(kind: str) -> None:
    names = set(profiles.available(kind))
    assert SHIPPED[kind] <= names
    for name in names:
        prof = LOADERS[kind](name)
        assert prof.name == name
        chain, current = [name], name
        while True:  # follow inherits = ... up to a file that has none
            data = tomllib.loads((profiles.profiles_root() / profiles.KINDS[kind] / f"{current}.toml").read_text())
            if "inherits" not in data:
                break
            current = data["inherits"]
            chain.append(current)
        assert chain[-1] == BASES[kind], f"{name} inherits {' -> '.join(chain)}"


@pytest.fixture
def modems(tmp_path: Path) -> Path:
    (tmp_path / "modems").mkdir()
    shutil.copy(profiles.profiles_root() / "modems" / "generic-3gpp.toml", tmp_path / "modems")
    return tmp_path


def write(root: Path, name: str, text: str) -> Path:
    path = root / "modems" / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_new_modem_is_one_file_over_the_base(modems: Path) -> None:
    write(modems, "acme-x1", 'inherits = "generic-3gpp"\nvendor = "Acme"\nmodel = "X1"\nbaud = 9600\n'
                             '[timeouts]\ncops = 30.0\n')
    p = profiles.load("modem", "acme-x1", ModemProfile, modems)
    base = profiles.load("modem", "generic-3gpp", ModemProfile, modems)
    assert (p.vendor, p.model, p.baud, p.timeouts.cops) == ("Acme", "X1", 9600, 30.0)
    assert p.timeouts.default == base.timeouts.default and p.commands == base.commands  # merged key by key


@pytest.mark.parametrize(("text", "field", "what"), [
    ('inherits = "generic-3gpp"\n[features]\nc5g_reg = true\n', "features", "unknown field `c5g_reg`"),
    ('inherits = "generic-3gpp"\n[timeouts]\ncops = "long"\n', "timeouts.cops", "Expected `float`"),
    ('inherits = "generic-3gpp"\n[commands]\nsignal_dialect = "csq2"\n', "commands.signal_dialect", "Invalid enum"),
    ('inherits = "generic-3gpp"\nparity = "X"\n', "parity", "Invalid enum"),
])
def test_bad_modem_profile_names_file_and_field(modems: Path, text: str, field: str, what: str) -> None:
    path = write(modems, "typo", text)
    with pytest.raises(ProfileError) as err:
        profiles.load("modem", "typo", ModemProfile, modems)
    message = str(err.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert what in message


def test_broken_files_and_inheritance(modems: Path) -> None:
    path = write(modems, "broken", "baud = \n")
    with pytest.raises(ProfileError, match=f"^{path}: not valid TOML"):
        profiles.load("modem", "broken", ModemProfile, modems)
    write(modems, "orphan", 'inherits = "no-such-base"\n')
    with pytest.raises(ProfileError, match="unknown modem profile 'no-such-base'"):
        profiles.load("modem", "orphan", ModemProfile, modems)
    write(modems, "a", 'inherits = "b"\n')
    write(modems, "b", 'inherits = "a"\n')
    with pytest.raises(ProfileError, match="inheritance loop a -> b -> a"):
        profiles.load("modem", "a", ModemProfile, modems)
