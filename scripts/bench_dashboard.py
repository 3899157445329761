#!/usr/bin/env python
"""Server time of the dashboard on a large results store: each page's first render and each callback.

    .venv/bin/python scripts/bench_dashboard.py                       # 2,000 runs, 50,000 points, 20 sweeps x 500
    .venv/bin/python scripts/bench_dashboard.py --repeat 3 --json out.json
    .venv/bin/python scripts/bench_dashboard.py --runs 60 --points 600 --sweeps 2 --trials 40   # a smoke run
    .venv/bin/python scripts/bench_dashboard.py --store /tmp/big.sqlite --keep   # build once, reuse later
    .venv/bin/python scripts/bench_dashboard.py --profile runs:runs-batch     # cProfile of matching calls

What it does:

1. builds a store through the real schema (ResultsStore creates it; rows go in by executemany inside
   a few transactions, point rows via perfbench.schema.to_columns): several models, backends
   (torch, hf-pipeline, llama-cpp, vllm, openai-http), five machines (H100, H200, A100, a Xeon, a
   Raspberry Pi 5), phases prefill/decode/generate/serve, statuses incl. failed and running, dates
   over eight months, gate subjects (commits on main) forming history series, raw samples, energy on
   some points, serving fields and per-request rows on serve runs, trace figures on some points,
   and sweeps (grid and random, 2-4 parameters) whose trials link to runs. Seeded: deterministic.
2. drives the real app (`create_app(store)`) in process through Flask's test client with the JSON the
   browser sends: GET /_dash-layout and /_dash-dependencies, then per page the pages router callback
   (the page's first render), then every callback the browser fires on load (inputs all present,
   not prevent_initial_call; chained in dependency order, outputs applied to the layout), then
   interactions (a selection, a filter, a page change, a live-refresh tick, ...) with selections
   derived from the store. Each POST /_dash-update-component is timed.
3. reports per page: first render ms, each callback's median/max ms, PASS/FAIL against the targets
   (first render < 1.5 s, callbacks < 300 ms); --json writes the same as JSON.

A callback that fails is reported with its status code and the error text; the run goes on.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RENDER_TARGET_MS = 1500.0
CALLBACK_TARGET_MS = 300.0
START = datetime(2025, 3, 1, tzinfo=timezone.utc)
SPAN_DAYS = 240

# ==================================================================================================
# The store
# ==================================================================================================

_GIB = 1024 ** 3
MACHINES = {  # name -> fingerprint (hardware_id added below)
    "h100": {"cpu_model": "AMD EPYC 9454 48-Core Processor", "cpu_cores_logical": 96, "board_model": None,
             "memory_total_bytes": 1024 * _GIB, "arch": "x86_64", "os": "Linux",
             "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * _GIB}]},
    "h200": {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_cores_logical": 112, "board_model": None,
             "memory_total_bytes": 2048 * _GIB, "arch": "x86_64", "os": "Linux",
             "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_total_bytes": 141 * _GIB}]},
    "a100": {"cpu_model": "AMD EPYC 7742 64-Core Processor", "cpu_cores_logical": 128, "board_model": None,
             "memory_total_bytes": 512 * _GIB, "arch": "x86_64", "os": "Linux",
             "gpus": [{"index": 0, "name": "NVIDIA A100-SXM4-40GB", "memory_total_bytes": 40 * _GIB}]},
    "xeon": {"cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "cpu_cores_logical": 32,
             "board_model": None, "memory_total_bytes": 128 * _GIB, "arch": "x86_64", "os": "Linux", "gpus": []},
    "pi5": {"cpu_model": "Cortex-A76", "cpu_cores_logical": 4, "board_model": "Raspberry Pi 5 Model B Rev 1.0",
            "memory_total_bytes": 8 * _GIB, "arch": "aarch64", "os": "Linux", "gpus": []},
}
GPUS = ("h100", "h200", "a100")
CPUS = ("xeon", "pi5")
#: Relative speed (higher: faster), to make the numbers plausible across machines.
SPEED = {"h100": 1.0, "h200": 1.25, "a100": 0.6, "xeon": 0.02, "pi5": 0.003}
#: Watts under load and idle, for the energy fields.
POWER = {"h100": (550.0, 70.0), "h200": (600.0, 75.0), "a100": (330.0, 55.0), "xeon": (180.0, 60.0),
         "pi5": (7.5, 2.7)}
ENERGY_METHOD = {"h100": "nvml-counter", "h200": "nvml-counter", "a100": "nvml-power-sampled", "xeon": "rapl",
                 "pi5": "pi5-pmic"}

_LOAD_C = {"concurrency": [1, 2, 4, 8], "requests": 32, "warmup_requests": 2, "max_tokens": 64,
           "slo": {"ttft_ms": 500, "tpot_ms": 50}}
_LOAD_R = {"rates_rps": [1, 4, 16], "max_concurrency": 64, "arrival": "poisson", "requests": 64,
           "warmup_requests": 4, "cooldown_requests": 4, "max_tokens": 128, "ignore_eos": True,
           "slo": {"ttft_ms": 500, "tpot_ms": 50, "e2e_ms": 10000}}
#: Workload templates: (name, spec mapping, machines it runs on, dtype variants).
TEMPLATES: list[tuple[str, dict, tuple[str, ...], tuple[str, ...]]] = [
    ("llama-3.2-1b-prefill", {"model": "llama-3.2-1b", "phase": "prefill", "batch_sizes": [1, 8, 64], "seq_len": 128,
                              "new_tokens": 0, "device": "cuda",
                              "backend": {"name": "torch", "compile": "none", "attn_implementation": "sdpa"}},
     GPUS, ("bfloat16", "float16")),
    ("llama-3.2-1b-decode", {"model": "llama-3.2-1b", "phase": "decode", "batch_sizes": [1, 8, 64], "seq_len": 512,
                             "new_tokens": 32, "device": "cuda", "backend": {"name": "torch", "compile": "default"}},
     GPUS, ("bfloat16",)),
    ("llama-3.1-8b-prefill", {"model": "llama-3.1-8b", "phase": "prefill", "batch_sizes": [1, 8], "seq_len": 1024,
                              "new_tokens": 0, "device": "cuda", "backend": {"name": "torch", "compile": "reduce-overhead"}},
     ("h100", "h200"), ("bfloat16",)),
    ("vllm-llama-3.2-1b", {"model": "llama-3.2-1b", "phase": "generate", "batch_sizes": [1, 16, 128], "seq_len": 128,
                           "new_tokens": 20, "device": "cuda",
                           "backend": {"name": "vllm", "gpu_memory_utilization": 0.9, "max_model_len": 1024}},
     GPUS, ("bfloat16",)),
    ("bert-base-encoder", {"model": "bert-base", "phase": "prefill", "batch_sizes": [1, 32], "seq_len": 128,
                           "new_tokens": 0, "device": "auto", "backend": {"name": "torch", "compile": "none"}},
     GPUS + ("xeon",), ("float32", "float16")),
    ("tiny-llama-cpu", {"model": "tiny-llama", "phase": "prefill", "batch_sizes": [1, 2, 4, 8], "seq_len": 64,
                        "new_tokens": 0, "device": "cpu", "backend": {"name": "torch", "compile": "none"}},
     CPUS, ("float32",)),
    ("llama-cpp-tiny-cpu", {"model": "tiny-llama", "phase": "generate", "batch_sizes": [1], "seq_len": 128,
                            "new_tokens": 32, "device": "cpu",
                            "backend": {"name": "llama-cpp", "n_threads": 2, "n_batch": 128}},
     CPUS, ("float32", "float16")),
    ("hf-pipeline-tiny-cpu", {"model": "tiny-llama", "phase": "generate", "batch_sizes": [1, 4], "seq_len": 32,
                              "new_tokens": 16, "device": "cpu",
                              "backend": {"name": "hf-pipeline", "prompt_kind": "short_question"}},
     CPUS, ("float32",)),
    ("serving-vllm", {"model": "llama-3.2-1b", "phase": "serve", "device": "cpu",
                      "backend": {"name": "openai-http", "preset": "vllm", "model_name": "meta-llama/Llama-3.2-1B"},
                      "load": _LOAD_R}, GPUS, ("bfloat16",)),
    ("serving-llamafile", {"model": "llama-3.2-1b", "phase": "serve", "device": "cpu",
                           "backend": {"name": "openai-http", "preset": "llamafile"}, "load": _LOAD_C},
     CPUS, ("float32",)),
]
_MEASURE = {"warmup": 2, "repeats": 20, "min_seconds": 0.5, "trace": False}
#: Per model: (parameters in billions) for a rough cost model.
MODEL_SIZE = {"llama-3.2-1b": 1.2, "llama-3.1-8b": 8.0, "bert-base": 0.11, "tiny-llama": 0.002}
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SEQ_LENS = (64, 128, 256, 512, 1024, 2048)
TRACE_KEYS = ("tklqt_us", "launch_call_us", "queue_us", "kernels", "launches", "akd_us", "gpu_busy_us",
              "gpu_span_us", "gpu_util", "idle_host_wait_us", "steps", "orphans", "negative_clamped",
              "dropped", "graph_launches", "bound", "has_gpu", "note")


@dataclass
class Series:
    """One workload on one machine with one dtype: a spec_hash + hardware_id history."""

    name: str
    spec: dict
    spec_hash: str
    machine: str
    gated: bool  # its runs carry gate subjects on main (history)


@dataclass
class Facts:
    """What the benchmark selects from the store it built (derived from the store, not guessed)."""

    runs: int = 0
    points: int = 0
    requests: int = 0
    sweeps: int = 0
    trials: int = 0
    build_s: float = 0.0
    selected_runs: list[str] = field(default_factory=list)  # 5 completed runs of one workload
    base_runs: list[str] = field(default_factory=list)  # its 2 oldest runs
    cand_runs: list[str] = field(default_factory=list)  # its 2 newest runs
    traced_runs: list[str] = field(default_factory=list)  # runs with trace figures, two machines
    sweep_pair: tuple[str, str] | None = None  # two sweeps over the same parameters, two machines
    serve_runs: list[str] = field(default_factory=list)
    energy_runs: list[str] = field(default_factory=list)
    sweep_ids: list[str] = field(default_factory=list)
    history: dict[str, str] = field(default_factory=dict)  # name, spec_hash, hardware_id of a long series


def machine_fingerprints() -> dict[str, dict]:
    from perfbench.hardware.detect import hardware_id

    out = {}
    for name, fp in MACHINES.items():
        fp = {**fp, "gpu_count": len(fp["gpus"]), "hostname": f"{name}-node", "python_version": "3.11.9"}
        fp["hardware_id"] = hardware_id(fp)
        out[name] = fp
    return out


def make_series() -> list[Series]:
    """Every (template, machine, dtype) combination, validated through parse_spec."""
    from perfbench.spec import parse_spec

    out = []
    for name, base, machines, dtypes in TEMPLATES:
        for m in machines:
            for dt in dtypes:
                data = {"name": name, **base, "dtype": dt, "seed": 0}
                if base["phase"] != "serve":
                    data["measure"] = _MEASURE
                spec = parse_spec(data, name, check_device=False)
                out.append(Series(name, spec.normalised(), spec.spec_hash(), m, gated=False))
    for s in out[::3]:  # a third of the series are measured by the CI gate on main
        s.gated = True
    return out


def _run_id(rng: random.Random, when: datetime) -> str:
    return when.strftime("%Y%m%d-%H%M%S-") + f"{rng.getrandbits(24):06x}"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


def _samples(rng: random.Random, median: float, n: int, noisy: bool) -> list[float]:
    sd = median * (0.15 if noisy else rng.uniform(0.005, 0.04))
    return [round(max(median * 0.5, rng.gauss(median, sd)), 9) for _ in range(n)]


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _trace_figures(rng: random.Random, gpu: bool, step_us: float) -> dict:
    kernels = rng.randint(80, 900)
    busy = step_us * rng.uniform(0.2, 0.95) if gpu else None
    util = busy / step_us if gpu else None
    return {"tklqt_us": rng.uniform(3, 40) * kernels if gpu else None, "launch_call_us": rng.uniform(2, 9) if gpu else None,
            "queue_us": rng.uniform(1, 30) if gpu else None, "kernels": float(kernels), "launches": float(kernels),
            "akd_us": rng.uniform(2, 60) if gpu else None, "gpu_busy_us": busy, "gpu_span_us": step_us if gpu else None,
            "gpu_util": util, "idle_host_wait_us": step_us * rng.uniform(0, 0.5) if gpu else None,
            "steps": rng.randint(1, 5), "orphans": 0, "negative_clamped": 0,
            "dropped": {"bad_ts": 0, "bad_dur": 0, "negative_dur": 0, "bad_correlation": 0,
                        "ambiguous_correlation": 0, "negative_gap": 0},
            "graph_launches": float(rng.randint(0, 3)), "bound": ("cpu" if util is not None and util < 0.5 else "gpu") if gpu else None,
            "has_gpu": gpu, "note": "" if gpu else "no GPU activity in the trace"}


def bench_point(rng: random.Random, s: Series, bs: int, seq: int, nt: int, drift: float,
                traced: bool, energy: bool) -> dict:
    """A plausible measured (non-serving) point."""
    size = MODEL_SIZE.get(str(s.spec["model"]), 1.0)
    tokens = bs * (seq if s.spec["phase"] == "prefill" else max(nt, 1))
    median = drift * (2e-4 + 2e-9 * size * tokens * 1e3) / SPEED[s.machine] * rng.uniform(0.95, 1.05)
    n = rng.randint(10, 30)
    noisy = rng.random() < 0.08
    xs = _samples(rng, median, n, noisy)
    mean = statistics.fmean(xs)
    sd = statistics.pstdev(xs)
    p: dict[str, Any] = {
        "batch_size": bs, "seq_len": seq, "new_tokens": nt, "status": "ok",
        "latency_median_s": statistics.median(xs), "latency_p10_s": _quantile(xs, 0.1),
        "latency_p90_s": _quantile(xs, 0.9), "latency_mean_s": mean, "latency_stdev_s": sd,
        "latency_cv": sd / mean, "latency_min_s": min(xs), "latency_max_s": max(xs), "n_samples": n,
        "samples_s": xs, "warmup_s": median * 2, "tokens_per_step": tokens,
        "tokens_per_s": tokens / statistics.median(xs), "tokens_source": "requested",
        "peak_memory_bytes": int(size * 2e9 + tokens * 4e5),
        "memory_kind": "cuda_max_allocated" if s.machine in GPUS else "peak_rss",
    }
    if s.spec["phase"] == "generate":
        pp, tg = median * 0.3, median * 0.7
        p.update(prompt_tokens=bs * seq, pp_median_s=pp, tg_median_s=tg, pp_tokens_per_s=bs * seq / pp,
                 tg_tokens_per_s=bs * nt / tg)
        if s.spec["backend"]["name"] == "llama-cpp":
            p.update(engine_pp_tokens_per_s=bs * seq / pp * 1.02, engine_tg_tokens_per_s=bs * nt / tg * 1.01,
                     engine_timings={"t_p_eval_ms": pp * 1e3, "t_eval_ms": tg * 1e3, "n_p_eval": seq, "n_eval": nt})
        if s.spec["backend"]["name"] == "hf-pipeline":
            p.update(overhead_ratio=rng.uniform(1.02, 1.4), reference_median_s=median / 1.2)
    if s.spec["phase"] == "decode":
        p.update(context_len=seq, kv_cache="static")
    if energy:
        watts, idle = POWER[s.machine]
        w = watts * rng.uniform(0.5, 1.0)
        p.update(energy_j=w * median * n, power_avg_w=w, energy_per_token_j=w * median / tokens, idle_power_w=idle,
                 energy_method=ENERGY_METHOD[s.machine], energy_resolution_j=0.001)
    if traced:
        p.update(trace_path=f"traces/{s.name}-b{bs}.json.gz", trace_figures=_trace_figures(rng, s.machine in GPUS, median * 1e6),
                 traced_span_us=median * 1.1e6, timed_median_us=median * 1e6, profiler_overhead_ratio=rng.uniform(1.0, 1.2))
    return p


def serve_point(rng: random.Random, s: Series, level: str, conc: int, rate: float | None, drift: float) -> dict:
    """A plausible serving load point (closed loop `c8`, or open loop `r4`)."""
    speed = SPEED[s.machine] if s.machine in GPUS else 0.05 * SPEED[s.machine] / 0.02
    load = (rate or conc) / max(speed * 40, 0.1)
    ttft = drift * 0.05 * (1 + load) / speed ** 0.5
    tpot = drift * 0.012 * (1 + 0.3 * load) / speed ** 0.5
    n_req = 32 if rate is None else 64
    failed = rng.randint(0, 2) if load > 2 else 0
    rps = min(rate or 1e9, conc / (ttft + 63 * tpot)) * rng.uniform(0.95, 1.0)
    def pct(x: float) -> tuple[float, float, float]:
        return x, x * rng.uniform(1.2, 1.6), x * rng.uniform(1.8, 3.0)
    t50, t90, t99 = pct(ttft)
    o50, o90, o99 = pct(tpot)
    e50, e90, e99 = pct(ttft + 63 * tpot)
    return {"batch_size": conc, "seq_len": 0, "new_tokens": 64, "status": "ok", "load_point": level,
            "concurrency": conc, "target_rate_rps": rate, "achieved_rate_rps": (rate or rps) * rng.uniform(0.97, 1.0),
            "n_requests": n_req, "n_failed": failed, "ttft_p50_s": t50, "ttft_p90_s": t90, "ttft_p99_s": t99,
            "tpot_p50_s": o50, "tpot_p90_s": o90, "tpot_p99_s": o99, "itl_p50_s": o50 * 0.98, "itl_p90_s": o90,
            "itl_p99_s": o99 * 1.1, "e2e_p50_s": e50, "e2e_p90_s": e90, "e2e_p99_s": e99, "requests_per_s": rps,
            "output_tokens_per_s": rps * 63.5, "goodput_rps": rps * (1.0 if ttft < 0.5 else rng.uniform(0.2, 0.9)),
            "send_lag_p99_s": rng.uniform(1e-4, 3e-3), "client_cpu_share": rng.uniform(0.02, 0.3),
            "point_valid": True, "input_tokens_mean": 96.0, "output_tokens_mean": 63.5, "token_source": "server-usage",
            "latency_median_s": e50, "n_samples": n_req, "samples_s": []}


def point_plan(rng: random.Random, s: Series, n: int) -> list[tuple[int, int, int, str]]:
    """n distinct (batch, seq_len, new_tokens, load_point) keys for a run of series `s`."""
    if s.spec["phase"] == "serve":
        levels = [(f"c{c}", c, None) for c in (1, 2, 4, 8, 16, 32, 64, 128)]
        levels += [(f"r{r:g}/c64", 64, r) for r in (0.5, 1, 2, 4, 8, 16, 32, 64)]
        return [(c, 0, 64, lvl) for lvl, c, _ in levels[:n]]
    nt = int(s.spec.get("new_tokens") or 0)
    keys = [(b, q, nt, "") for q in SEQ_LENS for b in BATCHES]
    return keys[:n]


@dataclass
class RunRow:
    run_id: str
    series: Series
    status: str
    when: datetime
    n_points: int
    sweep_id: str | None = None
    subject: dict | None = None
    spec: dict | None = None


def plan_runs(rng: random.Random, series: list[Series], n_runs: int, n_points: int) -> list[RunRow]:
    """Runs over the period, newest last: statuses, subjects (commits on main for gated series) and
    how many points each holds (summing to n_points)."""
    weights = [3 if s.gated else 1 for s in series]
    rows = []
    per = [max(1, n_points // max(n_runs, 1))] * n_runs
    for i in range(n_points - sum(per)):
        per[i % n_runs] += 1
    for i in range(n_runs):
        when = START + timedelta(seconds=SPAN_DAYS * 86400 * i / max(n_runs, 1) + rng.uniform(0, 3000))
        s = rng.choices(series, weights)[0]
        roll = rng.random()
        status = "failed" if roll < 0.05 else "running" if roll < 0.07 else "interrupted" if roll < 0.08 else "completed"
        if i >= n_runs - 3:
            status = "running"  # the newest runs are still being measured
        rows.append(RunRow(_run_id(rng, when), s, status, when, per[i]))
    # move points so a run holds no more than its plan allows; the rest go to runs with room
    _rebalance(rows)
    commits = [f"{rng.getrandbits(160):040x}" for _ in range(400)]
    k = 0
    for r in rows:
        if r.series.gated and r.status == "completed":
            k += 1
            r.subject = {"commit": commits[(k // 3) % len(commits)], "branch": "main", "role": "candidate",
                         "ci_run_id": str(100000 + k), "ci": "github"}
        elif rng.random() < 0.15:
            r.subject = {"commit": rng.choice(commits), "branch": rng.choice(["feature/kv-cache", "fix/rope"]),
                         "role": "candidate"}
    return rows


def _capacity(s: Series) -> int:
    return 16 if s.spec["phase"] == "serve" else len(BATCHES) * len(SEQ_LENS)


def _rebalance(rows: list[RunRow]) -> None:
    spill = 0
    for r in rows:
        cap = _capacity(r.series)
        if r.n_points > cap:
            spill += r.n_points - cap
            r.n_points = cap
    for r in rows:
        if not spill:
            break
        room = _capacity(r.series) - r.n_points
        take = min(room, spill)
        r.n_points += take
        spill -= take


def run_points(rng: random.Random, r: RunRow) -> list[dict]:
    s = r.series
    drift = 1.0 + 0.1 * math.sin(r.when.timestamp() / 86400 / 20) + (0.15 if r.when.month >= 9 and s.gated else 0)
    traced = s.machine in GPUS and s.spec["backend"]["name"] == "torch" and rng.random() < 0.25
    energy = rng.random() < 0.4
    n = r.n_points
    out = []
    for j, (bs, seq, nt, level) in enumerate(point_plan(rng, s, n)):
        if level:
            rate = float(level[1:].split("/")[0]) if level.startswith("r") else None
            p = serve_point(rng, s, level, bs, rate, drift)
        else:
            p = bench_point(rng, s, bs, seq, nt, drift, traced and j % 4 == 0, energy)
        if (r.status == "failed" and j >= n // 2) or (not level and bs >= 256 and s.machine in CPUS):
            p = {"batch_size": bs, "seq_len": seq, "new_tokens": nt, "load_point": level, "status": "failed",
                 "error": "CUDA out of memory. Tried to allocate 2.00 GiB" if s.machine in GPUS else
                 "MemoryError: cannot allocate the KV cache", "traceback": "  File \"perfbench/runner.py\", line 300"}
        out.append(p)
    return out


def _requests_for(rng: random.Random, point: dict, n: int) -> list[tuple]:
    rows = []
    t = 0.0
    for i in range(n):
        ttft = max(0.001, rng.gauss(point["ttft_p50_s"], point["ttft_p50_s"] * 0.3))
        tpot = max(1e-4, rng.gauss(point["tpot_p50_s"], point["tpot_p50_s"] * 0.2))
        times = [round(ttft + k * tpot, 6) for k in range(16)]
        ok = rng.random() > 0.02
        rows.append((i, "measured", f"p{i % 20}", t, t, t + 1e-4, t + ttft if ok else None, t + times[-1] + tpot,
                     json.dumps(times if ok else []), 96, 64 if ok else 0, "server-usage", "server-usage",
                     "ok" if ok else "failed", None if ok else "HTTP 503", 200 if ok else 503, None))
        t += 1.0 / max(point.get("target_rate_rps") or 4.0, 0.1)
    return rows


_RUN_COLS = ("run_id", "name", "status", "reason", "spec_json", "spec_hash", "spec_path", "hardware_id",
             "fingerprint_json", "versions_json", "commit_sha", "device", "backend_info_json", "engine_json",
             "sweep_id", "host", "pid", "proc_start", "created_at", "ended_at", "subject_json")
_VERSIONS = {"perfbench": "0.4.0", "python": "3.11.9", "torch": "2.5.1", "transformers": "4.46.2"}


def run_row(r: RunRow, fp: dict) -> tuple:
    s = r.series
    spec = r.spec or s.spec
    backend = spec["backend"]["name"]
    engine = {"name": backend, "version": {"vllm": "0.6.4", "llama-cpp": "b4242", "openai-http": "server"}.get(backend, "2.5.1")}
    ended = None if r.status == "running" else _iso(r.when + timedelta(minutes=3))
    reason = {"failed": "CUDA error: an illegal memory access was encountered",
              "interrupted": "process ended without closing the run (killed?)"}.get(r.status)
    # running runs: on another host (never declared gone), or on this one with a pid long dead
    host = "gpu-node-7" if r.status != "running" or r.run_id[-1] in "02468ace" else socket.gethostname()
    return (r.run_id, s.name, r.status, reason, json.dumps(spec, sort_keys=True), s.spec_hash,
            f"workloads/{s.name}.yaml", fp["hardware_id"], json.dumps(fp, sort_keys=True),
            json.dumps(_VERSIONS, sort_keys=True), "9f2c1e0" + r.run_id[-6:], "cuda:0" if s.machine in GPUS else "cpu",
            json.dumps({"backend": backend}), json.dumps(engine), r.sweep_id, host, 4_000_000 + (hash(r.run_id) % 100000),
            None, _iso(r.when), ended, json.dumps(r.subject, sort_keys=True) if r.subject else None)


# -- sweeps ------------------------------------------------------------------------------------------

def sweep_specs(n: int, trials: int) -> list[dict]:
    """n sweep files (mappings), grid and random, 2-4 parameters, each holding `trials` trials."""
    base_gpu = {k: v for k, v in TEMPLATES[0][1].items()} | {"name": "b", "dtype": "bfloat16", "measure": _MEASURE}
    base_cpp = TEMPLATES[6][1] | {"name": "c", "dtype": "float32", "measure": _MEASURE}
    shapes = [
        ("grid", base_gpu, {"batch_size": {"values": list(BATCHES)}, "seq_len": {"values": list(range(64, 64 * 51, 64))}}),
        ("grid", base_gpu, {"batch_size": {"values": list(BATCHES[:8])}, "backend.compile":
                            {"values": ["none", "default", "reduce-overhead", "max-autotune"]},
                            "seq_len": {"values": [64, 128, 256, 512, 768, 1024, 1536, 2048]}, "dtype": {"values": ["bfloat16", "float16"]}}),
        ("random", base_cpp, {"backend.n_threads": {"min": 1, "max": 256, "distribution": "int_uniform"},
                              "backend.n_batch": {"values": [32, 64, 128, 256, 512]}}),
        ("random", base_gpu, {"batch_size": {"values": list(BATCHES)}, "seq_len": {"min": 64, "max": 4096,
                              "distribution": "int_log_uniform"}, "backend.compile": {"values": ["none", "default"]}}),
    ]
    out = []
    for i in range(n):
        method, base, params = shapes[i % len(shapes)]
        metric = {"name": "tokens_per_s", "goal": "maximize"} if i % 3 else {"name": "latency_median_s", "goal": "minimize"}
        out.append({"name": f"sweep-{i:02d}-{'-'.join(p.split('.')[-1] for p in params)[:40]}", "workload": base,
                    "method": method, "metric": metric, "parameters": params, "budget": {"trials": trials},
                    "constraints": {"max_peak_memory_bytes": 7.0e10}, "seed": i})
    return out


def trial_params(rng: random.Random, sweep: Any, n: int) -> list[dict]:
    """n distinct parameter assignments: grid points in order, or random samples."""
    if sweep.spec.method == "grid":
        return sweep.grid_points()[:n]
    seen, out = set(), []
    for _ in range(n * 50):  # a small space runs out of distinct assignments: stop there
        if len(out) >= n:
            break
        p = {}
        for name, spec in sweep.params.items():
            if spec.discrete:
                p[name] = rng.choice(spec.values)
            else:
                p[name] = rng.randint(int(spec.min), int(spec.max)) if spec.is_int else round(rng.uniform(spec.min, spec.max), 4)
        key = sweep.trial_key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# -- building ------------------------------------------------------------------------------------------

def build_store(path: Path, n_runs: int, n_points: int, n_sweeps: int, n_trials: int, seed: int = 0,
                requests_per_point: int = 16) -> Facts:
    """Write the benchmark store at `path` (which must not exist)."""
    from perfbench.store import RESULT_SCHEMA_VERSION, ResultsStore
    from perfbench.schema import POINT_FIELDS, to_columns
    from perfbench.spec import parse_spec
    from perfbench.sweep.db import SweepDB
    from perfbench.sweep.spec import parse_sweep, sweep_from_json

    t0 = time.perf_counter()
    rng = random.Random(seed)
    fps = machine_fingerprints()
    series = make_series()
    sweep_runs_per = min(25, n_trials, max(1, n_runs // (4 * n_sweeps))) if n_sweeps else 0
    n_plain = max(1, n_runs - n_sweeps * sweep_runs_per)
    rows = plan_runs(rng, series, n_plain, max(n_plain, n_points - (n_runs - n_plain)))

    # sweeps: parse, then give each its first runs (one per trial for the first `sweep_runs_per` trials)
    sweeps, sweep_rows, sweep_trials = [], [], []
    for i, data in enumerate(sweep_specs(n_sweeps, n_trials)):
        sw = parse_sweep(data, f"<bench sweep {i}>", check_points=False)
        js = sw.to_json()
        sweep_from_json(json.loads(json.dumps(js)))  # what the store holds must parse back
        machine = ("h100", "a100", "h200", "xeon", "pi5")[i % 5] if "n_threads" not in json.dumps(data["parameters"]) else ("xeon", "pi5")[i % 2]
        fp = fps[machine]
        sid = sw.sweep_id(fp["hardware_id"])
        when = START + timedelta(days=SPAN_DAYS * (i + 0.5) / max(n_sweeps, 1))
        status = "running" if i == n_sweeps - 1 else "interrupted" if i == n_sweeps - 2 else "completed"
        sweeps.append((sid, sw, js, machine, when, status))
        params = trial_params(rng, sw, n_trials)
        run_ids = []
        for k, p in enumerate(params[:sweep_runs_per]):
            ws = parse_spec(sw.workload_for(p), check_device=False)
            spec = ws.normalised()
            t = when + timedelta(minutes=3 * k)
            rr = RunRow(_run_id(rng, t), Series(spec["name"], spec, ws.spec_hash(), machine, False), "completed", t, 1,
                        sweep_id=sid, spec=spec)
            bs = int(p.get("batch_size", spec["batch_sizes"][0]))
            sweep_rows.append((rr, bs))
            run_ids.append(rr.run_id)
        sweep_trials.append((sid, sw, params, run_ids, when))

    with ResultsStore(path) as st:
        db = SweepDB(st)
        db.ensure_schema()
        pcols = [f.column for f in POINT_FIELDS]
        all_runs = rows + [r for r, _ in sweep_rows]
        with st.transaction("bench: runs") as c:
            c.executemany(f"INSERT INTO runs({', '.join(_RUN_COLS)}) VALUES ({', '.join('?' * len(_RUN_COLS))})",
                          [run_row(r, fps[r.series.machine]) for r in all_runs])
        point_rows, serve_pts = [], []
        for r in rows:
            for p in run_points(rng, r):
                point_rows.append(_point_row(r, p, pcols, to_columns, RESULT_SCHEMA_VERSION))
                if p.get("load_point") and p["status"] == "ok":
                    serve_pts.append((r.run_id, p))
        for r, bs in sweep_rows:
            s = r.series
            p = bench_point(rng, s, bs, int(s.spec.get("seq_len") or 128), int(s.spec.get("new_tokens") or 0), 1.0, False, False)
            point_rows.append(_point_row(r, p, pcols, to_columns, RESULT_SCHEMA_VERSION))
        with st.transaction("bench: points") as c:
            c.executemany(f"INSERT INTO points(run_id, schema_version, {', '.join(pcols)}, created_at) "
                          f"VALUES ({', '.join('?' * (len(pcols) + 3))})", point_rows)
        _insert_requests(st, rng, serve_pts, requests_per_point)
        _insert_sweeps(st, rng, sweeps, sweep_trials)
        facts = derive_facts(st)
    facts.build_s = time.perf_counter() - t0
    return facts


def _point_row(r: RunRow, p: dict, pcols: list[str], to_columns: Callable, version: int) -> tuple:
    cols = to_columns(p)
    cols.setdefault("samples_json", "[]")
    if cols["samples_json"] is None:
        cols["samples_json"] = "[]"
    cols["load_point"] = cols.get("load_point") or ""
    created = _iso(r.when + timedelta(seconds=5))
    return (r.run_id, version, *[cols.get(c) for c in pcols], created)


def _insert_requests(st: Any, rng: random.Random, serve_pts: list[tuple[str, dict]], per_point: int) -> int:
    if not serve_pts or per_point <= 0:
        return 0
    ids = {(r["run_id"], r["load_point"]): r["point_id"] for r in
           st.query("SELECT point_id, run_id, load_point FROM points WHERE load_point != ''")}
    cols = ("point_id", "run_id", "idx", "role", "prompt_id", "scheduled_s", "ready_s", "sent_s", "first_token_s",
            "done_s", "token_times_json", "input_tokens", "output_tokens", "input_tokens_source",
            "output_tokens_source", "status", "error", "http_status", "server_timings_json")
    rows = []
    for run_id, p in serve_pts:
        pid = ids[(run_id, p["load_point"])]
        rows += [(pid, run_id, *q) for q in _requests_for(rng, p, per_point)]
    with st.transaction("bench: requests") as c:
        c.executemany(f"INSERT INTO requests({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
    return len(rows)


def _insert_sweeps(st: Any, rng: random.Random, sweeps: list, sweep_trials: list) -> None:
    srows, trows = [], []
    for sid, sw, js, machine, when, status in sweeps:
        fp_id = machine_fingerprints()[machine]["hardware_id"]
        host = "gpu-node-7" if status == "running" else None
        srows.append((sid, sw.name, sw.spec.method, sw.metric, sw.goal, sw.spec_hash(), fp_id, json.dumps(js),
                      f"workloads/sweeps/{sw.name}.yaml", "local", status,
                      "interrupted by Ctrl-C" if status == "interrupted" else None, host, 1234 if host else None,
                      None, _iso(when), _iso(when + timedelta(hours=20))))
    for sid, sw, params, run_ids, when in sweep_trials:
        best = rng.uniform(500, 50000)
        n_running = 3 if any(s[0] == sid and s[5] == "running" for s in sweeps) else 0
        for k, p in enumerate(params):
            roll = rng.random()
            status = "failed" if roll < 0.08 else "infeasible" if roll < 0.12 else "completed"
            if k >= len(params) - n_running:
                status = "pending" if k % 2 else "running"
            size = float(p.get("batch_size", 8)) * float(p.get("seq_len", 128))
            value = best * (0.3 + 0.7 * math.exp(-((math.log(size) - 9) ** 2) / 8)) * rng.uniform(0.9, 1.1)
            metric = (value if sw.goal == "maximize" else 1.0 / value) if status == "completed" else None
            t = when + timedelta(minutes=2 * k)
            done = status in ("completed", "failed", "infeasible")
            trows.append((sid, sw.trial_key(p), k, json.dumps(p), status,
                          run_ids[k % len(run_ids)] if run_ids and status != "pending" else None, metric,
                          int(size * 4e5 + 2e9), {"failed": "CUDA out of memory", "infeasible":
                                                  "peak_memory_bytes 7.2e10 > max 7e10"}.get(status),
                          rng.uniform(20, 90) if done else None, rng.uniform(5, 30) if done else None, 1,
                          json.dumps({"executor_outcome": "ok", "best_batch_size": p.get("batch_size")}) if done else None,
                          _iso(t), _iso(t + timedelta(seconds=80)) if done else None))
    with st.transaction("bench: sweeps") as c:
        c.executemany("INSERT INTO sweeps(sweep_id, name, method, metric_name, metric_goal, spec_hash, hardware_id,"
                      " spec_json, spec_path, executor, status, reason, host, pid, proc_start, created_at, updated_at)"
                      f" VALUES ({', '.join('?' * 17)})", srows)
        c.executemany("INSERT INTO sweep_trials(sweep_id, trial_key, trial_index, params_json, status, run_id, metric,"
                      " peak_memory_bytes, reason, wall_s, measure_s, attempts, result_json, started_at, ended_at)"
                      f" VALUES ({', '.join('?' * 15)})", trows)


def derive_facts(st: Any) -> Facts:
    """Selections for the interactions, read back from the store."""
    f = Facts()
    q = st.query
    f.runs = q("SELECT COUNT(*) FROM runs")[0][0]
    f.points = q("SELECT COUNT(*) FROM points")[0][0]
    f.sweeps = q("SELECT COUNT(*) FROM sweeps")[0][0]
    f.trials = q("SELECT COUNT(*) FROM sweep_trials")[0][0]
    series = q("SELECT name, spec_hash, hardware_id, COUNT(*) AS n FROM runs WHERE status='completed' AND sweep_id IS NULL"
               " AND subject_json LIKE '%\"branch\": \"main\"%' AND json_extract(spec_json, '$.backend.name') = 'torch'"
               " GROUP BY 1, 2, 3 ORDER BY n DESC, 1 LIMIT 1")
    if series:
        s = series[0]
        f.history = {"name": s["name"], "spec_hash": s["spec_hash"], "hardware_id": s["hardware_id"]}
        ids = [r[0] for r in q("SELECT r.run_id FROM runs r WHERE r.spec_hash=? AND r.hardware_id=? AND r.status='completed'"
                                " AND EXISTS (SELECT 1 FROM points p WHERE p.run_id=r.run_id AND p.status='ok')"
                                " ORDER BY r.created_at DESC", (s["spec_hash"], s["hardware_id"]))]
        f.selected_runs = ids[:5]
        if len(ids) >= 4:
            f.cand_runs, f.base_runs = ids[:2], ids[-2:]
    f.traced_runs = [r[0] for r in q("SELECT MAX(p.run_id) FROM points p JOIN runs r USING (run_id)"
                                     " WHERE p.trace_figures_json IS NOT NULL GROUP BY r.hardware_id ORDER BY 1 DESC LIMIT 2")]
    f.serve_runs = [r[0] for r in q("SELECT DISTINCT run_id FROM points WHERE load_point != '' ORDER BY run_id DESC LIMIT 3")]
    f.energy_runs = [r[0] for r in q("SELECT DISTINCT run_id FROM points WHERE energy_j IS NOT NULL ORDER BY run_id DESC LIMIT 3")]
    sweeps = q("SELECT sweep_id, hardware_id, json_extract(spec_json, '$.parameters') AS params FROM sweeps"
               " ORDER BY created_at DESC")
    f.sweep_ids = [r[0] for r in sweeps]
    f.sweep_pair = next(((a[0], b[0]) for a in sweeps for b in sweeps
                         if a[2] == b[2] and a[1] != b[1]), None)
    f.requests = q("SELECT COUNT(*) FROM requests")[0][0]
    return f


# ==================================================================================================
# Driving the app as the browser does
# ==================================================================================================

def id_key(cid: Any) -> str:
    """A component id as Dash's renderer writes it in a prop id: dict ids as sorted compact JSON."""
    return json.dumps(cid, sort_keys=True, separators=(",", ":")) if isinstance(cid, dict) else str(cid)


