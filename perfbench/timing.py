"""Clocks and peak-memory probes that backends hand the runner.

GPU work is timed with CUDA events recorded on the stream and read after a synchronise, so the
number is device time for the step, not the host's enqueue time. CPU work (and engines whose calls
block until done) uses perf_counter_ns. Every timer's `time(fn)` returns (seconds, fn's value), so
a step can also report what it did.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from perfbench.backends.base import WallTimer


class CudaTimer:
    """Device time of one call, the device synchronised before and after."""

    device = "cuda"

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self._torch.cuda.synchronize()
        self._start.record()
        out = fn()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3, out


def timer_for(device: str) -> Any:
    """CUDA events on a GPU, the host wall clock elsewhere."""
    return CudaTimer() if device == "cuda" else WallTimer()


_HWM = re.compile(rb"^VmHWM:\s+(\d+)\s+kB", re.M)


class PeakRSS:
    """The process's peak RSS. On Linux the high-water mark is reset per point through
    /proc/self/clear_refs, so each point reports its own peak rather than the run's."""

    kind = "peak_rss"

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "peak_rss"
        except OSError:
            self.kind = "peak_rss_process_lifetime"

    def read(self) -> int | None:
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


class CudaPeakMemory:
    """The torch caching allocator's peak for the point."""

    kind = "cuda_max_allocated"

    def reset(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    def read(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated())


class NvmlDeviceMemory:
    """Device memory in use (NVML), read at the end of the point: for engines that pre-allocate a
    pool (vLLM), where the torch allocator's peak says nothing about the engine's footprint."""

    kind = "nvml_device_used"

    def __init__(self, index: int = 0):
        self.index = index

    def reset(self) -> None:
        pass

    def read(self) -> int | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
        except Exception:  # noqa: BLE001 - no NVML: no figure, never a failed point
            return None


def memory_probe_for(device: str) -> Any:
    return CudaPeakMemory() if device == "cuda" else PeakRSS()
