"""The backend interface the runner drives.

A backend turns (run context, measurement point) into a `PreparedPoint`: a zero-argument `step` the
runner times. The backend owns what only it knows: model loading, device placement, its timer and
memory probe, what a step really produced (tokens, the engine's own timings) and how those become
result fields. The runner owns warm-up, repetition, statistics, energy and storage.

Torch-free on purpose: configs import this module, and specs must validate without torch.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from perfbench.models.ref import ModelRef


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, checked when a spec is validated (before anything runs)."""

    phases: tuple[str, ...]
    devices: tuple[str, ...]
    model_kinds: tuple[str, ...]  # synthetic | hf | gguf
    batching: bool = True  # batches above 1
    #: the backend measures a whole point itself (`Backend.run_load`): a serving load point is many
    #: concurrent requests timed per request, not one step the runner repeats (docs/serving.md)
    measures_itself: bool = False


class BackendConfig(BaseModel):
    """Base of every backend's config; `name` selects the backend. Subclasses set `capabilities`
    and may add `check(spec_fields) -> problems` for rules that span the spec."""

    model_config = ConfigDict(extra="forbid")

    name: str
    capabilities: ClassVar[Capabilities]

    def check(self, ctx: "SpecFacts") -> list[tuple[str, str]]:
        """Cross-field rules of this backend: (field path, message) per problem."""
        return []


@dataclass(frozen=True)
class SpecFacts:
    """What a backend config may check a spec against (no torch, nothing loaded)."""

    phase: str
    dtype: str
    device: str
    batch_sizes: tuple[int, ...]
    seq_len: int
    new_tokens: int
    model: "ModelRef"


@dataclass(frozen=True)
class Point:
    """One measurement point of a workload."""

    batch_size: int
    seq_len: int
    new_tokens: int
    load: Any = None  # phase serve: the load point (perfbench.serving.spec.ServePoint: plan + load section)

    def tokens_per_step(self, phase: str) -> int:
        """Tokens one step is asked to process: prompt tokens for prefill, new tokens otherwise."""
        if phase == "prefill":
            return self.batch_size * self.seq_len
        return self.batch_size * self.new_tokens


@dataclass(frozen=True)
class RunContext:
    """What a backend is given instead of the whole workload spec."""

    model: "ModelRef"
    phase: str
    dtype: str
    device: str  # "cpu" or "cuda", resolved
    seed: int
    cache_dir: Path  # where derived artefacts (tokenizers, GGUF files) are built and reused
    run_id: str | None = None
    artifact_dir: Path | None = None  # kept with the run's store (a started server's log)


@dataclass
class StepReport:
    """What one step really did. Returned by a step that knows more than its wall time.

    tokens_out: tokens actually produced (generation can stop early); parts_s: sub-timings taken
    with perfbench's own clock inside the step (`pp`, `tg`); engine: the engine's own counters;
    output: what the step produced, for checks (never stored)."""

    tokens_out: int | None = None
    parts_s: dict[str, float] = field(default_factory=dict)
    engine: dict[str, float] = field(default_factory=dict)
    output: Any = None


@dataclass
class PreparedPoint:
    """What the runner times for one point.

    `step` does one measured iteration and must not return before the work is enqueued; the
    backend's timer synchronises the device around it. It may return a `StepReport`. `reset`
    (optional, untimed) restores state between iterations, e.g. crops a KV cache back to the
    context length. `info` holds result fields known at preparation (`context_len`, `kv_cache`).
    """

    step: Callable[[], Any]
    reset: Callable[[], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class WallTimer:
    """Host wall-clock timer (perf_counter_ns): right for CPU work and for engines whose calls
    block until done. Returns (seconds, the step's return value)."""

    device = "cpu"

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        t0 = time.perf_counter_ns()
        out = fn()
        return (time.perf_counter_ns() - t0) / 1e9, out


class Backend(ABC):
    """Lifecycle: `load()` once per run, `prepare(point)` per point, `close()` at the end."""

    def __init__(self, config: BackendConfig, ctx: RunContext):
        self.config = config
        self.ctx = ctx

    @property
    def device(self) -> str:
        return self.ctx.device

    @abstractmethod
    def load(self) -> dict[str, Any]:
        """Build or load the model; return facts worth storing (parameter count, load time...)."""

    @abstractmethod
    def prepare(self, point: Point) -> PreparedPoint:
        """Build inputs (and caches) for one point and return the step to time."""

    def engine(self) -> dict[str, Any]:
        """The engine under test, for provenance: name, version and build (commit) if known."""
        return {"name": self.config.name}

    def timer(self) -> Any:
        """The clock for this backend's steps (default: host wall clock)."""
        return WallTimer()

    def memory_probe(self) -> Any:
        """Peak memory of a point (default: the process's peak RSS)."""
        from perfbench.timing import PeakRSS

        return PeakRSS()

    def summarize(self, point: Point, reports: list[StepReport], latency_median_s: float) -> dict[str, Any]:
        """Result fields from what the steps reported (default: tokens from `tokens_out`)."""
        from perfbench.reports import tokens_fields

        return tokens_fields(point, self.ctx.phase, reports, latency_median_s)

    def run_load(self, point: Point) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Backends whose capabilities say `measures_itself`: run one whole point and return its
        result fields (perfbench.schema) and its per-request rows (the store's `requests` table)."""
        raise NotImplementedError(f"backend {self.config.name} does not measure points itself")

    def release(self) -> None:
        """Free per-point memory before the next point (after an OOM in particular)."""

    def close(self) -> None:
        """Free everything."""