@dataclass
class Dep:
    """A server callback from /_dash-dependencies."""

    output: str
    outputs: list[tuple[str, str]]
    inputs: list[tuple[str, str]]
    state: list[tuple[str, str]]
    prevent_initial: bool
    label: str

    def triggered_by(self, changed: set[tuple[str, str]]) -> bool:
        return any(i in changed for i in self.inputs)


def _split_output(out: str) -> list[tuple[str, str]]:
    parts = out[2:-2].split("...") if out.startswith("..") else [out]
    res = []
    for p in parts:
        cid, _, prop = p.rpartition(".") if not p.startswith("{") else (p[:p.rindex("}") + 1], ".", p[p.rindex("}") + 2:])
        res.append((cid, prop))
    return res


def load_deps(client: Any) -> list[Dep]:
    deps = []
    resp = client.get("/_dash-dependencies")
    for d in resp.get_json():
        if d.get("clientside_function"):
            continue
        outs = _split_output(d["output"])
        ins = [(id_key(i["id"]), i["property"]) for i in d["inputs"]]
        st = [(id_key(i["id"]), i["property"]) for i in d.get("state", [])]
        label = outs[0][0] + "." + outs[0][1] + (f" (+{len(outs) - 1})" if len(outs) > 1 else "")
        deps.append(Dep(d["output"], outs, ins, st, bool(d.get("prevent_initial_call")), label))
    return deps


