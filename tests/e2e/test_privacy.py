"""Personal data never leaves the terminal: an ID card read on request reaches the server masked only."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from drivers.idcard.mask import mask_id, mask_name
from simulator.emulators import idcard
from tests.conftest import sqlite_count
from tests.fleet import AgentProc, agent_config, wait_for
from tests.identities import observer, server_identity
from wire import codec
from wire.commands import Command, EndorsedKey, SignedCommand, encode_command
from wire.messages import Batch
from wire.signing import endorse, new_ed25519_key, sign_ed25519


def signed(pki, sn: str, ctype: str, params: dict) -> bytes:
    priv, pub = new_ed25519_key()
    endorsement = endorse(pki.ca.key, EndorsedKey("test-key", pub, "command", int(time.time()) + 3600))
    now = int(time.time())
    body = encode_command(Command(id=uuid.uuid4().hex, sn=sn, type=ctype, issued=now, expires=now + 600,
                                  nonce=uuid.uuid4().hex, params=params))
    return codec.encode(SignedCommand(body=body, sig=sign_ed25519(priv, body), endorsement=endorsement))


def server_client(pki, port: int, cert_key: tuple[Path, Path], on_message=None) -> mqtt.Client:
    """A client beside the running server, under an identity of its own (tests/identities.py)."""
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    ctx.load_cert_chain(str(cert_key[0]), str(cert_key[1]))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    if on_message:
        c.on_message = on_message
    c.connect("localhost", port)
    c.loop_start()
    return c


def mqtt_text(payloads: list[bytes]) -> str:
    """Captured telemetry payloads as readable text (decoded batches; anything else as it came)."""
    decoded = []
    for p in payloads:
        try:
            decoded.append(json.dumps(msgspec.to_builtins(codec.decode(p, Batch)), ensure_ascii=False, default=str))
        except codec.DecodeError:
            decoded.append(p.decode("latin-1"))
    return "\n".join(decoded)


def db_text(path: Path) -> str:
    """The database file and its write-ahead log, where recent writes may still sit."""
    parts = [p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    return b"".join(parts).decode("utf-8", "replace")


def test_card_read_on_request_reaches_the_server_masked_only(pki, broker, server, tmp_path: Path) -> None:
    sn = "HN00110001"
    reader = idcard.serve("generic-sam")  # a made-up person's card on the reader
    card = idcard.SyntheticCard.resident().text
    wire_bytes: list[bytes] = []
    sniffer = server_client(pki, broker.port, observer(pki, broker), on_message=lambda c, u, m: wire_bytes.append(m.payload))
    sniffer.subscribe([(f"pf/{sn}/t", 1), (f"pf/{sn}/r", 1)])  # everything the terminal sends
    cfg = agent_config(pki, broker, sn, tmp_path / "a", sampling_interval=5, link="batch_interval_s = 0",
                       peripherals={"idcard": (reader.path, "generic-sam")}, extra="[log]\nlevel = \"DEBUG\"\n")
    agent = AgentProc(cfg, tmp_path / "a.log").start()
    sender = server_client(pki, broker.port, server_identity(pki, broker, "sender"))
    try:
        wait_for(lambda: server.get(f"/api/v1/units/{sn}").status_code == 200, 30, "the unit online")
        sender.publish(f"pf/{sn}/c", signed(pki, sn, "idcard_selftest", {"read": True}), qos=1)

        def result():
            import sqlite3

            con = sqlite3.connect(server.db)
            rows = con.execute("select data from events where sn=? and kind='cmd'", (sn,)).fetchall()
            con.close()
            finals = [json.loads(r[0]) for r in rows if json.loads(r[0])["state"] in ("succeeded", "failed")]
            return finals[0] if finals else None

        res = wait_for(result, 40, "the self-test result at the server")
        assert res["state"] == "succeeded", res
        out = json.loads(res["output"])
        assert out["card"]["present"] is True
        assert out["card"]["name_masked"] == mask_name(card.name)
        assert out["card"]["id_masked"] == mask_id(card.id_number)
    finally:
        agent.stop()
        sender.loop_stop()
        sniffer.loop_stop()
        reader.stop()
    assert "read text+photo" in reader.emulator.received, "the card really was read"
    # nothing unmasked anywhere: MQTT payloads (decoded), the server's database, the agent's log and outbox
    places = {
        "mqtt": mqtt_text(wire_bytes),
        "server db": db_text(server.db),
        "agent log": (tmp_path / "a.log").read_text(),
        "agent outbox": db_text(tmp_path / "a" / "outbox.sqlite"),
        "agent commands": db_text(tmp_path / "a" / "commands.sqlite"),
    }
    assert mask_id(card.id_number) in places["agent commands"], "the check reads the files the result went through"
    assert mask_id(card.id_number) in places["mqtt"], "the masked form did travel"
    for where, text in places.items():
        for secret in (card.name, card.id_number, card.address, card.id_number[6:14] + card.id_number[14:]):
            assert secret not in text, f"{secret!r} found in {where}"
    assert sqlite_count(server.db, "select count(*) from events where kind='cmd'") >= 1
