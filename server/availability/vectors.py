"""Per-unit roll-up sums as arrays, so that the figures of the whole fleet are summed without a Python step per unit.

``Availability._figures`` used to read each unit's sums over the period (a row per unit and roll-up piece, added up
in Python) and build a :class:`~counting.counter.Figures` per unit: 272 ms of CPU for the province's 47,500 units
by county, 454 ms for its flagged units (docs/performance-scope.md, run 3). Here instead:

* the **universe** is the registry index's units in one order (county, region, institution, SN), so that the units
  of a county or of an institution are consecutive;
* a **piece** of a period (:func:`~server.availability.rollups.plan_period`: whole months, whole days, hours of a
  day) is kept as four arrays in that order, one per count (service, intact, network ok, no data): a month's or a
  day's stored totals, or a day's hour counts as running sums at each hour boundary, so that any run of that day's
  hours is one subtraction;
* the period's per-unit counts are the element-wise sums of its pieces' arrays (``map(operator.add, ...)``, loops
  in C), the flagged test is :func:`unit_flagged`'s integer comparison over the same arrays, and a group's counts
  are sums of slices. Only the units an answer lists (the flagged ones, or every unit for ``group_by=unit``) become
  Python objects.

The counting rule is untouched: the pieces are the stored hour counts the pure counter made, summed exactly as
``rollup_sums`` sums them; a part of a day is the same hours' bytes. Tests compare every answer with the reference
(per-unit rows summed in Python) on generated data, on both backends (tests/availability/test_figures_vectors.py).

:class:`PieceCache` keeps pieces between requests within a memory budget and checks each against ``rollup_stamps``
(when each day's roll-ups last changed, written with them), re-read whenever ``rollup_version`` moves: a write to
today's hours throws away today's and this month's pieces, not last quarter's (decision 032).
"""

from __future__ import annotations

import asyncio
import sys
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import add, and_, lt, mul, or_
from typing import Any

from .rollups import PeriodPlan, month_days

BUDGET_BYTES = 64 * 1024 * 1024  # pieces kept per process (a month of 47,500 units: 0.8 MB; a day's hours: 9 MB)
_CODE = {array(c).itemsize: c for c in "QLIH"}  # an array type code per item size (2 and 4 bytes are used)


class Universe:
    """The registered units of one registry index, ordered by (county, region, institution, SN)."""

    def __init__(self, index: dict[str, Any]) -> None:
        self.index = index
        self.units = sorted(index.values(), key=lambda u: (u.county, u.region, u.institution or "", u.sn))
        self.n = len(self.units)
        self.sns = [u.sn for u in self.units]
        self.pos = {sn: i for i, sn in enumerate(self.sns)}
        self._segments: dict[str, tuple[list[int], list[tuple[int, int, str]]]] = {}

    def segments(self, group_by: str) -> tuple[list[int], list[tuple[int, int, str]]]:
        """The maximal runs ``(a, b, key)`` of units with one group key (``key or ""``), in order, and their starts.
        A county's or an institution's units form one run; a region's one run per county (or more)."""
        got = self._segments.get(group_by)
        if got is None:
            segs: list[tuple[int, int, str]] = []
            a, cur = 0, None
            for i, u in enumerate(self.units):
                key = getattr(u, group_by) or ""
                if key != cur:
                    if i:
                        segs.append((a, i, cur))  # type: ignore[arg-type]
                    a, cur = i, key
            if self.n:
                segs.append((a, self.n, cur))  # type: ignore[arg-type]
            got = self._segments[group_by] = ([s[0] for s in segs], segs)
        return got

    def select(self, within: frozenset[str] | None = None, county: str | None = None, region: str | None = None,
               institution: str | None = None, sn: str | None = None) -> list[tuple[int, int]]:
        """The positions of the units the filters keep (as ``_figures`` always filtered: every filter given must
        hold), as runs ``(a, b)``."""
        if within is None and county is None and region is None and institution is None and sn is None:
            return [(0, self.n)] if self.n else []
        cands: Iterable[int]
        if sn is not None:
            cands = [self.pos[sn]] if sn in self.pos else []
        elif within is not None and len(within) < self.n:
            cands = sorted(self.pos[s] for s in within if s in self.pos)
        elif county is not None or institution is not None or region is not None:
            attr, value = next((a, v) for a, v in (("county", county), ("institution", institution),
                                                   ("region", region)) if v is not None)
            cands = [i for a, b, key in self.segments(attr)[1] if key == (value or "") for i in range(a, b)]
        else:
            cands = range(self.n)
        units = self.units
        keep = [i for i in cands
                if (within is None or units[i].sn in within) and (county is None or units[i].county == county)
                and (region is None or units[i].region == region)
                and (institution is None or units[i].institution == institution) and (sn is None or units[i].sn == sn)]
        runs: list[tuple[int, int]] = []
        for i in keep:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
        return runs