class Layout:
    """The props of every component with an id in the current layout, as the renderer holds them."""

    def __init__(self) -> None:
        self.props: dict[str, dict] = {}

    def add(self, tree: Any) -> None:
        for node in _components(tree):
            pid = node["props"].get("id")
            if pid is not None:
                self.props[id_key(pid)] = node["props"]

    def drop_under(self, key: str) -> None:
        """Forget what was inside a component whose children are replaced."""
        old = self.props.get(key, {}).get("children")
        for node in _components(old):
            pid = node["props"].get("id")
            if pid is not None:
                self.props.pop(id_key(pid), None)

    def has(self, key: str) -> bool:
        return key in self.props

    def get(self, key: str, prop: str) -> tuple[bool, Any]:
        props = self.props.get(key, {})
        return prop in props, props.get(prop)

    def set(self, key: str, prop: str, value: Any) -> None:
        if prop == "children":
            self.drop_under(key)
        self.props.setdefault(key, {})[prop] = value
        if prop == "children" or _is_component(value):
            self.add(value)


def _texts(tree: Any) -> list[str]:
    """The plain strings of a component tree, in order."""
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, list):
        return [t for x in tree for t in _texts(x)]
    if _is_component(tree):
        return _texts(tree["props"].get("children"))
    return []


def _is_component(x: Any) -> bool:
    return isinstance(x, dict) and "props" in x and "type" in x


