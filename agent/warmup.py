"""First use of every msgspec Struct the agent decodes, done once on the main thread before any other thread.

msgspec builds a Struct type's decoding info lazily, on its first use. The simulator's agent host, running 25
agents as threads of one process, crashed with SIGSEGV (msgspec.convert of the agent's config; 2 of 4 hosts of a
100-unit day, 33 of 40 hosts of a 1,000-unit run) when several threads made that first use at once. A real
terminal runs one agent, but its link, console, command and handover threads decode too, so the agent makes
every first use here, at start, on one thread (a few milliseconds).
"""

from __future__ import annotations


def warm_up() -> None:
    """First use of every msgspec Struct the agents use, on one thread, before any agent thread starts."""
    import inspect

    import msgspec

    import agent.config
    import agent.main  # noqa: F401  (imports the rest of the agent)
    import drivers.idcard.device
    import drivers.modem.device
    import drivers.printer.profile
    import wire.messages

    for module in (agent.config, wire.messages, drivers.modem.device, drivers.printer.profile, drivers.idcard.device):
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, msgspec.Struct) and cls is not msgspec.Struct:
                msgspec.msgpack.Decoder(cls)
                msgspec.json.Decoder(cls)