class Totals:
    """A month's or a day's stored totals of every unit of a universe: four arrays (0 for a unit without a row; a
    row of a unit no longer registered is in no answer). Gathered by C loops (``map``), not a Python step a row."""

    def __init__(self, universe: Universe, rows: list[Any]) -> None:
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        row_of = dict(zip(cols[0], range(len(rows)), strict=True))
        at = list(map(row_of.get, universe.sns, repeat(len(rows))))  # the row of each unit, or the 0 appended
        self.arrays = [_array(list(map([*col, 0].__getitem__, at))) for col in cols[1:]]
        self.nbytes = sum(a.itemsize * len(a) for a in self.arrays)

    def counts(self, k: int, a: int, b: int, h0: int | None = None, h1: int | None = None) -> Iterable[int]:
        return self.arrays[k][a:b]


class DayHours:
    """A day's packed hour counts of every unit of a universe, as running sums at each hour boundary: count ``k``
    over hours ``[h0, h1)`` is ``run[k][h1] - run[k][h0]``, for every unit at once (a missing hour counts 0, as a
    short blob's missing bytes did).

    Each running sum is one Python integer holding every unit's value in a lane of 16 bits (32 for a blob of more
    than 257 hours), unit ``p`` in bits ``[16p, 16p + 16)``: an hour's column of bytes becomes such an integer by
    spreading its bytes into the lanes (``int.from_bytes``), and adding or subtracting two of them adds or subtracts
    every lane at once (no lane overflows: a lane holds at most 255 per hour; running sums only grow, so no
    subtraction borrows). A day of 47,500 units is read in about 40 ms this way, where 96 element-wise passes took
    ~400 ms."""

    def __init__(self, universe: Universe, rows: Iterable[tuple[str, bytes]]) -> None:
        n = self.n = universe.n
        blobs = [b""] * n
        pos = universe.pos
        for sn, blob in rows:
            p = pos.get(sn)
            if p is not None:
                blobs[p] = blob
        width = -(-max(map(len, blobs), default=0) // 4) * 4
        self.hours = width // 4
        self.lane = 2 if self.hours * 255 <= 0xFFFF else 4
        joined = b"".join(b if len(b) == width else b.ljust(width, b"\0") for b in blobs)
        spread = bytearray(self.lane * n)
        self.run: list[list[int]] = [[0] for _ in range(4)]
        for h in range(self.hours):
            for k in range(4):
                spread[0::self.lane] = joined[4 * h + k::width]
                self.run[k].append(self.run[k][-1] + int.from_bytes(spread, "little"))
        self.nbytes = 4 * self.hours * self.lane * n

    def counts(self, k: int, a: int, b: int, h0: int | None = None, h1: int | None = None) -> Iterable[int]:
        h0 = min(h0 or 0, self.hours)
        h1 = min(self.hours if h1 is None else h1, self.hours)
        if h1 <= h0:
            return repeat(0, b - a)
        lanes = self.run[k][h1] - self.run[k][h0]
        out = array(_CODE[self.lane])
        out.frombytes(lanes.to_bytes(self.lane * self.n, "little")[self.lane * a: self.lane * b])
        if sys.byteorder == "big":
            out.byteswap()
        return out


def _array(values: list[int]) -> array[int]:
    """Four bytes an item where the values fit (a month of minutes does), else eight."""
    fits = not values or (min(values) >= 0 and max(values) <= 0xFFFFFFFF)
    return array("I" if fits and array("I").itemsize == 4 else "q", values)


Source = tuple[Any, int | None, int | None]  # a piece and, for a day's hours, the hours [h0, h1) taken


class RunCounts:
    """The period's counts of the units at positions ``[a, b)`` of the universe, and which are flagged."""

    __slots__ = ("a", "b", "counts", "flags")

    def __init__(self, a: int, b: int, sources: list[Source], p: int, q: int) -> None:
        self.a, self.b = a, b
        counts: list[list[int]] = []
        for k in range(4):
            acc: Iterator[int] | None = None
            for piece, h0, h1 in sources:
                it = iter(piece.counts(k, a, b, h0, h1))
                acc = it if acc is None else map(add, acc, it)
            counts.append(list(acc) if acc is not None else [0] * (b - a))
        self.counts = counts
        s, i, o, _d = counts
        # unit_flagged in integers: service > 0 and (ok/service < p/q  <=>  ok*q < p*service, q > 0)
        ps = list(map(mul, s, repeat(p)))
        self.flags = list(map(and_, map(lt, repeat(0), s),
                              map(or_, map(lt, map(mul, i, repeat(q)), ps), map(lt, map(mul, o, repeat(q)), ps))))

    def totals(self, la: int = 0, lb: int | None = None) -> tuple[int, int, int, int, int, int]:
        """(service, intact, network ok, no data, units, flagged units) of the positions ``[a+la, a+lb)``."""
        lb = self.b - self.a if lb is None else lb
        s, i, o, d = self.counts
        return (sum(s[la:lb]), sum(i[la:lb]), sum(o[la:lb]), sum(d[la:lb]), lb - la, sum(self.flags[la:lb]))


def group_totals(universe: Universe, runs: list[RunCounts], group_by: str
                 ) -> dict[str, tuple[list[int], int]]:
    """Per group key: its summed ``[service, intact, network ok, no data, units, flagged units]`` over the selected
    runs, and the position of one of its units (for the group's names)."""
    starts, segs = universe.segments(group_by)
    out: dict[str, tuple[list[int], int]] = {}
    for rc in runs:
        j = max(0, bisect_right(starts, rc.a) - 1)
        while j < len(segs) and segs[j][0] < rc.b:
            sa, sb, key = segs[j]
            lo, hi = max(sa, rc.a), min(sb, rc.b)
            if lo < hi:
                t = rc.totals(lo - rc.a, hi - rc.a)
                got = out.get(key)
                if got is None:
                    out[key] = (list(t), lo)
                else:
                    acc = got[0]
                    for x in range(6):
                        acc[x] += t[x]
            j += 1
    return out


class PieceCache:
    """Pieces kept between requests (least recently used first out past ``budget`` bytes), each with the stamps of
    its days when it was read; a piece whose days' stamps have moved since is read again."""

    def __init__(self, storage: Any, budget: int = BUDGET_BYTES) -> None:
        self.storage = storage
        self.budget = budget
        self._universe: Universe | None = None
        self._stamps: dict[int, int] = {}
        self._stamps_of: str | None = None  # the rollup_version the stamps were read at
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[tuple[Any, ...], asyncio.Future[Any]] = {}
        self.reads = 0  # pieces read from storage (a miss), for tests and figures
        self.hits = 0

    async def universe(self, index: dict[str, Any], rollup_version: str) -> Universe:
        """The universe of ``index`` (a new index: every piece is read again) with the stamps as of
        ``rollup_version`` (read again when it moved; every roll-up write and purge moves it)."""
        if self._universe is None or self._universe.index is not index:
            self._universe = Universe(index)
            self._entries.clear()
            self._bytes = 0
        if rollup_version != self._stamps_of:
            # read before any piece read after it: a piece is never newer-stamped than what it holds
            stamps = await self.storage.rollup_stamps()
            self._stamps, self._stamps_of = stamps, rollup_version
        return self._universe

    def _stamp(self, key: tuple[Any, ...]) -> tuple[int | None, int | None]:
        st = self._stamps
        if key[0] == "month":
            first, last = month_days(key[1])
            got = [st[d] for d in range(first, last + 1) if d in st]
            return st.get(0), max(got) if got else None
        return st.get(0), st.get(key[1])

    async def sources(self, universe: Universe, plan: PeriodPlan) -> list[Source]:
        """The pieces of ``plan`` (read or kept), each with the hours it contributes."""
        keys: list[tuple[tuple[Any, ...], int | None, int | None]] = [
            *((("month", m), None, None) for m in plan.months), *((("day", d), None, None) for d in plan.days),
            *((("hours", d), a, b) for d, a, b in plan.parts)]
        pieces = await asyncio.gather(*(self._piece(universe, key) for key, _a, _b in keys))
        return [(piece, a, b) for piece, (_k, a, b) in zip(pieces, keys, strict=True)]

    async def _piece(self, universe: Universe, key: tuple[Any, ...]) -> Any:
        stamp = self._stamp(key)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == stamp and universe is self._universe:
            self._entries.move_to_end(key)
            self.hits += 1
            return hit[1]
        tag = (id(universe), key, stamp)
        fut = self._loading.get(tag)
        if fut is None:
            fut = asyncio.ensure_future(self._read(universe, key, stamp))
            self._loading[tag] = fut
            fut.add_done_callback(lambda _f: self._loading.pop(tag, None))
        return await asyncio.shield(fut)

    async def _read(self, universe: Universe, key: tuple[Any, ...], stamp: tuple[int | None, int | None]) -> Any:
        self.reads += 1
        kind, value = key
        # built on a thread: pure CPU (1-2 s for a day's hours at 210,000 units), during which the event loop keeps
        # answering requests between the thread's GIL turns instead of none at all (the warm loop rebuilds today's
        # hours after every roll-up write to it; decision 037)
        if kind == "hours":
            piece: Any = await asyncio.to_thread(DayHours, universe, await self.storage.rollup_hours(value))
        else:
            piece = await asyncio.to_thread(Totals, universe, await self.storage.rollup_totals(**{kind: value}))
        if universe is self._universe and self._stamp(key) == stamp and piece.nbytes <= self.budget // 2:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            self._entries[key] = (stamp, piece)
            self._bytes += piece.nbytes
            while self._bytes > self.budget and self._entries:
                _k, (_s, gone) = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes
        return piece
