"""The tests' fleet harness is the product's own local fleet (simulator.local)."""

from simulator.local import (  # noqa: F401
    PASS,
    AgentProc,
    Broker,
    Pki,
    Server,
    agent_config,
    free_port,
    port_open,
    stop_process,
    wait_for,
)


def outbox_backlog(data, n: int, base: int) -> int:  # type: ignore[no-untyped-def]
    """A terminal's outbox in ``data`` (made) holding ``n`` one-minute samples from ``base``, taken before a reboot
    and never sent (the agent uploads them as its backlog). The outbox's epoch."""
    from agent.outbox import Outbox
    from wire.messages import Check, Sample

    data.mkdir(parents=True, exist_ok=True)
    ob = Outbox(data / "outbox.sqlite")
    for i in range(n):
        ob.add(Sample(seq=0, ts=base + 60 * i, cpu=1.0, checks={"storage": Check(0)}), boot_id="old", boottime=0)
    epoch = ob.epoch
    ob.close()
    return epoch


def upload_the_rest(pki, broker, sn: str, data, log, stored, n: int, base: int) -> None:  # type: ignore[no-untyped-def]
    """The terminal's agent runs once more at full speed until the server holds all ``n`` backlog samples
    (``stored()``) and its outbox has none of them left (every one acknowledged)."""
    from tests.conftest import sqlite_count

    cfg = agent_config(pki, broker, sn, data, link="max_batch = 100\nbacklog_rate = 40.0\nack_timeout_s = 5")
    agent = AgentProc(cfg, log).start()
    try:
        wait_for(lambda: stored() >= n, 120, "the whole backlog stored")
        wait_for(lambda: sqlite_count(data / "outbox.sqlite", f"select count(*) from outbox where kind='s' "
                                      f"and ts < {base + 60 * n}") == 0, 30, "the outbox emptied by acknowledgements")
    finally:
        agent.stop()
