"""Trace files a store names: hostile paths, bounded reads, cached analyses (trace and roofline pages).

Why several places to look: `perfbench run` stores a trace's path as given (relative to the folder it
ran in), and stores get moved; traces live in `<store folder>/traces/<run id>/`. Only regular files
are read (no devices, FIFOs, folders), at most MAX_TRACE_BYTES, through perfbench's bounded parser.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

from perfbench.dashboard import source
from perfbench.errors import PerfbenchError
from perfbench.textsafe import plain

MAX_TRACE_BYTES = 1 << 30


def resolve_trace(path: Any, run_id: str) -> Path | None:
    """The trace file a point names, or None. Why several places: `perfbench run` stores the path as
    given (relative to the directory it ran in), and stores get moved; traces live in
    `<store folder>/traces/<run id>/`. Only regular files count (no devices, FIFOs, folders)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        return None
    given = Path(path)
    folder = source.store_path().parent
    candidates = [given] + ([folder / given] if not given.is_absolute() else [])
    candidates.append(folder / "traces" / str(run_id) / given.name)
    for cand in candidates:
        try:
            if stat.S_ISREG(os.stat(cand).st_mode):
                return cand
        except (OSError, ValueError):
            continue
    return None


def trace_analysis(path: Any, run_id: str) -> tuple[Any, str | None, tuple | None]:
    """(Analysis or None, why not, cache key (path, mtime, size) or None) for a point's trace."""
    found = resolve_trace(path, run_id)
    if found is None:
        return None, f"trace file not found: {plain(path)} (moved or deleted?)", None
    st = os.stat(found)
    if st.st_size > MAX_TRACE_BYTES:
        from perfbench.trace.textio import human

        return None, (f"trace {plain(found)} is {human(st.st_size)}, above what the dashboard reads; use "
                      f"`perfbench trace analyze {found} --max-trace-bytes 8G`"), None
    key = (str(found), st.st_mtime_ns, st.st_size)
    an, why = _analysis_cached(*key)
    return an, why, key


@functools.lru_cache(maxsize=8)
def _analysis_cached(path: str, mtime_ns: int, size: int) -> tuple[Any, str | None]:
    """The bounded analysis of one trace file version (mtime and size are in the key, so a rewritten
    file is read again). Failures are cached too: a malformed trace is not re-read on every refresh."""
    from perfbench.trace.metrics import analyze

    try:
        return analyze(path, max_bytes=MAX_TRACE_BYTES), None
    except (PerfbenchError, OSError, ValueError, MemoryError) as exc:
        return None, f"trace unreadable: {plain(exc)}"