def _components(tree: Any) -> Iterable[dict]:
    stack = [tree]
    while stack:
        x = stack.pop()
        if _is_component(x):
            yield x
            stack.extend(v for v in x["props"].values() if isinstance(v, (dict, list)))
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(v for v in x.values() if isinstance(v, (dict, list)))


@dataclass
class Call:
    label: str
    ms: float
    status: int
    error: str | None = None


class Browser:
    """A minimal dash-renderer: fires callbacks as the browser would and times each POST."""

    def __init__(self, app: Any):
        self.app = app
        app.server.config["PROPAGATE_EXCEPTIONS"] = True  # a failing callback raises: we report its error
        self.client = app.server.test_client()
        self.layout = Layout()
        t0 = time.perf_counter()
        resp = self.client.get("/_dash-layout")
        self.layout_ms = (time.perf_counter() - t0) * 1e3
        self.layout.add(resp.get_json())
        self.deps = load_deps(self.client)
        self.calls: list[Call] = []

    def router(self) -> Dep:
        return next(d for d in self.deps if d.outputs[0] == ("_pages_content", "children"))

    def post(self, dep: Dep, changed: list[str]) -> set[tuple[str, str]]:
        """POST one callback as the renderer does; apply its response; return the props it set."""
        def entry(cid: str, prop: str) -> dict:
            present, value = self.layout.get(cid, prop)
            e = {"id": json.loads(cid) if cid.startswith("{") else cid, "property": prop}
            if present:
                e["value"] = value
            return e
        outs = [{"id": json.loads(c) if c.startswith("{") else c, "property": p} for c, p in dep.outputs]
        body = {"output": dep.output, "outputs": outs if len(outs) > 1 or dep.output.startswith("..") else outs[0],
                "inputs": [entry(*i) for i in dep.inputs], "state": [entry(*s) for s in dep.state],
                "changedPropIds": changed}
        t0 = time.perf_counter()
        try:
            resp = self.client.post("/_dash-update-component", json=body)
        except Exception as exc:  # noqa: BLE001 - PROPAGATE_EXCEPTIONS: the callback raised
            ms = (time.perf_counter() - t0) * 1e3
            self.calls.append(Call(dep.label, ms, 500, _exception_text(exc)))
            return set()
        ms = (time.perf_counter() - t0) * 1e3
        if resp.status_code == 204:
            self.calls.append(Call(dep.label, ms, 204))
            return set()
        if resp.status_code != 200:
            self.calls.append(Call(dep.label, ms, resp.status_code, _error_text(resp)))
            return set()
        self.calls.append(Call(dep.label, ms, 200))
        data = resp.get_json() or {}
        updated = set()
        for cid, props in (data.get("response") or {}).items():
            for prop, value in props.items():
                key = cid if isinstance(cid, str) else id_key(cid)
                self.layout.set(key, prop, value)
                updated.add((key, prop))
        return updated

    def _ready(self, dep: Dep) -> bool:
        return all(self.layout.has(c) for c, _ in dep.inputs) and any(self.layout.has(c) for c, _ in dep.outputs)

    def run_chain(self, changed: set[tuple[str, str]], initial: Iterable[Dep] = ()) -> None:
        """Fire `initial` plus every callback `changed` triggers, each after the callbacks that feed
        its inputs, applying outputs and following what they change (as the renderer does)."""
        pending: list[tuple[Dep, set]] = [(d, set()) for d in initial if self._ready(d)]
        fired: dict[str, int] = defaultdict(int)
        self._queue(pending, changed, fired)
        while pending:
            dep, trig = self._next(pending)
            fired[dep.output] += 1
            changed_ids = [f"{c}.{p}" for c, p in (trig or dep.inputs)]
            now = self.post(dep, changed_ids)  # every prop in a response triggers its listeners
            for o in now:  # new components: their initial callbacks
                if o[1] == "children":
                    new = {id_key(n["props"]["id"]) for n in _components(self.layout.get(*o)[1])
                           if n["props"].get("id") is not None}
                    pending.extend((d, set()) for d in self.initial_deps(new) if fired[d.output] == 0
                                   and all(d is not p for p, _ in pending))
            self._queue(pending, now, fired)

    def _queue(self, pending: list, changed: set, fired: dict) -> None:
        for d in self.deps:
            hit = {i for i in d.inputs if i in changed}
            if hit and self._ready(d) and fired[d.output] < 3:
                for p, trig in pending:
                    if p is d:
                        trig |= hit
                        break
                else:
                    pending.append((d, hit))

    @staticmethod
    def _next(pending: list) -> tuple[Dep, set]:
        outs = {o for d, _ in pending for o in d.outputs}
        for k, (d, trig) in enumerate(pending):
            if not any(i in outs and i not in d.outputs for i in d.inputs):
                return pending.pop(k)
        return pending.pop(0)

    def initial_deps(self, within: set[str] | None = None) -> list[Dep]:
        """Callbacks the renderer fires when a layout (or the part of it holding ids `within`) appears."""
        return [d for d in self.deps if not d.prevent_initial and self._ready(d)
                and d.outputs[0] != ("_pages_content", "children")
                and (within is None or any(c in within for c, _ in d.inputs + d.outputs))]

    def page_ids(self) -> set[str]:
        tree = self.layout.get("_pages_content", "children")[1]
        return {id_key(n["props"]["id"]) for n in _components(tree) if n["props"].get("id") is not None}

    def open_page(self, path: str, query: str = "") -> Call:
        """Navigate: the router callback renders the page (timed), then the page's initial callbacks."""
        self.layout.set("_pages_location", "pathname", path)
        self.layout.set("_pages_location", "search", query)
        router = self.router()
        self.calls = []
        self.post(router, ["_pages_location.pathname", "_pages_location.search"])
        render = self.calls[0]
        self.run_chain(set(), self.initial_deps(self.page_ids()))
        return render

    def page_state(self) -> tuple[str, str] | None:
        """("pb-error" | "pb-empty", its text) when the page shows an error panel or an empty state."""
        root = self.layout.get("_pages_content", "children")[1]
        kids = root["props"].get("children") if _is_component(root) else None
        top = [root] + [k for k in (kids if isinstance(kids, list) else [kids]) if _is_component(k)]
        for node in top:  # the page itself, or one of its sections, not a panel deeper down
            cls = node["props"].get("className") or ""
            for kind in ("pb-error", "pb-empty"):
                if kind in cls.split():
                    return kind, " ".join(_texts(node))[:200]
        return None

    def interact(self, changes: dict[tuple[str, str], Any]) -> None:
        """The user changes props (a selection, a filter): fire what they trigger."""
        for (cid, prop), value in changes.items():
            self.layout.set(cid, prop, value)
        self.calls = []
        self.run_chain(set(changes))


