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
