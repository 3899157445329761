"""Put a stored run on the roofline and split its latency.

For every measured point: the analytical FLOPs and bytes of the whole workload, the achieved FLOP/s
and arithmetic intensity, the share of the roof reached, and the latency split into

* `floor_s`: the roofline floor (sum over operators of max(FLOPs/peak, bytes/bandwidth));
* `cpu_overhead_s`: time the GPU sat idle waiting for the CPU to launch work. The profiler slows
  the host but not the kernels, so the trace's GPU busy time (`gpu_busy_s`) holds for the timed
  iteration and the rest of the median is GPU idle; that idle is split between host wait and other
  idle in the proportion the trace shows (`idle_host_wait_us` over the traced idle). Needs
  `measure.trace: true`, and a GPU;
* `remainder_s`: the rest = `below_roof_s` (GPU busy beyond the floor: kernels running below the
  roof) + `other_idle_s` (synchronisation, gaps the tracer could not attribute).

The parts always add up: floor + CPU overhead + remainder = median, and floor + below-roof = GPU
busy. Where a measurement contradicts the ceilings (above the roof, kernels faster than the floor)
the row's `note` says so instead of clamping silently.

With a trace, operators are also placed by type (matmul, attention, embedding, element-wise): the
analytical FLOPs/bytes of that type over the GPU time its kernels took in the trace.
"""

from __future__ import annotations

import re
from typing import Any

from perfbench.models.arch import ModelArch, resolve_model
from perfbench.roofline.analytical import dominant_bound, model_ops

#: Innermost ATen operator name -> operator type shared with the analytical model's `kind`.
_OP_TYPES = [
    ("attention", re.compile(r"scaled_dot_product|flash_attention|efficient_attention|cudnn_attention")),
    ("matmul", re.compile(r"aten::(mm|addmm|bmm|baddbmm|matmul|linear|_scaled_mm)\b")),
    # torch >= 2.x runs the embedding lookup as aten::gather/index_select under aten::embedding
    ("embedding", re.compile(r"aten::(embedding|embedding_dense|index_select|gather)\b")),
]


def op_type(aten_name: str) -> str:
    for kind, rx in _OP_TYPES:
        if rx.search(aten_name):
            return kind
    return "elementwise"


def workload_ops(arch: ModelArch, phase: str, batch: int, seq: int, new_tokens: int, dtype: str):
    """Analytical ops of one measured iteration, as the runner times it.

    prefill: one forward over `seq` tokens (logits for every position). decode: `new_tokens`
    single-token steps over contexts seq, seq+1, ... generate: a prefill whose logits cover the
    last position only (what generate computes), then new_tokens-1 decode steps.
    """
    if phase == "prefill":
        return model_ops(arch, phase="prefill", batch=batch, seq=seq, dtype=dtype)
    ops = []
    if phase == "generate":
        ops += model_ops(arch, phase="prefill", batch=batch, seq=seq, dtype=dtype, lm_head_positions="last")
        steps = range(seq, seq + new_tokens - 1)
    else:
        steps = range(seq, seq + new_tokens)
    for ctx in steps:
        ops += model_ops(arch, phase="decode", batch=batch, seq=ctx, dtype=dtype)
    return ops


