"""Kernel-level analysis of PyTorch-profiler (Kineto) Chrome traces: SKIP's TKLQT and friends.

Entry points (the runner's view):

- `capture_trace(step, out_path, *, cuda)` profiles one call of `step` -> gzipped Chrome trace.
- `analyze(path_or_trace) -> Analysis`; `Analysis.figures` (a `RunFigures`) / `.as_dict()` holds the
  per-run figures below; `operator_table`, `top_kernels`, `fusion_candidates` take the `Analysis`.
- `detect_transition(batch_sizes, analyses, latency_us=None)` for a batch sweep;
  `profiler_overhead(analysis, timed_median_us)`; `compare_launch_saving(eager, compiled)`.

Nothing here imports torch except `capture_trace` (inside the call). Full text: docs/tracer.md.

Definitions (times in microseconds; "call" = the cuda_runtime/cuda_driver API call that enqueued a
GPU activity, joined on `args.correlation`; GPU activities = kernel, gpu_memcpy, gpu_memset):

TKLQT (SKIP, ISPASS 2025: total kernel launch and queuing time)
    Sum over launch calls of (GPU start of the call's FIRST activity - start of the call). Each
    call counts once: for cudaLaunchKernel & co. that is its only activity; for a CUDA-graph replay
    (cudaGraphLaunch / hipGraphLaunch: one correlation id for every replayed kernel) only the first
    activity counts, because the GPU enqueues the rest itself.
    Parts, per call, with gap = max(0, gpu_start - call_start):
    `launch_call_us` = min(call duration, gap) (time spent in the API call before the GPU started),
    `queue_us` = gap - launch part = max(0, gpu_start - call_end) (HTA's "launch delay": from the
    end of the call to the GPU start). They sum to TKLQT. A GPU start before the call's start is
    clock skew: clamped to 0 and counted in `negative_clamped`. A GPU start between call start and
    call end is normal (the GPU picks the work up while the call returns): queue part 0.
orphans
    GPU activities whose launch call is not in the trace (launched before the profiling window,
    e.g. kernels of a graph launched earlier). Counted, left out of TKLQT, never dropped silently.
kernels, launches, graph_launches, akd_us
    Kernel activities (graph-replayed ones included); launch calls with >= 1 activity (the TKLQT
    terms); graph-launch calls among them; mean kernel duration.
gpu_busy_us, gpu_span_us, gpu_util
    Union of busy intervals of all GPU activities across streams; first GPU start to last GPU end;
    busy / span.
idle_host_wait_us
    GPU idle time spent waiting on the CPU: for every gap in the busy union (all streams idle),
    the part from the gap's start until the call that enqueued the activity ending the gap
    returned, min(call_end, gap_end) - gap_start, when that call had not returned when the gap
    began: the work was not yet submitted while the GPU ran dry, so the host (Python, dispatch,
    launch) was the bottleneck. The rest of the gap (the GPU picking the work up) does not count;
    of activities starting together at the gap's end, the latest call counts. Gaps whose next work
    was already enqueued (a sync, an event wait, a graph launched earlier) and gaps ended by
    orphans do not count.
bound
    `cpu` when gpu_util < 0.5 or idle_host_wait_us >= 0.5 * gpu_span_us, else `gpu`; null without
    GPU activity. A GPU idle for more than half of its span cannot be what limits the iteration.
steps and per-step averaging
    With `ProfilerStep#N` windows, each activity belongs to the window holding the start of its
    launch call (orphans: their GPU start); figures are per-iteration averages over the windows
    (sums / number of steps; busy, span, host-wait are computed per window; gpu_util = sum busy /
    sum span). Windows with no GPU work in a GPU trace (the stub step opened just before the
    profiler stops) are not counted; activities outside every window are excluded (said in
    `note`). Without markers the whole trace is one iteration (steps = 1). `orphans` and
    `negative_clamped` are totals for the trace (data-quality counters, not averaged).
dropped, and traces that are refused
    What is read must be possible. `dropped` counts per reason what was dropped or clamped:
    bad_ts / bad_dur (an event whose ts is not a number or beyond +-2^53 us, or whose dur is not a
    number or longer than a day: dropped), negative_dur (clamped to 0), bad_correlation (not an
    integer >= 0: treated as missing, so its activity is an orphan), ambiguous_correlation (GPU
    activities whose id several calls carry: left unjoined), negative_gap (= negative_clamped).
    `note` says so. A trace is refused (InputError, exit 2) when drops take more than half of its
    host events, calls or GPU activities, when its events span more than a day, or when more than
    5% of its GPU activities carry an ambiguous id or share the id of a call that is no graph
    launch. gpu_util lies in [0, 1] by construction (durations >= 0; busy is a union within the span).
    Reading is bounded too: see perfbench.trace.parse (size limit, gzip bombs, deep nesting).
CPU-only traces
    has_gpu false; tklqt/parts/akd/busy/span/util/host-wait/bound null; kernels = launches = 0;
    `note` says "no GPU activity".
Transition over a batch sweep (transition.py)
    TKLQT method: baseline = min TKLQT of the first two points; the transition is the first batch
    with TKLQT > 3 x baseline (tolerance 2.0: launch-call noise and per-shape kernel choice move a
    CPU-bound TKLQT by up to ~2x, past the transition the queue part grows by orders of magnitude).
    gpu_util method: first batch with gpu_util >= 0.5. Latency knee: first batch whose latency is
    > 1.25 x the first point's and grew from the previous point with log-log slope >= 0.25; timed
    medians if given, else traced iteration spans (flattened by profiler overhead).
    `transition_batch` = the TKLQT answer; `agree` = every evaluated method's answer lies within
    one sweep step of the others ("no transition" = one step beyond the last point; a method with
    no data at all is left out).
Fusion candidates (fusion.py)
    n-grams (length 2..8) of kernel names per stream in launch order, counted without overlap;
    score = occurrences x (length - 1) (the launches a fusion removes, SODA-style frequency x
    length weighting); chains picked greedily by score, each kernel claimed by one chain;
    launch_saving_us = summed TKLQT terms of all but the first kernel of each occurrence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Analysis",
    "FIGURE_KEYS",
    "RunFigures",
    "Trace",
    "Transition",
    "analyze",
    "capture_trace",
    "compare_launch_saving",
    "detect_transition",
    "fusion_candidates",
    "load_trace",
    "operator_table",
    "profiler_overhead",
    "top_kernels",
]

_EXPORTS = {
    "Trace": "parse",
    "load_trace": "parse",
    "Analysis": "metrics",
    "RunFigures": "metrics",
    "FIGURE_KEYS": "metrics",
    "analyze": "metrics",
    "profiler_overhead": "metrics",
    "operator_table": "operators",
    "top_kernels": "operators",
    "Transition": "transition",
    "detect_transition": "transition",
    "fusion_candidates": "fusion",
    "compare_launch_saving": "fusion",
    "capture_trace": "capture",
}

if TYPE_CHECKING:  # pragma: no cover
    from perfbench.trace.capture import capture_trace
    from perfbench.trace.fusion import compare_launch_saving, fusion_candidates
    from perfbench.trace.metrics import FIGURE_KEYS, Analysis, RunFigures, analyze, profiler_overhead
    from perfbench.trace.operators import operator_table, top_kernels
    from perfbench.trace.parse import Trace, load_trace
    from perfbench.trace.transition import Transition, detect_transition


def __getattr__(name: str) -> Any:
    """Lazy exports: `import perfbench.trace.capture` must not pull in pandas."""
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'perfbench.trace' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"perfbench.trace.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
