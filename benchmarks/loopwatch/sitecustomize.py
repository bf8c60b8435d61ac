"""Where a server process's time goes under load: a diagnostic for benchmark runs, never loaded by posfleet itself.

Put this folder on ``PYTHONPATH`` and name an output folder in ``POSFLEET_LOOPWATCH``; every ``posfleet server run``
process started from that environment (the primary and its API workers) then writes ``<folder>/<role>-<pid>.log``::

    POSFLEET_LOOPWATCH=/tmp/lw PYTHONPATH=$PWD:$PWD/benchmarks/loopwatch \\
        .venv/bin/python -m benchmarks.bench_scale --sizes 200000 ...

Lines (epoch seconds first, so they line up with ``vmstat -t 1``):

* ``STALL t ms cpu ms`` and the main thread's commonest stacks meanwhile: the event loop did not run a 5 ms timer
  for more than 100 ms. ``cpu`` far below the stall's length means the process was not given a core (a saturated
  box, the VM's steal) or blocked in a system call (the stacks then end in it); close to it, Python ran something
  that long (the stacks name it).
* ``SEC t cpu % | acquires n wait mean/p99 | holds mean/p99 | statements``: each second, the process's CPU, how
  long requests waited for a pooled PostgreSQL connection, how long each held one, and the statements that took
  most of that time (count x mean wall time: PostgreSQL's work and both processes' waits for a core).
* ``GC t genN ms``: a cyclic collection longer than 20 ms.

Found (2026-12-07, docs/performance-scale.md): in the list phase at 200,000 terminals the box had no idle CPU, a
token read (one index look-up) took 20-30 ms and a page of units 30-45 ms, and the API processes were held off a
core 100-160 ms at a time. Python's ``site`` imports this module at start (it is named ``sitecustomize`` for that);
outside ``posfleet server run`` or without the variable it does nothing.
"""

from __future__ import annotations

import builtins
import collections
import gc
import os
import sys
import threading
import time
import traceback
from typing import Any

_OUT = os.environ.get("POSFLEET_LOOPWATCH", "")
_SERVER = "server" in sys.argv and "run" in sys.argv


def _start(folder: str) -> None:
    role = "api" if "--api-only" in sys.argv else "primary"
    os.makedirs(folder, exist_ok=True)
    out = open(os.path.join(folder, f"{role}-{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115 - the process's
    out.write(f"start {role} {os.getpid()} {time.time():.3f}\n")
    probe = [time.perf_counter()]
    waits: list[float] = []
    holds: list[float] = []
    taken: dict[int, float] = {}
    statements: collections.defaultdict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])

    def on_gc(phase: str, info: dict[str, Any], _t: list[float] = [0.0]) -> None:  # noqa: B006 - kept between calls
        if phase == "start":
            _t[0] = time.perf_counter()
        elif (d := time.perf_counter() - _t[0]) > 0.02:
            out.write(f"GC {time.time():.3f} gen{info['generation']} {d * 1000:.0f} ms\n")

    gc.callbacks.append(on_gc)

    async def tick() -> None:
        import asyncio

        while True:
            probe[0] = time.perf_counter()
            await asyncio.sleep(0.005)

    def patch_uvicorn(uvicorn: Any) -> None:
        serve = uvicorn.Server.serve

        async def watched(self: Any, *a: Any, **k: Any) -> Any:
            import asyncio

            asyncio.get_running_loop().create_task(tick())
            return await serve(self, *a, **k)

        uvicorn.Server.serve = watched

    def patch_asyncpg(asyncpg: Any) -> None:
        pool, conn = asyncpg.pool.Pool, asyncpg.connection.Connection
        acquire, release = pool._acquire, pool.release

        async def acquire_timed(self: Any, timeout: Any) -> Any:
            t = time.perf_counter()
            c = await acquire(self, timeout)
            now = time.perf_counter()
            waits.append(now - t)
            taken[id(c)] = now
            return c

        async def release_timed(self: Any, connection: Any, *, timeout: Any = None) -> Any:
            t = taken.pop(id(connection), None)
            if t is not None:
                holds.append(time.perf_counter() - t)
            return await release(self, connection, timeout=timeout)

        pool._acquire, pool.release = acquire_timed, release_timed
        def timed(orig: Any) -> Any:
            async def run(self: Any, query: str, *a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await orig(self, query, *a, **k)
                finally:
                    s = statements[" ".join(str(query).split())[:60]]
                    s[0] += 1
                    s[1] += time.perf_counter() - t
            return run

        for name in ("fetch", "fetchrow", "fetchval", "execute"):
            setattr(conn, name, timed(getattr(conn, name)))

    done: set[str] = set()
    plain_import = builtins.__import__

    def importing(name: str, *a: Any, **k: Any) -> Any:
        module = plain_import(name, *a, **k)
        if name in ("uvicorn", "asyncpg") and name not in done:
            m = sys.modules.get(name)
            ready = hasattr(m, "Server") if name == "uvicorn" else hasattr(getattr(m, "pool", None), "Pool")
            if ready:  # (not while the package itself is still being imported)
                done.add(name)
                (patch_uvicorn if name == "uvicorn" else patch_asyncpg)(m)
        return module

    builtins.__import__ = importing

    def p99(xs: list[float]) -> float:
        return sorted(xs)[int(len(xs) * 0.99)] * 1000 if xs else 0.0

    def each_second() -> None:
        cpu0, t0 = time.process_time(), time.perf_counter()
        while True:
            time.sleep(1.0)
            cpu1, t1 = time.process_time(), time.perf_counter()
            w, h = waits[:], holds[:]
            del waits[:len(w)], holds[:len(h)]
            top = sorted(statements.items(), key=lambda kv: -kv[1][1])[:3]
            statements.clear()
            if w:
                out.write(f"SEC {time.time():.0f} cpu {100 * (cpu1 - cpu0) / (t1 - t0):.0f} % | acquires {len(w)} "
                          f"wait {1000 * sum(w) / len(w):.1f}/{p99(w):.1f} ms | holds "
                          f"{1000 * sum(h) / max(1, len(h)):.1f}/{p99(h):.1f} ms | "
                          + " | ".join(f"{int(n)} x {1000 * s / n:.1f} ms {q}" for q, (n, s) in top) + "\n")
            cpu0, t0 = cpu1, t1

    def stalls() -> None:
        main = threading.main_thread().ident
        since: float | None = None
        cpu0 = 0.0
        stacks: collections.Counter[str] = collections.Counter()
        while True:
            time.sleep(0.01)
            if time.perf_counter() - probe[0] > 0.06:
                if since is None:
                    since, cpu0 = probe[0], time.process_time()
                    stacks.clear()
                frame = sys._current_frames().get(main or 0)
                if frame is not None:
                    stacks[" < ".join(f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}"
                                      for f in reversed(traceback.extract_stack(frame)[-6:]))] += 1
            elif since is not None:
                if (d := probe[0] - since) > 0.1:
                    out.write(f"STALL {time.time():.3f} {d * 1000:.0f} ms cpu {1000 * (time.process_time() - cpu0):.0f} ms\n")
                    for s, n in stacks.most_common(3):
                        out.write(f"   {n:3d} {s}\n")
                since = None

    for target in (each_second, stalls):
        threading.Thread(target=target, daemon=True, name=f"loopwatch-{target.__name__}").start()


if _OUT and _SERVER:
    _start(_OUT)
