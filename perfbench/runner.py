"""The runner: warm up, repeat, time with device synchronisation, summarise, store.

For each point of a spec the runner warms up, then repeats the step until both `measure.repeats`
and `measure.min_seconds` are met (capped by `measure.max_seconds`). Each finished point is
committed to the store at once, so an interrupted run keeps every completed point and never a
partial one. A failing point (out of memory at a large batch, say) is stored as failed with its
error and the run moves on.
"""

from __future__ import annotations

import gc
import signal
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from perfbench.backends import backend_class
from perfbench.backends.base import Point, PreparedPoint, RunContext, StepReport
from perfbench.spec import WorkloadSpec
from perfbench.stats import summarize
from perfbench.store import ResultsStore


class RunInterrupted(KeyboardInterrupt):
    """Raised on SIGTERM so a terminated run is closed like a Ctrl-C'd one."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise RunInterrupted(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _nvtx(message: str):
    """An NVTX range (visible in Nsight Systems); a no-op context if nvtx is missing."""
    try:
        import nvtx

        return nvtx.annotate(message, domain="perfbench")
    except Exception:  # pragma: no cover - nvtx is a core dependency, but never fail a run on it
        return nullcontext()


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    # CUDA: OutOfMemoryError / "CUDA out of memory"; CPU: "DefaultCPUAllocator: can't allocate memory"
    return (name in ("OutOfMemoryError", "MemoryError") or "out of memory" in text
            or "can't allocate memory" in text or "cannot allocate memory" in text)


@dataclass
class Progress:
    """Callbacks the CLI uses to draw progress; all optional so library use stays quiet."""

    on_run_start: Callable[[str], None] = lambda run_id: None
    on_point_start: Callable[[Point, int, int], None] = lambda p, i, n: None
    on_sample: Callable[[int, int], None] = lambda done, target: None
    on_warmup: Callable[[int, int], None] = lambda done, target: None
    on_point_end: Callable[[Point, dict], None] = lambda p, r: None


@dataclass
class RunResult:
    run_id: str
    status: str
    points: list[dict] = field(default_factory=list)
    reason: str | None = None


def measure_point(prepared: PreparedPoint, timer, spec: WorkloadSpec, on_sample=lambda d, t: None,
                  on_warmup=lambda d, t: None, meter=None) -> dict[str, Any]:
    """Warm up, then time `prepared.step` until repeats and min_seconds are both met.

    Python's cyclic garbage collector is off while timing (as `timeit` does): a collection landing
    in one iteration would show up as an outlier that has nothing to do with the workload. The
    young generations are collected once before timing, and it is back on afterwards whatever
    happens. An energy window (if `meter` measures) spans exactly the measured iterations."""
    m = spec.measure
    step = planted_slowdown(prepared.step)
    t0 = time.perf_counter()
    with _nvtx("warmup"):
        for i in range(m.warmup):
            on_warmup(i, m.warmup)
            timer.time(step)
            if prepared.reset:
                prepared.reset()
    warmup_s = time.perf_counter() - t0
    samples: list[float] = []
    reports: list[StepReport | None] = []
    measured = 0.0
    gc.collect(1)  # the young generations only: a full pass over torch's objects costs ~0.2 s a point
    was_enabled = gc.isenabled()
    gc.disable()
    window = meter.start() if meter is not None and meter.method else None
    t_start = time.perf_counter()
    try:
        with _nvtx("measure"):
            while len(samples) < m.repeats or measured < m.min_seconds:
                with _nvtx(f"iter {len(samples)}"):
                    dt, out = timer.time(step)
                samples.append(dt)
                reports.append(out if isinstance(out, StepReport) else None)
                measured += dt
                if prepared.reset:
                    prepared.reset()
                on_sample(len(samples), m.repeats)
                if time.perf_counter() - t_start > m.max_seconds and len(samples) >= 1:
                    break
    finally:
        reading = window.stop() if window is not None else None
        if was_enabled:
            gc.enable()
    # Cut short by max_seconds: fewer samples than asked, which the point must say.
    capped = len(samples) < m.repeats or measured < m.min_seconds
    return {"samples_s": samples, "reports": reports, "warmup_s": warmup_s, "capped": capped,
            "energy": reading}


def planted_slowdown(step):
    """Test-only: PERFBENCH_TEST_SLOWDOWN=F (> 1) makes every timed step F times as long, by
    spinning (F - 1) x its own time after it. The gate's tests and scripts/bench_gate.py plant a
    known regression with it; unset (the normal case), the step is returned untouched."""
    import os

    raw = os.environ.get("PERFBENCH_TEST_SLOWDOWN", "").strip()
    factor = float(raw) if raw else 1.0
    if factor <= 1.0:
        return step

    def slowed():
        t0 = time.perf_counter()
        out = step()
        until = t0 + (time.perf_counter() - t0) * factor
        while time.perf_counter() < until:
            pass
        return out

    return slowed


def run_spec(spec: WorkloadSpec, store: ResultsStore, *, spec_path: str | None = None,
             sweep_id: str | None = None, progress: Progress | None = None,
             trace_dir: Path | None = None, subject: dict | None = None) -> RunResult:
    """Run every point of `spec`, storing each as it completes. Re-raises KeyboardInterrupt after
    marking the run interrupted; any other failure marks it failed and re-raises."""
    from perfbench.devices import resolve_device
    from perfbench.hardware.detect import fingerprint
    from perfbench.provenance import git_commit, software_versions

    progress = progress or Progress()
    device = resolve_device(spec.device)
    run_id = store.create_run(
        name=spec.name, spec=spec.stored(), spec_hash=spec.spec_hash(), fingerprint=fingerprint(),
        versions=software_versions(), commit=git_commit(), device=device, spec_path=spec_path,
        sweep_id=sweep_id, subject=subject,
    )
    result = RunResult(run_id=run_id, status="running")
    progress.on_run_start(run_id)
    backend = meter = None
    try:
        with sigterm_as_interrupt(), _nvtx(f"run {spec.name}"):
            ctx = replace(run_context(spec, device), run_id=run_id, artifact_dir=Path(store.path).parent)
            backend = backend_class(spec.backend["name"])(spec.backend_config, ctx)
            with _nvtx("load"):
                info = backend.load()
                store.set_backend_info(run_id, info, engine=backend.engine(), versions=software_versions())
            meter = _open_meter(spec, device)
            probes = _Probes(backend.timer(), backend.memory_probe(), meter)
            points = spec.points()
            measures_itself = type(spec.backend_config).capabilities.measures_itself
            for i, point in enumerate(points):
                progress.on_point_start(point, i, len(points))
                if measures_itself:  # a serving load point: the backend times every request itself
                    row, requests = _run_load_point(backend, point)
                    store.add_point(run_id, row, requests=requests)
                else:
                    row = _run_point(backend, point, spec, probes, progress, trace_dir, run_id)
                    store.add_point(run_id, row)
                result.points.append(row)
                progress.on_point_end(point, row)
        _conclude(result)
        store.finish_run(run_id, result.status, result.reason)
    except KeyboardInterrupt as exc:
        result.status, result.reason = "interrupted", (
            f"interrupted ({exc.args[0]})" if exc.args else "interrupted by the user (Ctrl-C)")
        _close_quietly(store, run_id, result)
        raise
    except BaseException as exc:
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        _close_quietly(store, run_id, result)
        raise
    finally:
        if backend is not None:
            backend.close()
        if meter is not None:
            meter.close()
    return result


def run_context(spec: WorkloadSpec, device: str) -> RunContext:
    """What the backend is told about the run (not the whole spec)."""
    return RunContext(model=spec.model_ref, phase=spec.phase, dtype=spec.dtype, device=device,
                      seed=spec.seed, cache_dir=cache_dir())


def cache_dir() -> Path:
    """Where derived model artefacts (tokenizers, GGUF files) are built once and reused."""
    import os

    return Path(os.environ.get("PERFBENCH_CACHE") or Path.home() / ".cache" / "perfbench")


def _open_meter(spec: WorkloadSpec, device: str):
    from perfbench.energy import open_meter

    return open_meter(spec.measure.energy, device)


@dataclass
class _Probes:
    """The backend's clock and memory probe, and the run's energy meter."""

    timer: Any
    memory: Any
    meter: Any


def _conclude(result: RunResult) -> None:
    """Status and reason of a run whose points all ran."""
    failed = [p for p in result.points if p["status"] == "failed"]
    capped = [p for p in result.points if p.get("capped")]
    result.status = "completed"
    reasons = [f"{len(failed)} of {len(result.points)} points failed"] if failed else []
    if capped:
        reasons.append(f"{len(capped)} point(s) cut short by measure.max_seconds (fewer samples than asked)")
    invalid = [p for p in result.points if p.get("point_valid") is False]
    if invalid:
        reasons.append(f"{len(invalid)} load point(s) invalid: the client was the bottleneck (invalid_reason)")
    result.reason = "; ".join(reasons) or None
    if failed and len(failed) == len(result.points):
        # Nothing was measured: that is a failed run (exit 1), not a completed one.
        result.status = "failed"
        result.reason = (f"all {len(failed)} points failed; first: batch {failed[0]['batch_size']}: "
                         f"{failed[0]['error']}")[:2000]


def _close_quietly(store: ResultsStore, run_id: str, result: RunResult, attempts: int = 3) -> None:
    """Mark the run closed without hiding the error that ended it. A store locked by another
    writer (often what ended the run) is tried again a few times with back-off; if it still fails,
    the original exception propagates anyway (the run then reads as interrupted later)."""
    for i in range(attempts):
        try:
            store.finish_run(run_id, result.status, result.reason)
            return
        except KeyboardInterrupt:
            return
        except Exception:
            if i + 1 < attempts:
                time.sleep(0.5 * 2 ** i)


def _run_load_point(backend, point: Point) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A point the backend measures itself (`Capabilities.measures_itself`): one call, its result
    fields and per-request rows. A failure is the point's, and the run moves on."""
    base = {"batch_size": point.batch_size, "seq_len": point.seq_len, "new_tokens": point.new_tokens,
            "load_point": getattr(point.load, "label", None)}
    try:
        fields, requests = backend.run_load(point)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
                "traceback": traceback.format_exc(limit=8)[-4000:]}, []
    return {**base, "status": "ok", **fields}, requests