def _exception_text(exc: BaseException) -> str:
    """`ValueError: message (at perfbench/dashboard/pages/x.py:123)`: the innermost frame of ours."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "perfbench" in f.filename]
    where = f" (at {Path(frames[-1].filename).as_posix().split('perfbench/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:240] if msg else ''}{where}"


def _error_text(resp: Any) -> str:
    text = resp.get_data(as_text=True)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "(empty response)"
    # Flask/werkzeug debug pages and tracebacks: keep the exception line, not the dump
    exc = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (exc[-1] if exc else lines[-1]).strip()[:300]


# ==================================================================================================
# Pages and their interactions
# ==================================================================================================

def _figure_click(b: Browser, graph: str) -> dict | None:
    """clickData for the first point with customdata in the figure `graph` shows (as plotly sends)."""
    fig = b.layout.get(graph, "figure")[1] or {}
    for n, trace in enumerate(fig.get("data") or []):
        cd = _array(trace.get("customdata"))
        if cd:
            x, y = _array(trace.get("x")), _array(trace.get("y"))
            return {"points": [{"curveNumber": n, "pointNumber": 0, "pointIndex": 0, "customdata": cd[0],
                                "x": x[0] if x else None, "y": y[0] if y else None}]}
    return None


def _array(v: Any) -> list:
    """A plotly array as a list: plain JSON, or a typed array ({dtype, bdata, shape}) of plotly >= 6."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        if v.get("shape"):
            arr = arr.reshape([int(x) for x in str(v["shape"]).split(",")])
        return arr.tolist()
    return list(v) if isinstance(v, (list, tuple)) else []


