"""Measured ceilings of this host: matmul peak per dtype, memory bandwidth, kernel launch
overhead, and pinned host<->device bandwidth.

Datasheet peaks are upper bounds nobody reaches; a roofline drawn against them blames the workload
for the gap between datasheet and silicon. Measuring the ceilings on the machine itself separates
the two. Every figure records how it was measured (shape, bytes convention, repeats).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

#: Square and skinny shapes; the best one wins and is reported. GPU shapes are large enough to
#: saturate tensor cores; CPU shapes stay cache-friendly and fast on small machines.
GPU_MATMUL_SHAPES = [(2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192), (16384, 8192, 8192),
                     (8192, 8192, 16384)]
CPU_MATMUL_SHAPES = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048)]


def _best_of(timer, fn: Callable[[], Any], *, warmup: int, repeats: int, min_seconds: float) -> dict[str, float]:
    """Median and best of repeated device-synchronised timings of `fn`."""
    for _ in range(warmup):
        timer.time(fn)
    xs: list[float] = []
    t0 = time.perf_counter()
    while len(xs) < repeats or (time.perf_counter() - t0) < min_seconds:
        xs.append(timer.time(fn)[0])
        if len(xs) >= 10 * repeats:
            break
    return {"median_s": statistics.median(xs), "min_s": min(xs), "n": len(xs)}


def matmul_peak(device: str, dtype: str, shapes: list[tuple[int, int, int]], *, quick: bool = False,
                progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Best achieved FLOP/s over `shapes` for C[M,N] = A[M,K] @ B[K,N] (2*M*N*K FLOPs)."""
    import torch

    from perfbench.timing import timer_for

    timer = timer_for(device)
    tdtype = getattr(torch, dtype)
    results = []
    for m, n, k in shapes:
        progress(f"matmul {dtype} {m}x{n}x{k}")
        try:
            a = torch.randn(m, k, device=device, dtype=torch.float32).to(tdtype)
            b = torch.randn(k, n, device=device, dtype=torch.float32).to(tdtype)
            c = torch.empty(m, n, device=device, dtype=tdtype)
        except (RuntimeError, MemoryError) as exc:  # too big for this device: skip the shape
            results.append({"shape": [m, n, k], "error": str(exc)[:200]})
            continue
        try:
            r = _best_of(timer, lambda: torch.matmul(a, b, out=c), warmup=2 if quick else 5,
                         repeats=3 if quick else 10, min_seconds=0.0 if quick else 0.2)
        except RuntimeError as exc:  # e.g. a dtype without a CPU kernel
            results.append({"shape": [m, n, k], "error": str(exc)[:200]})
            continue
        flops = 2.0 * m * n * k
        results.append({"shape": [m, n, k], "flops_per_s": flops / r["median_s"],
                        "median_s": r["median_s"], "n": r["n"]})
        a = b = c = None  # free before the next, larger shape
    ok = [r for r in results if "flops_per_s" in r]
    if not ok:
        return {"dtype": dtype, "flops_per_s": None, "shapes": results,
                "error": "no shape ran: " + "; ".join(r.get("error", "") for r in results)[:300]}
    best = max(ok, key=lambda r: r["flops_per_s"])
    return {"dtype": dtype, "flops_per_s": best["flops_per_s"], "best_shape": best["shape"],
            "shapes": results, "statistic": "median time of the best shape"}


