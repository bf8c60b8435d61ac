"""Each demo and simulator terminal has its own modem IMEI, well formed (15 digits, Luhn check digit), the same in
the history it publishes and from its emulated modem as the real driver reads it."""

from __future__ import annotations

from drivers.modem import Modem
from posfleet.demo import history_events, plan_fleet
from simulator.run import _ident


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_luhn_reference() -> None:
    assert luhn_ok("490154203237518")  # the worked example of 3GPP TS 23.003 annex B
    assert not luhn_ok("490154203237517")


def test_fifty_demo_units_have_fifty_valid_imeis_read_from_their_modems() -> None:
    plan = plan_fleet(50, seed=1)
    published = [history_events(u, 0)[0].data["imei"] for u in plan.units]
    assert len(set(published)) == 50
    assert all(len(i) == 15 and i.isdigit() and luhn_ok(i) for i in published), published
    read = []
    for i, u in enumerate(plan.units[:3]):
        dev = u.serve_modem(seed=i)
        try:
            with Modem(dev.path, u.modem) as m:
                m.init()
                read.append(m.imei())
        finally:
            dev.stop()
    assert read == published[:3]


def test_simulator_units_have_distinct_valid_imeis() -> None:
    imeis = [_ident(f"SIM{k:07d}")["imei"] for k in range(200)] + [_ident("not-numbered")["imei"]]
    assert len(set(imeis)) == len(imeis)
    assert all(len(i) == 15 and luhn_ok(i) for i in imeis)
