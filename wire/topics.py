"""MQTT topic names.

Topics are short on purpose: every byte of a topic is sent with every PUBLISH on a
500 MB/month SIM. The protocol version travels in each payload's ``v`` field, not in
the topic, so a version bump does not need new ACLs.

    pf/<sn>/t   telemetry batch            terminal -> server   QoS 1
    pf/<sn>/s   state (retained, last will) terminal -> server   QoS 1, retained
    pf/<sn>/p   round-trip probe (empty)    terminal -> broker   QoS 1, nobody subscribes
    pf/<sn>/a   acknowledgement + time      server -> terminal   QoS 1
    pf/<sn>/c   signed command              server -> terminal   QoS 1
    pf/<sn>/r   command result              terminal -> server   QoS 1
    pf/<sn>/x   renewed certificate         server -> terminal   QoS 1 (wire.messages.Certificate; the request
                                                                  travels as a ``cert_request`` event in telemetry)
"""

from __future__ import annotations

import re

PREFIX = "pf"
SHARE_GROUP = "posfleet"

TELEMETRY = "t"
STATE = "s"
PROBE = "p"
ACK = "a"
COMMAND = "c"
RESULT = "r"
CERT = "x"

# What a terminal serial number (and so a certificate CN) may look like. No MQTT
# wildcards, no slash, not a reserved name: the broker ACL substitutes it into topics.
SN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")
RESERVED_NAMES = frozenset({"posfleet-server", "server", "broker", "admin"})


def valid_sn(sn: str) -> bool:
    return bool(SN_RE.match(sn)) and sn.lower() not in RESERVED_NAMES


def topic(sn: str, kind: str) -> str:
    return f"{PREFIX}/{sn}/{kind}"


def shared(kind: str, group: str = SHARE_GROUP) -> str:
    """Shared subscription over every terminal's topic of ``kind``."""
    return f"$share/{group}/{PREFIX}/+/{kind}"


def parse(topic_name: str) -> tuple[str, str] | None:
    """``pf/<sn>/<kind>`` -> (sn, kind); None for anything else."""
    parts = topic_name.split("/")
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    return parts[1], parts[2]
