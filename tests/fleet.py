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