def _other_option(b: Browser, cid: str) -> Any:
    """A value of dropdown/radio `cid` other than its current one."""
    current = b.layout.get(cid, "value")[1]
    for o in b.layout.get(cid, "options")[1] or []:
        v = o.get("value") if isinstance(o, dict) else o
        if v != current and v not in (current or [] if isinstance(current, list) else []):
            return v
    return None


def _slider_mid(b: Browser, cid: str) -> float | None:
    lo, hi = b.layout.get(cid, "min")[1], b.layout.get(cid, "max")[1]
    return None if lo is None or hi is None else (lo + hi) / 2


def page_urls(f: Facts) -> dict[str, list[tuple[str, str]]]:
    """Per page: (label, query) URLs to open: the bare page, then one with a selection (each page's
    URL parameters, from its docstring)."""
    sel = ",".join(f.selected_runs)
    hist = f.history
    return {
        "runs": [("load", ""), ("load ?runs=5", f"?runs={sel}")],
        "compare": [("load", ""), ("load base/cand", f"?base={','.join(f.base_runs)}&cand={','.join(f.cand_runs)}")],
        "roofline": [("load", ""), ("load ?runs=5", f"?runs={sel}")],
        "trace": [("load", ""), ("load ?runs=traced", f"?runs={','.join(f.traced_runs)}")],
        "sweeps": [("load", ""), ("load ?sweep&vs", f"?sweep={f.sweep_pair[0]}&vs={f.sweep_pair[1]}"
                                  if f.sweep_pair else "")],
        "history": [("load", ""), ("load ?series", f"?name={hist.get('name', '')}&spec={hist.get('spec_hash', '')}"
                                                   f"&hardware={hist.get('hardware_id', '')}&branch=main")],
        "serving": [("load", ""), ("load ?runs", f"?runs={','.join(f.serve_runs)}")],
        "energy": [("load", ""), ("load ?runs", f"?runs={','.join(f.energy_runs)}")],
    }


