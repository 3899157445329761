"""The backend interface the runner drives.

A backend turns (spec, measurement point) into a zero-argument `step` the runner can time. It owns
model construction and device placement; the runner owns warm-up, repetition, timing, statistics
and storage. Backends that time themselves (e.g. a server reporting its own latencies) can still
plug in by returning a step that blocks until the work is done.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from perfbench.spec import WorkloadSpec


class BackendConfig(BaseModel):
    """Base of every backend's config; `name` selects the backend."""

    model_config = ConfigDict(extra="forbid")

    name: str


@dataclass
class Point:
    """One measurement point of a workload."""

    batch_size: int
    seq_len: int
    new_tokens: int

    def tokens_per_step(self, phase: str) -> int:
        """Tokens one timed step processes: prompt tokens for prefill, produced tokens otherwise."""
        if phase == "prefill":
            return self.batch_size * self.seq_len
        return self.batch_size * self.new_tokens


@dataclass
class Workload:
    """What the runner times for one point.

    `step` does one measured iteration and must not return before the work is enqueued; the
    runner synchronises the device around it. `reset` (optional, untimed) restores state between
    iterations, e.g. crops a KV cache back to the context length.
    """

    step: Callable[[], Any]
    reset: Callable[[], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """Lifecycle: `load()` once per run, `prepare(point)` per point, `close()` at the end."""

    def __init__(self, config: BackendConfig, spec: "WorkloadSpec", device: str):
        self.config = config
        self.spec = spec
        self.device = device  # "cpu" or "cuda"

    @abstractmethod
    def load(self) -> dict[str, Any]:
        """Build or load the model; return facts worth storing (parameter count, load time...)."""

    @abstractmethod
    def prepare(self, point: Point) -> Workload:
        """Build inputs (and caches) for one point and return the step to time."""

    def release(self) -> None:
        """Free per-point memory before the next point (after an OOM in particular)."""

    def close(self) -> None:
        """Free everything."""
