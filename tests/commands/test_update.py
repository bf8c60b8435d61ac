"""Software update: signed packages through the server to a real agent; A/B install; rollback."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import threading
from pathlib import Path

import httpx

from agent.update import statement
from pki.ca import FleetCA
from server.commands.keys import load_key, make_key
from server.commands.packages import build_package, sign_package
from tests.commands.conftest import Fleet
from tests.commands.test_security import _publisher, _signed
from tests.fleet import PASS, wait_for
from wire import topics


def _package(tmp: Path, fleet: Fleet, version: str, healthy: bool = True, models: tuple[str, ...] = (),
             payload: Path | None = None) -> Path:
    src = tmp / f"src-{version}"
    src.mkdir(parents=True)
    (src / "VERSION").write_text(version)
    if payload is not None:
        (src / "payload.bin").write_bytes(payload.read_bytes())
    hc = src / "healthcheck"
    hc.write_text("#!/bin/sh\n" + ("echo healthy\nexit 0\n" if healthy else "echo 'printer driver missing' >&2\nexit 3\n"))
    hc.chmod(0o755)
    out = build_package(src, "demo", version, list(models), ["./healthcheck"], tmp / f"demo-{version}.tar.gz")
    key = load_key(fleet.keys["update_key"], fleet.keys["update_endorsement"], "update")
    _digest, sig = sign_package(out, key)
    Path(str(out) + ".sig").write_bytes(sig)
    return out


def _upload(fleet: Fleet, archive: Path, sig: bytes | None = None) -> object:
    sig = sig if sig is not None else Path(str(archive) + ".sig").read_bytes()
    return httpx.post(f"http://127.0.0.1:{fleet.server.http_port}/api/v1/packages", content=archive.read_bytes(),
                      timeout=30, headers={
        "Authorization": f"Bearer {fleet.server.token('admin')}",
        "X-Signature": base64.b64encode(sig).decode(),
        "X-Endorsement": base64.b64encode(fleet.keys["update_endorsement"].read_bytes()).decode()})


def test_update_installs_and_a_version_failing_its_health_check_is_rolled_back(fleet: Fleet, tmp_path: Path) -> None:
    sn = "HN56000001"
    fleet.start_server()
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    current = fleet.agent_dir(sn) / "data" / "components" / "demo" / "current"

    good = _upload(fleet, _package(tmp_path, fleet, "1.0.0"))
    assert good.status_code == 201, good.text
    r = fleet.send(type="software_update", sn=sn, params={"package": good.json()["id"], "health_timeout_s": 20})
    assert r.status_code == 201, r.text
    done = fleet.wait_state(r.json()["command"]["id"])
    assert done["state"] == "succeeded" and "installed demo 1.0.0" in done["output"], done
    assert os.readlink(current) == "1.0.0" and (current / "VERSION").read_text() == "1.0.0"

    bad = _upload(fleet, _package(tmp_path, fleet, "1.1.0", healthy=False))
    assert bad.status_code == 201, bad.text
    assert fleet.send(role="engineer", type="software_update", sn=sn,
                      params={"package": bad.json()["id"]}).status_code == 403
    r = fleet.send(type="software_update", sn=sn, params={"package": bad.json()["id"], "health_timeout_s": 20})
    done = fleet.wait_state(r.json()["command"]["id"])
    assert done["state"] == "failed", done
    assert "rolled back" in done["output"] and "printer driver missing" in done["output"]
    assert "current version: 1.0.0" in done["output"]
    assert os.readlink(current) == "1.0.0" and (current / "VERSION").read_text() == "1.0.0"
    assert not (current.parent / "pending.json").exists()

    # no downgrade unless asked for
    old = _upload(fleet, _package(tmp_path, fleet, "0.9.0"))
    r = fleet.send(type="software_update", sn=sn, params={"package": old.json()["id"]})
    done = fleet.wait_state(r.json()["command"]["id"])
    assert done["state"] == "failed" and done["code"] == 2 and "not above the installed 1.0.0" in done["output"]
    assert os.readlink(current) == "1.0.0"


def test_server_refuses_a_package_with_a_bad_signature(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start_server()
    a = _package(tmp_path, fleet, "2.0.0")
    b = _package(tmp_path, fleet, "2.0.1")
    r = _upload(fleet, a, sig=Path(str(b) + ".sig").read_bytes())
    assert r.status_code == 422 and "signature" in r.json()["detail"]
    assert fleet.server.get("/api/v1/packages").json()["items"] == []


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_agent_refuses_bad_signature_wrong_hash_and_wrong_model(fleet: Fleet, tmp_path: Path) -> None:
    """Commands signed with the real command key but carrying a bad package: the agent checks the package
    itself (it does not trust the command key for package content)."""
    sn = "HN56000002"
    model_file = tmp_path / "model"
    model_file.write_text("A920\n")
    fleet.start_server()
    fleet.make_agent(sn, extra=f'\n[components.model]\nfile = "{model_file}"\n')
    fleet.start_agent(sn)
    fleet.wait_online(sn)
    archive = _package(tmp_path, fleet, "3.0.0")
    www = tmp_path / "www"
    www.mkdir()
    (www / "good.tar.gz").write_bytes(archive.read_bytes())
    corrupt = bytearray(archive.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF  # one bit flipped on the way: same size, other content
    (www / "corrupt.tar.gz").write_bytes(bytes(corrupt))
    (www / "big.tar.gz").write_bytes(archive.read_bytes() + b"trailing")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    ukey = load_key(fleet.keys["update_key"], fleet.keys["update_endorsement"], "update")
    rogue_ca = FleetCA.init(tmp_path / "rogue-ca", PASS)
    rk, re_, _ = make_key(rogue_ca, tmp_path / "rogue", "update", 30)
    rogue = load_key(rk, re_, "update")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()

    def params(key: object = ukey, file: str = "good.tar.gz", sha: str = digest, models: list[str] | None = None,
               sig: bytes | None = None) -> dict[str, object]:
        endo = key.endorsement  # type: ignore[attr-defined]
        return {"component": "demo", "version": "3.0.0", "url": f"{base}/{file}", "sha256": sha,
                "size": archive.stat().st_size, "models": models or [],
                "signature": sig if sig is not None else key.sign(statement("demo", "3.0.0", sha)),  # type: ignore[attr-defined]
                "endorsement": {"body": endo.body, "sig": endo.sig}, "health_timeout_s": 10}

    cases = {
        "rogue-key": params(key=rogue),
        "bad-sig": params(sig=ukey.sign(statement("demo", "3.0.1", digest))),
        "wrong-hash": params(file="corrupt.tar.gz"),
        "too-big": params(file="big.tar.gz"),
        "wrong-model": params(models=["A8", "A80"]),
        "no-pace": {**params(), "pace_bytes_per_s": 0},  # unpaced would swamp the clinic's 4G link
    }
    pub = _publisher(fleet)
    try:
        for cid, p in cases.items():
            pub.publish(topics.topic(sn, topics.COMMAND), _signed(fleet, id=cid, sn=sn, type="software_update",
                                                                  params=p), qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()

    def results() -> dict[str, str] | None:
        rows = [a["detail"] for a in fleet.audit(action="command.unmatched_result", limit=1000)]
        out = {d["id"]: d["output"] for d in rows if d["state"] == "failed"}
        return out if set(cases) <= set(out) else None
    out = wait_for(results, 40, "every refusal", interval=0.3)
    httpd.shutdown()
    assert out["rogue-key"].startswith("refused: package signature") and "fleet CA" in out["rogue-key"]
    assert out["bad-sig"].startswith("refused: package signature")
    assert out["wrong-hash"].startswith("refused: sha256 mismatch")
    assert "sent more than" in out["too-big"]
    assert "this terminal is A920" in out["wrong-model"]
    assert out["no-pace"].startswith("refused: pace_bytes_per_s must be")
    assert not (fleet.agent_dir(sn) / "data" / "components" / "demo").exists(), "nothing was installed"
    assert not list((fleet.agent_dir(sn) / "data" / "updates").glob("*.part")), "a bad download is not kept"
