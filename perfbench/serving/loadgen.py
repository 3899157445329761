"""The load generator: when each request is sent. Knows nothing of HTTP or wire formats.

- Closed loop: `concurrency` workers, each sending its next request as soon as its previous one is
  done. A request's scheduled time is the moment its worker became free.
- Open loop: requests at `rate_rps` on a schedule computed before the first send (Poisson arrivals,
  or gamma with a burstiness factor: shape = burstiness, mean gap 1/rate, as vLLM's bench does;
  burstiness 1 is Poisson, below 1 burstier, above 1 more regular). Each request is sent at its
  absolute scheduled time, so the achieved rate cannot drift below the target through accumulated
  sleep error. `max_concurrency` optionally caps requests in flight; time waiting for a slot is
  client queueing and stays inside the request's latency (E2E runs from the scheduled time).

The client checks itself: `send lag` = actual send time minus the moment the request could go
(scheduled, or slot free), and the CPU time of the thread running the event loop over the point's
wall time (1.0 = one core saturated).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from perfbench.serving.client import RequestRecord

#: Hard bound on requests of one load point, whatever duration_s says.
MAX_REQUESTS = 1_000_000


@dataclass(frozen=True)
class LoadPlan:
    """One load point: closed loop at `concurrency`, or open loop at `rate_rps`."""

    mode: str  # closed | open
    concurrency: int | None = None  # closed: workers; open: cap on requests in flight (None: none)
    rate_rps: float | None = None
    arrival: str = "poisson"  # poisson | gamma
    burstiness: float = 1.0
    n_requests: int | None = 64  # requests sent in all, warm-up and cool-down included
    duration_s: float | None = None  # or: keep sending until this much time has passed
    warmup: int = 0
    cooldown: int = 0
    seed: int = 0

    @property
    def label(self) -> str:
        """The point's identity in the store (`load_point`): c8, r2.5, r2.5/c8."""
        if self.mode == "closed":
            return f"c{self.concurrency}"
        return f"r{self.rate_rps:g}" + (f"/c{self.concurrency}" if self.concurrency else "") + (
            f"/{self.arrival}{self.burstiness:g}" if self.arrival == "gamma" else "")


def schedule(rate_rps: float, *, n: int | None, duration_s: float | None, arrival: str = "poisson",
             burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send offsets (seconds from the start), computed up front. The first request goes at 0."""
    if rate_rps <= 0:
        raise ValueError("rate_rps must be positive")
    shape = 1.0 if arrival == "poisson" else burstiness
    rng = random.Random(seed)
    scale = 1.0 / (rate_rps * shape)
    out, t = [0.0], 0.0
    limit = min(n or MAX_REQUESTS, MAX_REQUESTS)
    while len(out) < limit:
        t += rng.gammavariate(shape, scale)
        if duration_s is not None and t >= duration_s:
            break
        out.append(t)
    return out


@dataclass
class LoadResult:
    records: list[RequestRecord]
    wall_s: float
    cpu_s: float  # CPU time of the event-loop thread over the point
    scheduled_rate_rps: float | None = None  # the precomputed schedule's own rate (open loop)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


Send = Callable[[RequestRecord], Awaitable[None]]


def _share(total: int | None, shard: tuple[int, int]) -> int | None:
    """Shard k of n's part of `total` (the first ones get the remainder); None stays None."""
    k, n = shard
    return None if total is None else total // n + (k < total % n)


async def drive(plan: LoadPlan, send: Send, prompt_ids: list[str], t0: float, *,
                shard: tuple[int, int] = (0, 1), start_at: float | None = None) -> LoadResult:
    """Run one load point; `send(record)` issues the request for `record.index` and fills it.
    `t0` is the perf_counter origin every record's times are relative to. `shard` (k, n): this
    process's part of a load spread over n client processes (closed loop: its share of the
    workers and of the requests; open loop: every n-th request of the one schedule), all starting
    at the absolute perf_counter time `start_at` (CLOCK_MONOTONIC: shared by the processes)."""
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    if plan.mode == "closed":
        records = await _closed(plan, send, prompt_ids, t0, shard)
        sched_rate = None
    else:
        offsets = schedule(plan.rate_rps or 0, n=plan.n_requests, duration_s=plan.duration_s,
                           arrival=plan.arrival, burstiness=plan.burstiness, seed=plan.seed)
        records = await _open(plan, offsets, send, prompt_ids, t0, shard,
                              None if start_at is None else start_at - t0)
        sched_rate = (len(offsets) - 1) / offsets[-1] if len(offsets) > 1 and offsets[-1] > 0 else None
    result = LoadResult(records, time.perf_counter() - wall0, time.thread_time() - cpu0, sched_rate)
    assign_roles(records, plan.warmup, plan.cooldown)
    return result


def assign_roles(records: list[RequestRecord], warmup: int, cooldown: int) -> None:
    """The first `warmup` and last `cooldown` requests (in schedule order) are not measured."""
    order = sorted(records, key=lambda r: (r.scheduled_s if r.scheduled_s is not None else math.inf, r.index))
    for i, r in enumerate(order):
        r.role = "warmup" if i < warmup else "cooldown" if i >= len(order) - cooldown else "measured"


def _record(i: int, prompt_ids: list[str]) -> RequestRecord:
    return RequestRecord(index=i, prompt_id=prompt_ids[i % len(prompt_ids)])


async def _closed(plan: LoadPlan, send: Send, prompt_ids: list[str], t0: float,
                  shard: tuple[int, int] = (0, 1)) -> list[RequestRecord]:
    clock = time.perf_counter
    limit = min(plan.n_requests or MAX_REQUESTS, MAX_REQUESTS)
    end = clock() + plan.duration_s if plan.duration_s is not None else math.inf
    records: list[RequestRecord] = []
    counter = iter(range(shard[0], limit, shard[1]))

    async def worker() -> None:
        free = clock() - t0
        for i in counter:
            if clock() >= end:
                return
            rec = _record(i, prompt_ids)
            rec.scheduled_s = rec.ready_s = free
            records.append(rec)
            await send(rec)
            free = clock() - t0

    await asyncio.gather(*(worker() for _ in range(_share(plan.concurrency or 1, shard) or 0)))
    return records


async def _open(plan: LoadPlan, offsets: list[float], send: Send, prompt_ids: list[str],
                t0: float, shard: tuple[int, int] = (0, 1), start: float | None = None) -> list[RequestRecord]:
    clock = time.perf_counter
    cap = _share(plan.concurrency, shard)
    sem = asyncio.Semaphore(max(cap, 1)) if cap is not None else None
    if start is None:
        start = clock() - t0 + 0.002  # the schedule's origin, relative to t0
    records: list[RequestRecord] = []
    tasks: set[asyncio.Task] = set()

    async def one(rec: RequestRecord) -> None:
        if sem is None:
            rec.ready_s = rec.scheduled_s
            await send(rec)
            return
        async with sem:
            rec.ready_s = max(rec.scheduled_s, clock() - t0)
            await send(rec)

    try:
        for i, off in enumerate(offsets):
            if i % shard[1] != shard[0]:
                continue
            due = start + off
            delay = due - (clock() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            rec = _record(i, prompt_ids)
            rec.scheduled_s = due
            records.append(rec)
            t = asyncio.ensure_future(one(rec))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    return records
