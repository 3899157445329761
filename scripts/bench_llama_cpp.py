#!/usr/bin/env python
"""perfbench's llama.cpp token generation vs a bare llama-cpp-python loop. Target: within 3%.

Same GGUF (the tiny Llama preset, written with ensure_tiny_gguf), same n_threads, same context
depth (seq_len tokens in the KV cache) and same number of generated tokens. Each round runs:

  perfbench    the llama-cpp workload in phase decode through perfbench.runner.run_spec into a
               throwaway store; tg = the stored tg_tokens_per_s (the step's own clock around the
               decode loop); e2e = tokens_per_s (the runner's clock around the whole step)
  bare         llama_cpp.Llama on the file, context evaluated once, then new_tokens x
               (llama_decode of a prebuilt one-token batch + llama_synchronize), the KV cache
               rewound to seq_len between repeats: the leanest loop the binding allows
  Llama.eval   the same with the high-level `llm.eval([token])` per token (for reference)

The arms alternate order round by round; each round's figure is the median over its repeats, and
the table shows the median over rounds. Exit status is 0 either way; the last line says PASS/FAIL.

    .venv/bin/python scripts/bench_llama_cpp.py                     # 1 thread, 7 rounds
    .venv/bin/python scripts/bench_llama_cpp.py --threads 2 --rounds 9
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.03
REPO = Path(__file__).resolve().parents[1]
WORKLOAD = REPO / "workloads" / "llama-cpp-tiny-cpu.yaml"


def perfbench_round(gguf: Path, a: argparse.Namespace, store: Path) -> dict[str, float]:
    """One perfbench run of the decode phase on the file; its tg and end-to-end tokens/s."""
    from perfbench.runner import run_spec
    from perfbench.spec import load_spec
    from perfbench.store import ResultsStore

    sets = [f"model={{path: {gguf}}}", "phase=decode", f"seq_len={a.seq_len}", f"new_tokens={a.new_tokens}",
            f"backend.n_threads={a.threads}", f"measure.warmup={a.warmup}", f"measure.repeats={a.repeats}",
            "measure.min_seconds=0", "measure.energy='off'"]
    spec = load_spec(WORKLOAD, overrides=sets)
    with ResultsStore(store) as st:
        res = run_spec(spec, st)
    p = res.points[0]
    if p["status"] != "ok":
        raise RuntimeError(f"perfbench point failed: {p.get('error')}")
    return {"tg": p["tg_tokens_per_s"], "e2e": p["tokens_per_s"], "engine": p["engine_tg_tokens_per_s"]}


def bare_round(gguf: Path, a: argparse.Namespace, *, high_level: bool) -> float:
    """A bare loop at the same depth; median tokens/s over `repeats` timed loops."""
    import llama_cpp
    from llama_cpp import llama_cpp as L

    llm = llama_cpp.Llama(str(gguf), n_ctx=auto_ctx(a), n_threads=a.threads, n_threads_batch=a.threads,
                          n_batch=128, n_ubatch=128, verbose=False)
    try:
        ctx, n, depth = llm.ctx, a.new_tokens, a.seq_len
        llm.eval([(300 + 7 * i) % 1000 + 3 for i in range(depth)])  # the context, untimed
        mem = L.llama_get_memory(ctx)
        ids = (ctypes.c_int32 * n)(*[(500 + 11 * i) % 1000 + 3 for i in range(n)])
        p = ctypes.POINTER(ctypes.c_int32)
        batches = [L.llama_batch_get_one(ctypes.cast(ctypes.addressof(ids) + 4 * i, p), 1) for i in range(n)]
        tokens = list(ids)
        rates = []
        for i in range(a.warmup + a.repeats):
            t = timed_eval(llm, tokens) if high_level else timed_decode(L, ctx, batches)
            L.llama_memory_seq_rm(mem, 0, depth, -1)
            llm.n_tokens = depth
            if i >= a.warmup:
                rates.append(n / t)
        return statistics.median(rates)
    finally:
        llm.close()


def timed_decode(L, ctx, batches) -> float:
    ns, decode, sync = time.perf_counter_ns, L.llama_decode, L.llama_synchronize
    t0 = ns()
    for b in batches:
        if decode(ctx, b):
            raise RuntimeError("llama_decode failed")
        sync(ctx)
    return (ns() - t0) / 1e9


def timed_eval(llm, tokens) -> float:
    t0 = time.perf_counter_ns()
    for tok in tokens:
        llm.eval([tok])
    return (time.perf_counter_ns() - t0) / 1e9


def auto_ctx(a: argparse.Namespace) -> int:
    from perfbench.backends.llama_cpp.config import auto_n_ctx

    return auto_n_ctx(a.seq_len, a.new_tokens)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="n_threads for both (default 1: steadiest on a small shared CPU box)")
    ap.add_argument("--seq-len", type=int, default=128, help="context depth")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=40, help="timed loops per round and arm")
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    from perfbench.models.arch import PRESETS
    from perfbench.models.gguf_tiny import ensure_tiny_gguf
    from perfbench.runner import cache_dir

    gguf = ensure_tiny_gguf(PRESETS["tiny-llama"], 0, cache_dir())
    arms: dict[str, list[float]] = {"perfbench tg": [], "perfbench e2e": [], "perfbench engine": [],
                                    "bare loop": [], "Llama.eval": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = ("pb", "bare", "eval") if r % 2 == 0 else ("eval", "bare", "pb")
            for arm in order:
                if arm == "pb":
                    got = perfbench_round(gguf, a, Path(tmp) / "bench.sqlite")
                    for k, name in (("tg", "perfbench tg"), ("e2e", "perfbench e2e"), ("engine", "perfbench engine")):
                        arms[name].append(got[k])
                else:
                    arms["bare loop" if arm == "bare" else "Llama.eval"].append(
                        bare_round(gguf, a, high_level=arm == "eval"))
    return report(arms, a, gguf)


def report(arms: dict[str, list[float]], a: argparse.Namespace, gguf: Path) -> int:
    bare = statistics.median(arms["bare loop"])
    print(f"tiny-llama GGUF {gguf.name}, n_threads {a.threads}, depth {a.seq_len}, {a.new_tokens} tokens, "
          f"{a.rounds} rounds x {a.repeats} repeats (CPUs here: {os.cpu_count()})")
    print(f"{'arm':<18}{'tg tokens/s':>14}{'vs bare':>10}{'round min..max':>24}")
    for name, xs in arms.items():
        med = statistics.median(xs)
        print(f"{name:<18}{med:>14,.1f}{med / bare:>10.3f}{min(xs):>12,.0f}..{max(xs):,.0f}")
    ratio = statistics.median(arms["perfbench tg"]) / bare
    e2e = statistics.median(arms["perfbench e2e"]) / bare
    ok = ratio >= 1 - TARGET and e2e >= 1 - TARGET
    print(f"perfbench tg / bare = {ratio:.3f}, perfbench e2e / bare = {e2e:.3f} "
          f"(target >= {1 - TARGET:.2f}): {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