def _run_point(backend, point: Point, spec: WorkloadSpec, probes: _Probes, progress: Progress,
               trace_dir: Path | None, run_id: str) -> dict[str, Any]:
    base = {"batch_size": point.batch_size, "seq_len": point.seq_len, "new_tokens": point.new_tokens}
    label = f"b{point.batch_size} s{point.seq_len}" + (f" n{point.new_tokens}" if point.new_tokens else "")
    meter = probes.meter
    try:
        with _nvtx(f"point {label}"):
            prepared = backend.prepare(point)
            idle_w = meter.idle_baseline(spec.measure.idle_seconds) if meter.method else None
            probes.memory.reset()  # after prepare: decode's untimed cache-building prefill is not the point's peak
            raw = measure_point(prepared, probes.timer, spec, progress.on_sample, progress.on_warmup, meter)
            peak = probes.memory.read()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        # A failed point is data (e.g. OOM at batch 128), not the end of the run.
        backend.release()
        kind = "out of memory" if _is_oom(exc) else type(exc).__name__
        return {**base, "status": "failed",
                "error": f"{kind}: {exc}".strip()[:2000],
                "traceback": traceback.format_exc(limit=8)[-4000:]}
    trace_path, capture_error = None, None
    if spec.measure.trace and trace_dir is not None:
        try:  # the timed samples stand whatever the profiler does
            trace_path = _capture(prepared, probes.timer, trace_dir, run_id, label)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            capture_error = f"trace capture failed: {type(exc).__name__}: {exc}"[:500]
    stats = summarize(raw["samples_s"])
    row = {**base, "status": "ok", **stats, "samples_s": raw["samples_s"], "warmup_s": raw["warmup_s"],
           "peak_memory_bytes": peak, "memory_kind": probes.memory.kind, "trace_path": trace_path,
           **prepared.info,
           **backend.summarize(point, raw["reports"], stats["latency_median_s"])}
    row.update(_energy(raw, row, meter, idle_w))
    if raw.get("capped"):
        row["capped"] = (f"measure.max_seconds ({spec.measure.max_seconds:g} s) reached after "
                         f"{len(raw['samples_s'])} of {spec.measure.repeats} repeats")
    if trace_path:
        row.update(_trace_summary(trace_path, stats["latency_median_s"]))
    elif capture_error:
        row["trace_error"] = capture_error
    backend.release()
    return row