def _by_kind(ops, peak: float, bw: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for op in ops:
        k = out.setdefault(op.kind, {"flops": 0.0, "bytes": 0.0, "floor_s": 0.0})
        k["flops"] += op.total_flops
        k["bytes"] += op.total_bytes
        k["floor_s"] += max(op.total_flops / peak, op.total_bytes / bw)
    return out


def place_run(run: dict[str, Any], *, peak_flops: float, bandwidth: float,
              launch_us: float | None = None) -> list[dict[str, Any]]:
    """One row per ok point of `run` (as returned by `ResultsStore.get_run`)."""
    spec = run["spec"]
    # The architecture the run resolved to when it ran (runs stored before it was recorded: resolve).
    arch = ModelArch.model_validate(spec["arch"]) if spec.get("arch") else resolve_model(spec["model"])[1]
    rows = []
    for p in run["points"]:
        if p["status"] != "ok":
            continue
        ops = workload_ops(arch, spec["phase"], p["batch_size"], p["seq_len"], p["new_tokens"], spec["dtype"])
        flops = sum(o.total_flops for o in ops)
        by = sum(o.total_bytes for o in ops)
        floor = sum(max(o.total_flops / peak_flops, o.total_bytes / bandwidth) for o in ops)
        lat = p["latency_median_s"]
        ai = flops / by
        attainable = min(peak_flops, ai * bandwidth)
        achieved = flops / lat
        row: dict[str, Any] = {
            "batch_size": p["batch_size"], "seq_len": p["seq_len"], "new_tokens": p["new_tokens"],
            "latency_median_s": lat, "flops": flops, "bytes": by, "arithmetic_intensity": ai,
            "achieved_flops_per_s": achieved, "attainable_flops_per_s": attainable,
            "roof_share": achieved / attainable, "bound": dominant_bound(ops, peak_flops, bandwidth),
            "floor_s": floor, "floor_share": floor / lat,
            "cpu_overhead_s": None, "remainder_s": None, "gpu_busy_s": None, "below_roof_s": None,
            "other_idle_s": None, "trace": None, "ops": [], "operators": [], "notes": [],
        }
        _split_with_trace(row, p, ops, peak_flops, bandwidth)
        if floor > lat:
            row["notes"].append(f"the roofline floor ({floor * 1e3:.3g} ms) exceeds the measured latency "
                                f"({lat * 1e3:.3g} ms): the ceilings underestimate this machine (calibrate "
                                "again without load, or compare with --ceilings datasheet)")
        elif achieved > attainable * 1.0001:
            row["notes"].append(f"above the roof ({achieved / attainable:.0%}): the ceilings underestimate "
                                "this machine (calibrate again without load)")
        row["note"] = "; ".join(row.pop("notes")) or None
        rows.append(row)
    return rows


def _split_with_trace(row: dict[str, Any], point: dict[str, Any], ops, peak: float, bw: float) -> None:
    """Split the timed median into floor + CPU overhead + remainder (see the module docstring)."""
    lat, floor = row["latency_median_s"], row["floor_s"]
    notes = row["notes"]
    path = point.get("trace_path")
    if not path:
        row["remainder_s"] = max(lat - floor, 0.0)
        notes.append("no trace: run with measure.trace: true (or --trace) to split out CPU launch overhead")
        return
    from perfbench.errors import InputError
    from perfbench.trace.metrics import analyze
    from perfbench.trace.operators import operator_table

    try:
        an = analyze(path)
    except (InputError, FileNotFoundError, OSError) as exc:
        row["remainder_s"] = max(lat - floor, 0.0)
        notes.append(f"trace unreadable ({exc}); no launch split")
        return
    f = an.figures
    row["trace"] = {"path": path, **f.as_full_dict(), "traced_span_us": an.traced_span_us}
    if not f.has_gpu:
        row["remainder_s"] = max(lat - floor, 0.0)
        notes.append("CPU-only trace: no GPU launch overhead to split out")
        return
    # The profiler slows the host, never the kernels: the trace's GPU busy time holds for the timed
    # iteration, and the rest of the median is GPU idle. That idle is split between waiting on the
    # host and other idle in the proportion the trace shows.
    busy = min((f.gpu_busy_us or 0.0) / 1e6, lat)
    idle = lat - busy
    traced_idle = (f.gpu_span_us or 0.0) - (f.gpu_busy_us or 0.0)
    host_share = min(1.0, (f.idle_host_wait_us or 0.0) / traced_idle) if traced_idle > 0 else 0.0
    cpu = idle * host_share
    row["gpu_busy_s"] = busy
    row["cpu_overhead_s"] = cpu
    row["other_idle_s"] = idle - cpu
    row["below_roof_s"] = busy - floor
    row["remainder_s"] = lat - floor - cpu
    if busy < floor:
        notes.append("the kernels ran faster than the roofline floor: the ceilings underestimate this machine")
        row["below_roof_s"] = 0.0
        row["remainder_s"] = max(row["remainder_s"], 0.0)
    table = operator_table(an, level="op")
    names = [str(n) for n in table["operator"]]
    if f.graph_launches or any("CompiledFxGraph" in n or "triton" in n.lower() for n in names):
        # Fused Triton kernels and CUDA-graph replays do not sit under aten::mm / SDPA operators:
        # a split by operator type would put matmul time under "element-wise". Say so, skip it.
        notes.append("compiled run: its kernels are not attributed to ATen operators, so no "
                     "per-operator-type positions (the workload position and split stand)")
        return
    gpu_by_kind: dict[str, float] = {}
    for name, t in zip(table["operator"], table["gpu_time_us"]):
        k = op_type(str(name))
        gpu_by_kind[k] = gpu_by_kind.get(k, 0.0) + float(t)
    for kind, c in _by_kind(ops, peak, bw).items():
        g = gpu_by_kind.get(kind)
        ai = c["flops"] / c["bytes"] if c["bytes"] else None
        achieved = c["flops"] / (g / 1e6) if g else None
        attainable = min(peak, ai * bw) if ai else None
        row["ops"].append({"op_type": kind, "flops": c["flops"], "bytes": c["bytes"],
                           "arithmetic_intensity": ai, "gpu_time_us": g, "floor_us": c["floor_s"] * 1e6,
                           "achieved_flops_per_s": achieved,
                           "roof_share": achieved / attainable if achieved and attainable else None})
    row["operators"] = _matmul_positions(an, ops, peak, bw, notes)


#: ATen names whose recorded shapes identify a projection (outermost first: aten::linear holds
#: the weight as [out, in]; under it aten::mm / addmm see a flattened input).
_MATMUL_OPS = ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul")


def _matmul_positions(an, ops, peak: float, bw: float, notes: list[str]) -> list[dict[str, Any]]:
    """Each projection of the model on the roofline: its kernels, found by the weight shape recorded
    with the operator (record_shapes), over the analytical FLOPs and bytes of the projections with
    that shape. Projections of equal shape (q_proj and o_proj in Llama-3.2-1B) are one row: a trace
    cannot tell them apart. Empty without recorded shapes."""
    import numpy as np

    from perfbench.trace.operators import attribute
    from perfbench.trace.shapes import input_dims, linear_weight_shape

    by_shape: dict[tuple[int, int], list] = {}
    for op in ops:
        if op.kind == "matmul" and op.weight_shape:
            by_shape.setdefault(op.weight_shape, []).append(op)
    attr = attribute(an)
    host_names = an.trace.host["name"].astype(str).to_numpy() if len(an.trace.host) else np.empty(0, dtype=object)
    in_step = an.acts["step"].to_numpy() >= 0
    top, inner = attr["top_idx"].to_numpy(), attr["op_idx"].to_numpy()

    def matmul_row(ix: np.ndarray) -> np.ndarray:
        ok = ix >= 0
        names = np.where(ok, host_names[np.maximum(ix, 0)] if len(host_names) else "", "")
        return np.where(ok & np.isin(names, _MATMUL_OPS), ix, -1)

    row_of = matmul_row(top)
    row_of = np.where(row_of >= 0, row_of, matmul_row(inner))
    row_of = np.where(in_step, row_of, -1)
    if not (row_of >= 0).any():
        return []
    dims = input_dims(an.trace, np.unique(row_of[row_of >= 0]))
    if not dims:
        notes.append("no recorded operator shapes (record_shapes): matmuls placed by type only")
        return []
    dur = an.trace.gpu["dur_us"].to_numpy()
    steps = an.figures.steps or 1
    gpu_us: dict[tuple[int, int], float] = {}
    unmatched = 0.0
    for r in np.unique(row_of[row_of >= 0]):
        shape = linear_weight_shape(str(host_names[r]), dims.get(int(r)) or [])
        t = float(dur[row_of == r].sum()) / steps
        if shape in by_shape:
            gpu_us[shape] = gpu_us.get(shape, 0.0) + t
        else:
            unmatched += t
    if unmatched > 0.01 * (sum(gpu_us.values()) + unmatched):  # e.g. RoPE's tiny inv_freq matmul is not worth a word
        notes.append(f"{unmatched:.0f} us of matmul kernels match no projection of the model by shape")
    out = []
    for shape, members in by_shape.items():
        g = gpu_us.get(shape)
        flops = sum(o.total_flops for o in members)
        by = sum(o.total_bytes for o in members)
        floor = sum(max(o.total_flops / peak, o.total_bytes / bw) for o in members)
        ai = flops / by
        achieved = flops / (g / 1e6) if g else None
        attainable = min(peak, ai * bw)
        out.append({"op": "+".join(dict.fromkeys(o.name for o in members)), "op_type": "matmul",
                    "weight_shape": list(shape), "flops": flops, "bytes": by, "arithmetic_intensity": ai,
                    "gpu_time_us": g, "floor_us": floor * 1e6, "achieved_flops_per_s": achieved,
                    "roof_share": achieved / attainable if achieved else None})
    out.sort(key=lambda o: -(o["gpu_time_us"] or 0.0))
    return out
