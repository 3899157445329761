"""Where a batch sweep turns from CPU-bound (launch-bound) to GPU-bound, three independent ways.

SKIP's observation: while the host is the bottleneck, every kernel starts soon after its launch, so
TKLQT stays flat at its small-batch level; once the GPU becomes the bottleneck, launches run ahead
of it, the queue part explodes and TKLQT leaves that level by orders of magnitude. The two cross-
checks look at the same transition from elsewhere: GPU utilisation crossing one half, and the knee
of the latency-vs-batch curve. Rules and thresholds are documented in docs/tracer.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from perfbench.errors import InputError

#: TKLQT baseline = min TKLQT of the first BASELINE_POINTS points of the sweep.
BASELINE_POINTS = 2
#: Transition when TKLQT > baseline * (1 + TKLQT_TOL), i.e. more than triples. Why 2 and not 0.25:
#: in CPU-bound runs TKLQT is mostly launch-call time, which host noise and the per-shape kernel
#: choice move by up to ~2x (H100 Llama-1B: b16 is 1.9x b1 at gpu_util 0.34), whereas past the
#: transition the queue part grows by orders of magnitude (b64: 650x).
TKLQT_TOL = 2.0
#: GPU-bound by utilisation once gpu_util >= this.
UTIL_THRESHOLD = 0.5
#: Latency knee: the first point whose latency is > KNEE_RATIO x the first point's AND grew from the
#: previous point with a log-log slope >= KNEE_SLOPE (slope 0: flat; 1: latency proportional to batch;
#: 0.25 = +19% per doubling of the batch).
KNEE_RATIO = 1.25
KNEE_SLOPE = 0.25


@dataclass
class Transition:
    """Result of a sweep: the TKLQT method's batch is the answer (`transition_batch`); `methods`
    holds all three; `agree` is true when every method's answer lies within one sweep step of the
    others (a method that finds no transition counts as "beyond the last point")."""

    batch_sizes: list[int]
    transition_batch: int | None
    methods: dict[str, int | None]
    agree: bool
    baseline_tklqt_us: float | None
    latency_source: str | None  # "timed" or "trace" or None
    evaluated: list[str] = field(default_factory=list)  # methods that had data; null in `methods` is "none found" only for these

    def as_dict(self) -> dict[str, Any]:
        """Exactly the `trace sweep` JSON contract's keys (besides `points`)."""
        return {"transition_batch": self.transition_batch, "methods": dict(self.methods), "agree": self.agree}

    def as_full_dict(self) -> dict[str, Any]:
        """With `evaluated`: the methods that had data (null in `methods` means "none in range"
        only for those). What `trace run` prints."""
        return {**self.as_dict(), "evaluated": list(self.evaluated)}


def _get(p: Any, key: str) -> Any:
    if isinstance(p, Mapping):
        return p.get(key)
    figs = getattr(p, "figures", p)
    return getattr(figs, key, None)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None  # NaN and infinities are no figures


def tklqt_transition(batch_sizes: Sequence[int], tklqt: Sequence[float | None], tol: float = TKLQT_TOL) -> tuple[int | None, float | None]:
    """First batch whose TKLQT exceeds baseline * (1 + tol); baseline = min of the first points."""
    base_vals = [v for v in (_num(x) for x in tklqt[:BASELINE_POINTS]) if v is not None]
    if not base_vals:
        return None, None
    baseline = min(base_vals)
    for b, v in zip(batch_sizes, tklqt):
        v = _num(v)
        if v is not None and v > baseline * (1.0 + tol):
            return b, baseline
    return None, baseline


def util_transition(batch_sizes: Sequence[int], util: Sequence[float | None], threshold: float = UTIL_THRESHOLD) -> int | None:
    """First batch whose gpu_util reaches the threshold."""
    for b, u in zip(batch_sizes, util):
        u = _num(u)
        if u is not None and u >= threshold:
            return b
    return None


