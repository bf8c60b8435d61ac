"""The statistics a dashboard polls keep what they derive from the registry between requests, and still answer what
a fresh read answers: the map's counts (deployed terminals and those online now, per county and city) and the
coverage figures, while units come online and go offline, are first heard, registered, moved and taken out of
service. The map's reference is the store's own one-join read (``AccessStore.map_rows``), which the server no
longer runs per request."""

from __future__ import annotations

import time
from typing import Any

from tests.server.conftest import Api

INSTITUTIONS = [
    {"code": "H001", "name": "石山镇卫生院", "county": "秀英区", "region": "海口市", "type": "乡镇卫生院"},
    {"code": "V001", "name": "美安村卫生室", "county": "秀英区", "region": "海口市", "type": "村卫生室"},
    {"code": "V002", "name": "永兴村卫生室", "county": "龙华区", "region": "海口市", "type": "村卫生室"},
    {"code": "V003", "name": "大致坡卫生室", "county": "美兰区", "region": "海口市", "type": "村卫生室"},  # no units
    {"code": "S001", "name": "三亚卫生院", "county": "吉阳区", "region": "三亚市", "type": "乡镇卫生院"},
]


def _map_reference(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {(a["name"], a["region"]): (a["units"], a["online"], a["institutions"]) for a in rows}


async def _same_map(api: Api) -> dict[tuple[str, str], tuple[int, int, int]]:
    """The map as the API answers it, checked against the store's fresh one-join read."""
    got = (await api.get("/api/v1/statistics/map", role="viewer")).json()
    want = _map_reference(await api.app.state.access.store.map_rows())
    assert {(a["name"], a["region"]): (a["units"], a["online"], a["institutions"]) for a in got["counties"]} == want
    cities: dict[str, list[int]] = {}
    for (_c, region), (units, online, insts) in want.items():
        acc = cities.setdefault(region, [0, 0, 0])
        acc[0], acc[1], acc[2] = acc[0] + units, acc[1] + online, acc[2] + insts
    assert {c["name"]: [c["units"], c["online"], c["institutions"]] for c in got["cities"]} == cities
    return want


async def test_the_map_follows_sessions_first_heard_units_and_the_registry(api: Api) -> None:
    st = api.app.state.storage
    await st.upsert_institutions(INSTITUTIONS)
    units = [{"sn": f"PF{n:04d}", "institution": ["H001", "V001", "V002", "S001"][n % 4]} for n in range(12)]
    units += [{"sn": "PFSPARE", "institution": "H001", "stock_type": "spare"},  # not deployed: not on the map
              {"sn": "PFGONE", "institution": "X999"}]  # an institution not in the table: on no county
    await st.upsert_registry_units(units, int(time.time()), "test")
    assert (await _same_map(api))[("秀英区", "海口市")] == (6, 0, 2)  # never heard: none online

    for n in range(0, 12, 2):  # half the fleet's sessions come up (each unit first heard then)
        await st.set_state(f"PF{n:04d}", True, time.time(), "connected", "0.1.0")
    await st.set_state("PFSPARE", True, time.time(), "connected", "0.1.0")
    await st.set_state("PFGONE", True, time.time(), "connected", "0.1.0")
    assert (await _same_map(api))[("秀英区", "海口市")] == (6, 3, 2)

    await st.set_state("PF0000", False, time.time(), "keepalive", "")  # one goes down, another first comes up
    await st.set_state("PF0001", True, time.time(), "connected", "0.1.0")
    assert (await _same_map(api))[("秀英区", "海口市")] == (6, 3, 2)
    assert (await _same_map(api))[("吉阳区", "三亚市")] == (3, 0, 1)

    # a unit moves to Sanya and one is taken back to stock: counted where they are now, at once
    await st.upsert_registry_units([{"sn": "PF0002", "institution": "S001"},
                                    {"sn": "PF0004", "stock_type": "spare"}], int(time.time()), "test")
    mapped = await _same_map(api)
    assert mapped[("秀英区", "海口市")] == (5, 2, 2) and mapped[("吉阳区", "三亚市")] == (4, 1, 1)
    assert mapped[("美兰区", "海口市")] == (0, 0, 1)
    # a new institution and a new unit there, heard at once
    await st.upsert_institutions([{"code": "V004", "name": "新坡卫生室", "county": "美兰区", "region": "海口市"}])
    await st.upsert_registry_units([{"sn": "PFNEW", "institution": "V004"}], int(time.time()), "test")
    await st.set_state("PFNEW", True, time.time(), "connected", "0.1.0")
    assert (await _same_map(api))[("美兰区", "海口市")] == (1, 1, 2)


async def test_coverage_kept_per_scope_follows_the_registry(api: Api) -> None:
    st = api.app.state.storage
    await st.upsert_institutions(INSTITUTIONS)
    await st.upsert_registry_units([{"sn": "PF0001", "institution": "H001"}], int(time.time()), "test")
    api.clock.t = time.time()

    async def covered(**params: Any) -> dict[str, int]:
        body = (await api.get("/api/v1/statistics/coverage", role="viewer", **params)).json()
        return {g["key"]: g["covered"] for g in body["by_county"]}

    assert await covered() == {"吉阳区": 0, "秀英区": 1, "美兰区": 0, "龙华区": 0}
    assert await covered(region="三亚市") == {"吉阳区": 0}
    assert await covered() == {"吉阳区": 0, "秀英区": 1, "美兰区": 0, "龙华区": 0}  # kept, the same
    await st.upsert_registry_units([{"sn": "PF0002", "institution": "S001"}], int(time.time()), "test")
    assert await covered(region="三亚市") == {"吉阳区": 1}  # the kept answers went with the registry version
    assert await covered() == {"吉阳区": 1, "秀英区": 1, "美兰区": 0, "龙华区": 0}
    assert await covered(model="P9") == {"吉阳区": 0, "秀英区": 0, "美兰区": 0, "龙华区": 0}
