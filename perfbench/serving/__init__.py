"""Serving benchmarks: a server measured per request, under a stated load (docs/serving.md).

- `protocols`: request bodies and stream parsers of each API (OpenAI SSE, Ollama NDJSON, llama.cpp
  native), no network;
- `client`: one request over aiohttp, timed as the client sees it;
- `loadgen`: when requests are sent (closed loop, open loop with Poisson/gamma arrivals);
- `stats`: a load point's result fields from its request records;
- `server`: start a server, wait until it is ready, stop its process group, keep its log.
"""

from __future__ import annotations

import asyncio
import gc
import time

from perfbench.serving.client import ClientConfig, HttpClient, RequestRecord
from perfbench.serving.loadgen import LoadPlan, LoadResult, drive

__all__ = ["ClientConfig", "LoadPlan", "LoadResult", "RequestRecord", "run_load"]


def run_load(cfg: ClientConfig, plan: LoadPlan, prompts: list[tuple[str, str]], *, processes: int = 1,
             shard: tuple[int, int] = (0, 1), start_at: float | None = None) -> LoadResult:
    """Run one load point in this thread's own event loop: `prompts` are (id, text), used in turn.
    `processes` > 1 spreads it over that many client processes (`run_spread`)."""
    if processes > 1:
        return run_spread(cfg, plan, prompts, processes)

    async def main() -> LoadResult:
        async with HttpClient(cfg) as client:
            bodies = [client.body(text) for _, text in prompts]
            ids = [pid for pid, _ in prompts]
            client.t0 = t0 = start_at if start_at is not None else time.perf_counter()

            async def send(rec: RequestRecord) -> None:
                await client.send(rec, bodies[rec.index % len(bodies)])

            return await drive(plan, send, ids, t0, shard=shard, start_at=start_at)

    # Python's cyclic garbage collector off while the load runs (as the runner does for timed
    # steps): a full collection over the records would stall the event loop for milliseconds, seen
    # as send lag that has nothing to do with the server. Bounded: a point is bounded in requests.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return asyncio.run(main())
    finally:
        if was_enabled:
            gc.enable()


def _shard_main(conn, cfg: ClientConfig, plan: LoadPlan, prompts: list[tuple[str, str]],
                shard: tuple[int, int]) -> None:
    """One client process of a spread load: say ready, take the common start time, run, report."""
    import aiohttp  # noqa: F401 - imported before "ready": an import is not part of the load

    conn.send("ready")
    start_at = conn.recv()
    try:
        conn.send(run_load(cfg, plan, prompts, shard=shard, start_at=start_at))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(RuntimeError(f"client process {shard[0]}: {type(exc).__name__}: {exc}"))


def run_spread(cfg: ClientConfig, plan: LoadPlan, prompts: list[tuple[str, str]], processes: int) -> LoadResult:
    """One load point from `processes` client processes (spawned, one event loop each) when one
    process cannot generate it: the same schedule (open loop: request i goes from process
    i mod n) or the same total concurrency (closed loop), one common start time. The records are
    merged; `cpu_s` is the busiest process's, so `cpu_share` says whether any one saturated."""
    import multiprocessing as mp

    from perfbench.serving.loadgen import assign_roles

    ctx = mp.get_context("spawn")  # no fork of a process that may hold threads and a model
    pipes, procs = [], []
    try:
        for k in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_shard_main, args=(child, cfg, plan, prompts, (k, processes)), daemon=True)
            p.start()
            pipes.append(parent)
            procs.append(p)
        for conn in pipes:
            if not conn.poll(60) or conn.recv() != "ready":
                raise RuntimeError("a client process did not start within 60 s")
        start_at = time.perf_counter() + 0.2  # each process opens its session before this
        for conn in pipes:
            conn.send(start_at)
        results = []
        for conn in pipes:
            r = conn.recv()
            if isinstance(r, BaseException):
                raise r
            results.append(r)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(10)
    records = sorted((r for res in results for r in res.records), key=lambda r: r.index)
    assign_roles(records, plan.warmup, plan.cooldown)
    busiest = max(results, key=lambda r: r.cpu_share)
    return LoadResult(records, max(r.wall_s for r in results), busiest.cpu_s * max(r.wall_s for r in results)
                      / busiest.wall_s if busiest.wall_s else 0.0, results[0].scheduled_rate_rps,
                      notes=[f"spread over {processes} client processes"])