Changes = Callable[[Browser], dict]


def interactions(f: Facts) -> dict[str, list[tuple[str, Changes]]]:
    """Per page: (label, changes) a user makes after the page's selection URL is loaded; the values
    come from the store's facts and the rendered layout. One whose ids or values are missing is
    skipped (and listed as skipped)."""
    return {
        "runs": [
            ("select 5 runs", lambda b: {("runs-table", "selected_row_ids"): f.selected_runs[::-1]}),
            ("filter backend=vllm", lambda b: {("runs-f-backend", "value"): ["vllm"]}),
            ("page 3", lambda b: {("runs-table", "page_current"): 3}),
            ("sort by started", lambda b: {("runs-table", "sort_by"): [{"column_id": "created_at", "direction": "asc"}]}),
            ("filter since a date", lambda b: {("runs-f-since", "value"): "2026-06-01"}),
        ],
        "compare": [
            ("metric tokens/s", lambda b: {("compare-metric", "value"): "tokens_per_s"}),
            ("paired", lambda b: {("compare-paired", "value"): ["paired"]}),
            ("click a row", lambda b: {("compare-table", "active_cell"): {"row": 0, "column": 0, "column_id":
                                       (b.layout.get("compare-table", "columns")[1] or [{}])[0].get("id")}}
             if b.layout.get("compare-table", "data")[1] else {}),
            ("type in base", lambda b: {("compare-base", "search_value"): "llama"}),
        ],
        "roofline": [
            ("ceilings datasheet", lambda b: {("roofline-ceilings", "value"): "datasheet"}),
            ("per operator", lambda b: {("roofline-ops", "value"): ["on"]}),
            ("add a run", lambda b: {("roofline-runs", "value"): (b.layout.get("roofline-runs", "value")[1] or [])
                                     + [x for x in [_other_option(b, "roofline-runs")] if x]}),
        ],
        "trace": [
            ("side by side", lambda b: {("trace-split", "value"): "hardware"}),
            ("click a point", lambda b: {("trace-sweep", "clickData"): _figure_click(b, "trace-sweep")}),
        ],
        "sweeps": [
            ("pick a sweep", lambda b: {("sweeps-pick", "value"): f.sweep_ids[2] if len(f.sweep_ids) > 2 else None}),
            ("contour", lambda b: {("sweeps-view", "value"): "contour"}),
            ("swap x/y", lambda b: {("sweeps-x", "value"): b.layout.get("sweeps-y", "value")[1],
                                    ("sweeps-y", "value"): b.layout.get("sweeps-x", "value")[1]}),
            ("vs another", lambda b: {("sweeps-vs", "value"): f.sweep_pair[1] if f.sweep_pair else None}),
        ],
        "history": [
            ("metric tokens/s", lambda b: {("history-metric", "value"): "tokens_per_s"}),
            ("other point", lambda b: {("history-point", "value"): _other_option(b, "history-point")}),
            ("click a run", lambda b: {("history-series", "clickData"): _figure_click(b, "history-series")}),
            ("other benchmark", lambda b: {("history-name", "value"): _other_option(b, "history-name")}),
        ],
        "serving": [
            ("metric tpot", lambda b: {("serving-metric", "value"): "tpot"}),
            ("load axis rate", lambda b: {("serving-load", "value"): "rate"}),
            ("all serve runs", lambda b: {("serving-runs", "value"): []}),
        ],
        "energy": [
            ("colour by backend", lambda b: {("energy-colour", "value"): "backend"}),
            ("deadline slider", lambda b: {("energy-deadline", "value"): _slider_mid(b, "energy-deadline")}),
            ("budget slider", lambda b: {("energy-budget", "value"): _slider_mid(b, "energy-budget")}),
            ("all runs", lambda b: {("energy-runs", "value"): []}),
        ],
    }


def page_paths(app: Any) -> dict[str, str]:
    import dash

    return {p["module"].rsplit(".", 1)[-1]: p["path"] for p in dash.page_registry.values()}


@dataclass
class Timing:
    page: str
    what: str  # "render", "callback", "interaction"
    label: str
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def target(self) -> float:
        return RENDER_TARGET_MS if self.what == "render" else CALLBACK_TARGET_MS

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    @property
    def worst(self) -> float:
        return max(self.ms) if self.ms else float("nan")

    @property
    def ok(self) -> bool:
        return not self.errors and self.median < self.target


class Recorder:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], Timing] = {}
        self.skipped: dict[str, list[str]] = defaultdict(list)
        self.notes: dict[str, list[str]] = defaultdict(list)

    def note(self, page: str, text: str) -> None:
        if text not in self.notes[page]:
            self.notes[page].append(text)

    def skip(self, page: str, label: str) -> None:
        if label not in self.skipped[page]:
            self.skipped[page].append(label)

    def add(self, page: str, what: str, label: str, call: Call) -> None:
        t = self.rows.setdefault((page, what, label), Timing(page, what, label))
        t.ms.append(call.ms)
        if call.error:
            t.errors.append(f"HTTP {call.status}: {call.error}")

    def add_calls(self, page: str, what: str, prefix: str, calls: list[Call]) -> None:
        for c in calls:
            self.add(page, what, f"{prefix}{c.label}", c)


