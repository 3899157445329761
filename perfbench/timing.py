"""Device-aware timing and peak-memory probes.

GPU work is timed with CUDA events recorded on the stream and read after a synchronise, so the
number is device time for the step, not the host's enqueue time. CPU work uses perf_counter_ns.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable


class Timer:
    """Times one call of `fn` in seconds, with the device synchronised before and after."""

    def __init__(self, device: str):
        self.device = device
        if device == "cuda":
            import torch

            self._torch = torch
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def sync(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any]) -> float:
        if self.device == "cuda":
            torch = self._torch
            torch.cuda.synchronize()
            self._start.record()
            fn()
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e9


_HWM = re.compile(rb"^VmHWM:\s+(\d+)\s+kB", re.M)


class PeakMemory:
    """Peak device memory for a point (GPU allocator), or the process's peak RSS on CPU.

    On Linux the RSS high-water mark is reset per point through /proc/self/clear_refs, so each
    point reports its own peak rather than the run's.
    """

    def __init__(self, device: str):
        self.device = device
        self.kind = "cuda_max_allocated" if device == "cuda" else "peak_rss"

    def reset(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "peak_rss"
        except OSError:
            self.kind = "peak_rss_process_lifetime"

    def read(self) -> int | None:
        if self.device == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        try:
            m = _HWM.search(Path("/proc/self/status").read_bytes())
            if m:
                return int(m.group(1)) * 1024
        except OSError:
            pass
        try:
            import resource
            import sys

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return int(rss if sys.platform == "darwin" else rss * 1024)
        except Exception:  # pragma: no cover - non-POSIX
            return None
