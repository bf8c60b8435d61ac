"""Changing commands need an engineer credential checked offline by the terminal: refused
without one, with an expired, out-of-scope, revoked, forged or mismatched one; with a valid
one they work and every step is in the terminal's audit trail."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pki.ca import FleetCA
from posfleet.diagconsole import credential as credential_cli
from posfleet.diagconsole.client import Refused
from posfleet.diagconsole.credential import issue, revoke
from tests.console.conftest import COUNTY, SAMPLING_S, SECRET, Rig
from tests.console.helpers import remote
from tests.fleet import PASS, wait_for


def cred(rig: Rig, tmp: Path, name: str = "李工", scope: tuple[str, ...] = (COUNTY,), days: float = 7,
         now: float | None = None) -> Path:
    out = tmp / f"{name}-{time.monotonic_ns()}.json"
    issue(rig.pki.ca, name, list(scope), days, out, now=now)
    return out


def refused_reason(rig: Rig, credential: Path) -> str:
    with rig.client() as c:
        c.hello()
        with pytest.raises(Refused) as exc:
            c.auth(credential)
        assert exc.value.code == "refused"
        with pytest.raises(Refused):
            c.call("reboot")
    return str(exc.value)


def test_changing_commands_without_credential_are_refused(rig: Rig) -> None:
    for words in (("reboot",), ("outbox", "clear", "seq=1"), ("config", "set", "sampling.interval_s", "30"),
                  ("reenrol",)):
        code, _out, doc = remote(rig.cable.laptop_path, *words)
        assert code == 7, doc
        assert "needs an engineer credential" in doc["error"]
    assert not rig.rebooted.exists()
    refused = [r for r in rig.audit() if r["event"] == "command" and r["result"] == "refused"]
    assert {r["command"] for r in refused} >= {"reboot", "outbox clear", "config set", "reenrol"}


def test_bad_credentials_are_refused_with_a_reason(rig: Rig, tmp_path: Path) -> None:
    expired = cred(rig, tmp_path, "过期", now=time.time() - 10 * 86400, days=1)
    assert "expired" in refused_reason(rig, expired)
    elsewhere = cred(rig, tmp_path, "王工", scope=("都安县", "大化县"))
    assert f"covers 都安县, 大化县, not this terminal's {COUNTY}" in refused_reason(rig, elsewhere)
    other_ca = FleetCA.init(tmp_path / "other-ca", "another-passphrase")
    forged = tmp_path / "forged.json"
    issue(other_ca, "外人", [COUNTY], 7, forged)
    assert "not endorsed by this fleet's CA" in refused_reason(rig, forged)
    tampered = cred(rig, tmp_path, "张工", scope=("都安县",))
    doc = json.loads(tampered.read_text())
    import base64

    body = json.loads(base64.b64decode(doc["credential"]["endorsement"]))
    body["scope"] = [COUNTY]
    doc["credential"]["endorsement"] = base64.b64encode(json.dumps(body).encode()).decode()
    tampered.write_text(json.dumps(doc))
    assert "signature does not verify" in refused_reason(rig, tampered)
    stolen = cred(rig, tmp_path, "赵工")
    doc = json.loads(stolen.read_text())
    doc["private_key"] = json.loads(cred(rig, tmp_path, "钱工").read_text())["private_key"]
    stolen.write_text(json.dumps(doc))
    assert "does not match the credential's key" in refused_reason(rig, stolen)
    # revoked: the list travels with the configuration ([console] revoked_file)
    victim = cred(rig, tmp_path, "孙工")
    victim_id = json.loads(victim.read_text())["id"]
    listed = revoke(rig.pki.dir, victim_id)
    rig.revoked.write_text(listed.read_text())
    try:
        assert "has been revoked" in refused_reason(rig, victim)
    finally:
        rig.revoked.write_text('{"revoked": []}')
    reasons = [r.get("reason", "") for r in rig.audit() if r["event"] == "auth" and r["result"] == "refused"]
    assert sum("expired" in r for r in reasons) >= 1 and sum("revoked" in r for r in reasons) >= 1
    code, _out, doc = remote(rig.cable.laptop_path, "reboot", credential=expired)
    assert code == 7 and "expired" in doc["error"]
    assert not rig.rebooted.exists()


def test_a_credential_revoked_mid_session_stops_working(rig: Rig, tmp_path: Path) -> None:
    c_file = cred(rig, tmp_path, "周工")
    with rig.client() as c:
        c.hello()
        assert c.auth(c_file)["engineer"] == "周工"
        assert c.call("outbox")["count"] >= 0
        rig.revoked.write_text(json.dumps({"revoked": [json.loads(c_file.read_text())["id"]]}))
        try:
            with pytest.raises(Refused, match="revoked"):
                c.call("outbox clear", {"seq": 1})
        finally:
            rig.revoked.write_text('{"revoked": []}')


def test_valid_credential_reboot_and_outbox_clear_are_audited(rig: Rig, tmp_path: Path) -> None:
    c_file = cred(rig, tmp_path, "李工", scope=("都安县", COUNTY))
    code, _out, doc = remote(rig.cable.laptop_path, "outbox", credential=c_file)
    seq = doc["data"]["entries"][0]["seq"]
    code, _out, doc = remote(rig.cable.laptop_path, "outbox", "clear", f"seq={seq}", credential=c_file)
    assert code == 0, doc.get("error")
    assert doc["data"] == {"cleared": seq}
    code, _out, doc = remote(rig.cable.laptop_path, "outbox", "limit=100")  # oldest first: the cleared one would show
    # new samples and the console's own audit records may have arrived meanwhile, never the cleared one
    assert seq not in [e["seq"] for e in doc["data"]["entries"]]
    code, _out, doc = remote(rig.cable.laptop_path, "outbox", "clear", f"seq={seq}", credential=c_file)
    assert code == 1 and "no outbox entry" in doc["error"]
    # the warning it logged is among the last errors `status` shows
    code, _out, doc = remote(rig.cable.laptop_path, "status")
    assert any(f"outbox entry {seq} cleared from the console by 李工" in line for line in doc["data"]["last_errors"])
    code, _out, doc = remote(rig.cable.laptop_path, "reboot", credential=c_file)
    assert code == 0 and doc["data"]["reboot"].startswith("touch ")
    wait_for(rig.rebooted.exists, 5, "the reboot command to run")
    audit = rig.audit()
    ok = [r for r in audit if r["event"] == "command" and r["result"] == "ok" and r["changes"]]
    assert {(r["command"], r["engineer"]) for r in ok} >= {("outbox clear", "李工"), ("reboot", "李工")}
    assert any(r["event"] == "auth" and r["result"] == "ok" and r["engineer"] == "李工" for r in audit)
    text = (rig.data_dir / "console-audit.jsonl").read_text()
    assert "PRIVATE KEY" not in text and SECRET not in text


def test_config_set_validates_and_rolls_back_without_the_server(rig: Rig, tmp_path: Path) -> None:
    c_file = cred(rig, tmp_path)
    before = rig.config.read_text()
    code, _out, doc = remote(rig.cable.laptop_path, "config", "set", "sampling.interval_s", "7", credential=c_file)
    assert code == 2 and "sampling.interval_s" in doc["error"] and "nothing changed" in doc["error"]
    code, _out, doc = remote(rig.cable.laptop_path, "config", "set", "console.county", "别处", credential=c_file)
    assert code == 2
    code, _out, doc = remote(rig.cable.laptop_path, "config", "set", "no_such.key", "1", credential=c_file)
    assert code == 2
    assert rig.config.read_text() == before
    # A valid change: written with a backup, the agent restarts under it; no server acknowledges
    # (this rig has none), so it is rolled back after the deadline.
    # the deadline leaves time to look at the pending change even on a loaded machine (a restart can take seconds)
    code, _out, doc = remote(rig.cable.laptop_path, "config", "set", "sampling.interval_s", "30", "minutes=0.4",
                             credential=c_file)
    assert code == 0, doc.get("error")
    assert doc["data"]["restart"] is True
    # the old agent may still answer for a moment after the reply; the restarted one shows the new value
    shown: dict = {}

    def restarted_under_the_change() -> bool:
        rig.wait_console()
        code, _out, doc = remote(rig.cable.laptop_path, "config", "show")
        shown.update(doc.get("data") or {})
        return code == 0 and doc["data"]["config"]["sampling"]["interval_s"] == 30

    wait_for(restarted_under_the_change, 20, "the agent to restart under the change")
    assert shown["pending_change"]["command"].startswith("console-")
    wait_for(lambda: f"interval_s = {SAMPLING_S}" in rig.config.read_text(), 60, "the change to be rolled back")

    def restarted_under_the_old_value() -> bool:
        shown.clear()
        rig.wait_console()
        code, _out, doc = remote(rig.cable.laptop_path, "config", "show")
        shown.update(doc.get("data") or {})
        return code == 0 and doc["data"]["config"]["sampling"]["interval_s"] == SAMPLING_S

    wait_for(restarted_under_the_old_value, 20, "the agent to restart under the old value")
    assert shown["pending_change"] is None
    wait_for(lambda: any(r["event"] == "config_change" for r in rig.audit()), 5, "the outcome audit")
    outcome = [r for r in rig.audit() if r["event"] == "config_change"][-1]
    assert outcome["result"] == "rolled back" and outcome["key"] == "sampling.interval_s"
    assert outcome["engineer"] == "李工"


def test_reenrol_round_trip(rig: Rig, tmp_path: Path) -> None:
    c_file = cred(rig, tmp_path)
    csr = tmp_path / "t.csr"
    code, _out, doc = remote(rig.cable.laptop_path, "reenrol", f"out={csr}", credential=c_file)
    assert code == 0, doc.get("error")
    assert csr.read_text().startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert "PRIVATE KEY" not in json.dumps(doc)
    old_cert = (rig.pki.dir / "terminals" / rig.sn / "terminal.pem").read_bytes()
    cert = tmp_path / "t.pem"
    cert.write_bytes(rig.pki.ca.sign_csr(csr.read_bytes(), expect_sn=rig.sn))
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(old_cert)
    code, _out, doc = remote(rig.cable.laptop_path, "reenrol", "install", f"cert=@{wrong}", credential=c_file)
    assert code == 1 and "not for the key" in doc["error"]
    code, _out, doc = remote(rig.cable.laptop_path, "reenrol", "install", f"cert=@{cert}", credential=c_file)
    assert code == 0, doc.get("error")
    assert (rig.pki.dir / "terminals" / rig.sn / "terminal.pem").read_bytes() == cert.read_bytes()
    rig.wait_console()
    wait_for(lambda: remote(rig.cable.laptop_path, "status")[2]["data"]["link"]["connected"], 15,
             "the agent to reconnect with its new certificate")


def test_credential_cli_issue_and_revoke(rig: Rig, tmp_path: Path) -> None:
    out = tmp_path / "eng.json"
    result = CliRunner(env={"POSFLEET_CA_PASSPHRASE": PASS}).invoke(credential_cli.command, [
        "issue", "--ca-dir", str(rig.pki.dir), "--engineer", "陈工", "--scope", f"{COUNTY}，都安县", "--days", "3",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "陈工" in result.output and COUNTY in result.output
    assert os.stat(out).st_mode & 0o777 == 0o600
    doc = json.loads(out.read_text())
    assert doc["scope"] == [COUNTY, "都安县"] and "PRIVATE KEY" in doc["private_key"]
    code, _o, reply = remote(rig.cable.laptop_path, "outbox", credential=out)
    assert code == 0
    result = CliRunner(env={"POSFLEET_CA_PASSPHRASE": "wrong-passphrase"}).invoke(credential_cli.command, [
        "issue", "--ca-dir", str(rig.pki.dir), "--engineer", "x", "--scope", COUNTY, "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "passphrase" in result.output
    result = CliRunner().invoke(credential_cli.command, ["revoke", "--ca-dir", str(rig.pki.dir), "陈工"])
    assert result.exit_code == 0, result.output
    listed = json.loads((rig.pki.dir / "engineer-revoked.json").read_text())["revoked"]
    assert doc["id"] in listed
    # the configuration update that carries the whole list (sent in test_console_server.py)
    assert "--type set_config" in result.output
    assert json.dumps({"changes": {"console.revoked": listed}}) in result.output


def test_a_challenge_answer_is_good_for_one_try_in_one_session(rig: Rig, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from wire.credentials import prove

    doc = json.loads(cred(rig, tmp_path).read_text())
    key = serialization.load_pem_private_key(doc["private_key"].encode(), None)
    with rig.client() as c:
        c.hello()
        answer = {"credential": doc["credential"], "proof": prove(key, rig.sn, str(c.session), c.nonce)}  # type: ignore[arg-type]
        assert c.call("auth", answer)["engineer"] == "李工"
        with pytest.raises(Refused, match="challenge answer does not match"):
            c.call("auth", answer)  # the same answer again: the challenge has changed
    with rig.client() as c:
        c.hello()
        with pytest.raises(Refused, match="challenge answer does not match"):
            c.call("auth", answer)  # in another session
        with pytest.raises(Refused, match="needs an engineer credential"):
            c.call("reboot")


def test_a_secret_typed_into_config_set_is_never_shown_or_kept(rig: Rig, tmp_path: Path) -> None:
    c_file = cred(rig, tmp_path)
    secret = "TopSecret-77"
    before = rig.config.read_text()
    code, out, doc = remote(rig.cable.laptop_path, "config", "set", "link.key_passphrase", f'["{secret}"]',
                            credential=c_file)
    assert code == 2 and "link.key_passphrase" in doc["error"]  # not text: refused, naming the field
    assert rig.config.read_text() == before
    assert secret not in out
    records = [r for r in rig.audit() if r.get("command") == "config set"]
    assert records[-1]["args"] == {"key": "link.key_passphrase", "value": "***"}
    assert secret not in (rig.data_dir / "console-audit.jsonl").read_text()
    code, out, _ = remote(rig.cable.laptop_path, "logs", "lines=500")
    assert code == 0 and secret not in out