def bench_once(app: Any, facts: Facts, pages: list[str], rec: Recorder) -> None:
    """One pass as one browser session: the shell, then per page its URLs (render + initial
    callbacks), its interactions, and live refresh (an idle poll, then a tick as after a write)."""
    b = Browser(app)
    rec.add("(shell)", "render", "GET /_dash-layout", Call("layout", b.layout_ms, 200))
    b.calls = []
    b.run_chain(set(), b.initial_deps())
    rec.add_calls("(shell)", "callback", "", b.calls)
    poll = ("refresh-poll", "n_intervals")
    if b.layout.has(poll[0]):  # the first poll records the store's signature
        b.interact({poll: 1})
        rec.add_calls("(shell)", "callback", "[first poll] ", b.calls)
    paths = page_paths(app)
    urls, acts = page_urls(facts), interactions(facts)
    for page in pages:
        for label, query in urls.get(page, [("load", "")]):
            render = b.open_page(paths[page], query)
            state = b.page_state()
            if state and state[0] == "pb-error":
                render.error = render.error or f"the page shows an error: {state[1]}"
            elif state:
                rec.note(page, f"{label}: shows an empty state: {state[1]}")
            rec.add(page, "render", f"render {label}", render)
            rec.add_calls(page, "callback", f"[{label}] ", b.calls[1:])
        for label, change in acts.get(page, []):
            changes = change(b)
            if not changes or not all(b.layout.has(cid) for cid, _ in changes) or any(v is None for v in changes.values()):
                rec.skip(page, label)
                continue
            b.interact(changes)
            rec.add_calls(page, "interaction", f"[{label}] ", b.calls)
        if b.layout.has(poll[0]):
            b.interact({poll: (b.layout.get(*poll)[1] or 0) + 1})
            rec.add_calls(page, "interaction", "[idle poll] ", b.calls)
        tick = ("refresh-tick", "n_intervals")
        b.interact({tick: (b.layout.get(*tick)[1] or 0) + 1})
        rec.add_calls(page, "interaction", "[refresh tick] ", b.calls)


def profile(app: Any, facts: Facts, pages: list[str], spec: str, top: int = 25) -> str:
    """cProfile a warm pass over `pages` (after one unprofiled pass), counting only the POSTs of
    callbacks whose label contains LABEL of `spec` (PAGE[:LABEL])."""
    page, _, needle = spec.partition(":")
    pr = cProfile.Profile()
    real_post = Browser.post

    def post(self: Browser, dep: Dep, changed: list[str]) -> Any:
        if needle and needle not in dep.label:
            return real_post(self, dep, changed)
        pr.enable()
        try:
            return real_post(self, dep, changed)
        finally:
            pr.disable()

    bench_once(app, facts, [page] if page else pages, Recorder())  # warm: imports, caches, templates
    Browser.post = post  # type: ignore[method-assign]
    try:
        bench_once(app, facts, [page] if page else pages, Recorder())
    finally:
        Browser.post = real_post  # type: ignore[method-assign]
    out = io.StringIO()
    stats = pstats.Stats(pr, stream=out)
    stats.sort_stats("cumulative").print_stats(r"perfbench|plotly|pandas|json|sqlite", top)
    stats.sort_stats("tottime").print_stats(top // 2)
    return out.getvalue()


# ==================================================================================================
# Report
# ==================================================================================================

def report_text(rec: Recorder, facts: Facts, repeat: int) -> str:
    lines = [f"store: {facts.runs:,} runs, {facts.points:,} points, {facts.requests:,} requests, "
             f"{facts.sweeps} sweeps, {facts.trials:,} trials (built in {facts.build_s:.1f} s); "
             f"server time, median/max of {repeat} pass(es); targets: render < {RENDER_TARGET_MS:.0f} ms, "
             f"callbacks < {CALLBACK_TARGET_MS:.0f} ms", ""]
    lines.append(f"{'page':<10} {'kind':<11} {'median ms':>9} {'max ms':>8}  {'':4}  callback")
    by_page: dict[str, list[Timing]] = defaultdict(list)
    for t in rec.rows.values():
        by_page[t.page].append(t)
    for page, rows in by_page.items():
        for t in rows:
            verdict = "PASS" if t.ok else "FAIL"
            lines.append(f"{page:<10} {t.what:<11} {t.median:>9.1f} {t.worst:>8.1f}  {verdict}  {t.label}")
            for e in dict.fromkeys(t.errors):
                lines.append(f"{'':<10} {'':<11} {'':>9} {'':>8}        ! {e}")
    for page, labels in rec.skipped.items():
        lines.append(f"{page:<10} skipped (ids or values not on the page): {', '.join(labels)}")
    for page, notes in rec.notes.items():
        lines += [f"{page:<10} note: {n}" for n in notes]
    lines.append("")
    lines.append(f"{'page':<10} {'render ms':>9} {'+callbacks ms':>13} {'slowest callback':>17}  verdict")
    for page, rows in by_page.items():
        renders = [t for t in rows if t.what == "render"]
        cbs = [t for t in rows if t.what != "render"]
        first = renders[0].median if renders else float("nan")
        load_cbs = sum(t.median for t in rows if t.what == "callback" and t.label.startswith("[load] "))
        slow = max((t.median for t in cbs), default=0.0)
        verdict = "PASS" if all(t.ok for t in rows) else "FAIL"
        lines.append(f"{page:<10} {first:>9.1f} {load_cbs:>13.1f} {slow:>17.1f}  {verdict}")
    return "\n".join(lines)


def report_json(rec: Recorder, facts: Facts, repeat: int) -> dict:
    return {"store": {k: getattr(facts, k) for k in ("runs", "points", "requests", "sweeps", "trials", "build_s")},
            "repeat": repeat, "targets_ms": {"render": RENDER_TARGET_MS, "callback": CALLBACK_TARGET_MS},
            "rows": [{"page": t.page, "kind": t.what, "label": t.label, "median_ms": round(t.median, 2),
                      "max_ms": round(t.worst, 2), "ms": [round(x, 2) for x in t.ms], "pass": t.ok,
                      "errors": sorted(set(t.errors))} for t in rec.rows.values()],
            "skipped": dict(rec.skipped), "notes": dict(rec.notes), "pass": all(t.ok for t in rec.rows.values())}


# ==================================================================================================
# Main
# ==================================================================================================

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--points", type=int, default=50000)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--trials", type=int, default=500, help="trials per sweep")
    ap.add_argument("--requests", type=int, default=16, help="per-request rows per serving load point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, help="store path (default: a temporary folder); reused if it exists")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store")
    ap.add_argument("--repeat", type=int, default=3, help="passes over every page (median/max reported)")
    ap.add_argument("--pages", help="comma-separated pages (default: all)")
    ap.add_argument("--json", type=Path, help="write the results as JSON here ('-': stdout)")
    ap.add_argument("--profile", metavar="PAGE[:LABEL]", help="cProfile the callbacks of PAGE whose label contains LABEL")
    return ap.parse_args(argv)


def open_or_build(args: argparse.Namespace) -> tuple[Path, Facts, tempfile.TemporaryDirectory | None]:
    tmp = None
    path = args.store
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="perfbench-dash-bench-")
        path = Path(tmp.name) / "bench.sqlite"
    if path.exists():
        from perfbench.store import ResultsStore

        with ResultsStore(path, create=False) as st:
            return path, derive_facts(st), tmp
    facts = build_store(path, args.runs, args.points, args.sweeps, args.trials, args.seed, args.requests)
    return path, facts, tmp


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PERFBENCH_DB_TIMEOUT", "5")
    path, facts, tmp = open_or_build(args)
    print(f"store {path}: {facts.runs:,} runs, {facts.points:,} points, {facts.sweeps} sweeps, "
          f"{facts.trials:,} trials" + (f" (built in {facts.build_s:.1f} s)" if facts.build_s else ""), file=sys.stderr)
    try:
        from perfbench.dashboard.app import PAGES, create_app

        app = create_app(path)
        pages = [p for p in (args.pages.split(",") if args.pages else PAGES) if p in PAGES]
        if args.profile:
            print(profile(app, facts, pages, args.profile))
            return 0
        rec = Recorder()
        for _ in range(max(1, args.repeat)):
            bench_once(app, facts, pages, rec)
        print(report_text(rec, facts, max(1, args.repeat)))
        if args.json:
            blob = json.dumps(report_json(rec, facts, max(1, args.repeat)), indent=2)
            print(blob) if str(args.json) == "-" else args.json.write_text(blob + "\n")
        return 0 if all(t.ok for t in rec.rows.values()) else 1
    finally:
        if tmp is not None:
            if args.keep:
                print(f"kept {path}", file=sys.stderr)
                tmp._finalizer.detach()  # type: ignore[attr-defined]
            else:
                tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