def latency_knee(batch_sizes: Sequence[int], latency: Sequence[float | None], ratio: float = KNEE_RATIO, slope: float = KNEE_SLOPE) -> int | None:
    """First batch where latency has left the flat region: above ratio x the first point's latency
    and growing from the previous point at a log-log slope of at least `slope`. Both conditions:
    a step up at small batch (different kernels, +23% from b1 to b2 on the H100) is not a knee, nor
    is a steep slope between two points that are still at the baseline level."""
    lat = [_num(x) for x in latency]
    if len(lat) < 2 or lat[0] is None or lat[0] <= 0:
        return None
    for i in range(1, len(lat)):
        cur, prev = lat[i], lat[i - 1]
        if cur is None or prev is None or prev <= 0 or batch_sizes[i] <= batch_sizes[i - 1]:
            continue
        s = math.log(cur / prev) / math.log(batch_sizes[i] / batch_sizes[i - 1])
        if cur > ratio * lat[0] and s >= slope:
            return batch_sizes[i]
    return None


def methods_agree(batch_sizes: Sequence[int], methods: Mapping[str, int | None], evaluated: Sequence[str] | None = None) -> bool:
    """True when the answers of all evaluated methods lie within one sweep step of each other.

    A method that was evaluated but found no transition answers "beyond the last point" (so a
    transition at the last batch and "none" still agree); a method that could not be evaluated (no
    data: e.g. no latency at all) is left out. Fewer than two evaluated methods: trivially true."""
    names = list(methods) if evaluated is None else [m for m in methods if m in evaluated]
    pos = [batch_sizes.index(methods[m]) if methods[m] is not None else len(batch_sizes) for m in names]
    return len(pos) < 2 or max(pos) - min(pos) <= 1


def detect_transition(
    batch_sizes: Sequence[int],
    points: Sequence[Any],
    latency_us: Sequence[float | None] | None = None,
) -> Transition:
    """`points`: per-batch results, same order as `batch_sizes` (ascending): `Analysis` objects,
    `RunFigures`, or dicts with the per-run figure keys. `latency_us`: timed medians (preferred);
    without them the traced iteration span of each point (`Analysis.traced_span_us`, or a
    `traced_span_us` key) is used, which profiler overhead flattens (see docs/tracer.md)."""
    bs = [int(b) for b in batch_sizes]
    if len(bs) != len(points):
        raise InputError(f"{len(bs)} batch sizes but {len(points)} results: give one result per batch size")
    if any(b <= 0 for b in bs) or any(b2 <= b1 for b1, b2 in zip(bs, bs[1:])):
        raise InputError(f"batch sizes must be positive and strictly ascending, got {bs}")
    if latency_us is not None and len(latency_us) != len(bs):
        raise InputError(f"{len(bs)} batch sizes but {len(latency_us)} latencies")
    if latency_us is not None:
        bad = [v for v in latency_us if v is not None and not (_num(v) is not None and _num(v) > 0)]
        if bad:
            raise InputError(f"latencies must be finite numbers > 0 (or missing), got {bad[0]!r}")
    source = None
    if latency_us is not None:
        lat = list(latency_us)
        source = "timed"
    else:
        lat = [getattr(p, "traced_span_us", None) if not isinstance(p, Mapping) else p.get("traced_span_us") for p in points]
        source = "trace" if any(v is not None for v in lat) else None
    tk = [_num(_get(p, "tklqt_us")) for p in points]
    util = [_num(_get(p, "gpu_util")) for p in points]
    tk_b, base = tklqt_transition(bs, tk)
    methods = {
        "tklqt": tk_b,
        "gpu_util": util_transition(bs, util),
        "latency": latency_knee(bs, lat) if source else None,
    }
    evaluated = [m for m, ok in (("tklqt", base is not None), ("gpu_util", any(u is not None for u in util)), ("latency", source is not None)) if ok]
    return Transition(
        batch_sizes=bs,
        transition_batch=tk_b,
        methods=methods,
        agree=methods_agree(bs, methods, evaluated),
        baseline_tklqt_us=base,
        latency_source=source,
        evaluated=evaluated,
    )