def _energy(raw: dict[str, Any], row: dict[str, Any], meter, idle_w: float | None) -> dict[str, Any]:
    """Energy fields of the measured iterations: joules per token over every token they did."""
    from perfbench.energy import energy_fields

    tokens = (row.get("tokens_per_step") or 0) * len(raw["samples_s"])
    return energy_fields(raw.get("energy"), meter, tokens or None, idle_w)


def _trace_summary(path: str, timed_median_s: float) -> dict[str, Any]:
    """Per-run trace figures stored with the point, with the traced span next to the timed median
    of the same point so nobody mistakes profiler overhead for the workload's."""
    try:
        from perfbench.trace import analyze, profiler_overhead

        an = analyze(path)
        return {"trace_figures": an.as_full_dict(), **profiler_overhead(an, timed_median_s * 1e6)}
    except Exception as exc:  # the trace file stays; its analysis can be rerun with `perfbench trace`
        return {"trace_error": f"{type(exc).__name__}: {exc}"[:500]}


def _capture(prepared: PreparedPoint, timer, trace_dir: Path, run_id: str, label: str) -> str:
    """Profile one extra iteration after the timed ones (never a timed one)."""
    from perfbench.trace.capture import capture_trace

    out = Path(trace_dir) / run_id / f"{label.replace(' ', '_')}.json.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with _nvtx("trace"):
        capture_trace(prepared.step, out, cuda=timer.device == "cuda")
    if prepared.reset:
        prepared.reset()
    return str(out.resolve())  # absolute: later readers (trace run, roofline, dashboard) may run elsewhere