def memory_bandwidth(device: str, nbytes: int, *, quick: bool = False) -> dict[str, Any]:
    """Copy (dst = src) and triad (a = b + s*c) bandwidth over `nbytes` buffers.

    Convention: bytes read plus bytes written. Copy moves 2 x nbytes, triad 3 x nbytes.
    """
    import torch

    from perfbench.timing import timer_for

    timer = timer_for(device)
    n = nbytes // 4
    src = torch.ones(n, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    c = torch.ones_like(src)
    kw = dict(warmup=2 if quick else 5, repeats=3 if quick else 20, min_seconds=0.0 if quick else 0.3)
    copy = _best_of(timer, lambda: dst.copy_(src), **kw)
    triad = _best_of(timer, lambda: torch.add(src, c, alpha=2.0, out=dst), **kw)
    return {
        "buffer_bytes": n * 4,
        "convention": "bytes read + bytes written (copy: 2 x buffer, triad: 3 x buffer)",
        "copy_bytes_per_s": 2 * n * 4 / copy["median_s"],
        "triad_bytes_per_s": 3 * n * 4 / triad["median_s"],
        "bytes_per_s": max(2 * n * 4 / copy["median_s"], 3 * n * 4 / triad["median_s"]),
        "statistic": "median time",
    }


def launch_overhead(device: str, *, quick: bool = False) -> dict[str, Any]:
    """Cost of launching a near-empty kernel (1-element add), the quantity TKLQT adds up.

    `launch_us`: host time per launch in a back-to-back loop (the CPU side cost; its inverse is the
    launch rate). `round_trip_us`: one launch plus synchronise, from an idle device.
    On CPU the same loop measures torch's per-op dispatch overhead.
    """
    import torch

    x = torch.zeros(1, device=device)
    n = 2000 if quick else 20000
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(200):
        x.add_(1)
    sync()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        x.add_(1)
    t_host = (time.perf_counter_ns() - t0) / 1e3 / n
    sync()
    t_all = (time.perf_counter_ns() - t0) / 1e3 / n
    rts = []
    for _ in range(50 if quick else 500):
        sync()
        t1 = time.perf_counter_ns()
        x.add_(1)
        sync()
        rts.append((time.perf_counter_ns() - t1) / 1e3)
    return {"launch_us": t_host, "launches_per_s": 1e6 / t_host,
            "throughput_us_per_kernel": t_all, "round_trip_us": statistics.median(rts),
            "kernel": "1-element in-place add (torch.Tensor.add_)", "launches": n}


def host_device_bandwidth(nbytes: int, *, quick: bool = False) -> dict[str, Any]:
    """Pinned host-to-device and device-to-host copy bandwidth (bytes moved once)."""
    import torch

    from perfbench.timing import timer_for

    timer = timer_for("cuda")
    n = nbytes // 4
    host = torch.empty(n, dtype=torch.float32, pin_memory=True)
    dev = torch.empty(n, dtype=torch.float32, device="cuda")
    kw = dict(warmup=2, repeats=3 if quick else 10, min_seconds=0.0 if quick else 0.2)
    h2d = _best_of(timer, lambda: dev.copy_(host, non_blocking=True), **kw)
    d2h = _best_of(timer, lambda: host.copy_(dev, non_blocking=True), **kw)
    return {"buffer_bytes": n * 4, "pinned": True,
            "h2d_bytes_per_s": n * 4 / h2d["median_s"], "d2h_bytes_per_s": n * 4 / d2h["median_s"]}


def calibrate(device: str, *, dtypes: list[str] | None = None, quick: bool = False,
              progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every micro-benchmark that applies to `device` and return one result mapping."""
    import torch

    cuda = device == "cuda"
    dtypes = dtypes or (["float32", "float16", "bfloat16"] if cuda else ["float32", "bfloat16"])
    shapes = GPU_MATMUL_SHAPES if cuda else CPU_MATMUL_SHAPES
    if quick:
        shapes = shapes[:2]
    out: dict[str, Any] = {"device": device, "quick": quick, "torch_threads": torch.get_num_threads()}
    if cuda:
        # TF32 off: "float32" means true FP32, as in the hardware profiles.
        torch.backends.cuda.matmul.allow_tf32 = False
        out["gpu_name"] = torch.cuda.get_device_name(0)
    out["matmul"] = {d: matmul_peak(device, d, shapes, quick=quick, progress=progress) for d in dtypes}
    progress("memory bandwidth")
    mem_bytes = (1 << 30 if not quick else 256 << 20) if cuda else (256 << 20 if not quick else 64 << 20)
    out["memory"] = memory_bandwidth(device, mem_bytes, quick=quick)
    progress("launch overhead")
    out["launch"] = launch_overhead(device, quick=quick)
    if cuda:
        progress("host<->device bandwidth")
        out["host_device"] = host_device_bandwidth(256 << 20 if not quick else 64 << 20, quick=quick)
    return out
