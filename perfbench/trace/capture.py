"""Capture one profiled call as a gzipped Chrome trace (the only torch-dependent part of the tracer).

torch is imported inside the function so that analysing traces never pays for (or needs) torch.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from perfbench.errors import InputError


def capture_trace(step: Callable[[], None], out_path: Path, *, cuda: bool) -> Path:
    """Profile exactly one call of `step` and write it to `out_path` (must end in `.json.gz`).

    CPU activity is always recorded, CUDA activity when `cuda`; `record_shapes=True` so operator
    rows carry input shapes. CUDA is synchronised before the profiler stops, otherwise kernels still
    in flight would be missing from the trace and the GPU figures would be short. Warm up `step`
    before calling this: the first call's lazy initialisation is not the workload. Returns the path.
    """
    out_path = Path(out_path)
    if not out_path.name.endswith(".json.gz"):
        raise InputError(f"{out_path}: trace output must end in .json.gz")
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if cuda:
        if not torch.cuda.is_available():
            raise InputError("capture_trace(cuda=True) but no CUDA device is available")
        activities.append(ProfilerActivity.CUDA)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if cuda:
        torch.cuda.synchronize()  # earlier work must not leak into the window
    with profile(activities=activities, record_shapes=True) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=out_path.parent, prefix=".trace-")
    os.close(fd)
    tmp_gz = tmp + ".gz"
    try:
        prof.export_chrome_trace(tmp)
        with open(tmp, "rb") as src, gzip.open(tmp_gz, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp_gz, out_path)  # atomic: readers never see a half-written trace
    finally:
        for p in (tmp, tmp_gz):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    return out_path
