"""Read a PyTorch-profiler (Kineto) Chrome trace into a few numeric pandas tables, fast.

Why not `json.load` and one DataFrame of dicts (what HTA does): a 900k-event trace is ~300 MB of
JSON, and its full Python object tree needs several GB and tens of seconds. Instead the decompressed
text is cut into ~8 MB slices at event boundaries and each slice is parsed (orjson when available)
and reduced at once to the few fields the metrics need (category, name, pid/tid, ts, dur,
correlation); the slice's objects are then freed. Peak memory is one slice plus the columns.

A cut is placed just before a `{` that follows `}` `,` (whitespace allowed): the start of the next
element of `traceEvents` when the file is well formed. A wrong cut (inside a nested object or a
string) always leaves the slice unbalanced, so it fails to parse and is joined with the next one;
a real syntax error surfaces as `InputError` naming the file. Very large traces can be parsed by
forked worker processes (opt-in, see `load_trace`). Nothing here imports torch.

Timestamps: Chrome traces are in microseconds; the tables keep `ts_us`/`dur_us` as float64 relative
to the earliest recognised event (`Trace.t0_us` holds the absolute origin). Epoch-based timestamps
(~1.7e15 us) only carry ~0.25 us of precision once parsed into a double; that limit is the JSON
number's, not this reader's.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import re
import sys
import threading
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from perfbench.errors import InputError

try:  # orjson is several times faster; json is the always-available fallback
    import orjson as _orjson

    _loads = _orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None
    _loads = json.loads

# Event kinds, as small ints in the columns (names in KIND_NAMES).
CPU_OP, ANNOTATION, MODULE, RUNTIME, DRIVER, KERNEL, MEMCPY, MEMSET = range(8)
KIND_NAMES = {
    CPU_OP: "cpu_op",
    ANNOTATION: "user_annotation",
    MODULE: "python_function",
    RUNTIME: "cuda_runtime",
    DRIVER: "cuda_driver",
    KERNEL: "kernel",
    MEMCPY: "gpu_memcpy",
    MEMSET: "gpu_memset",
}

# Category spellings seen across Kineto versions (old traces: "Operator", "Kernel", "Runtime", ...).
# Anything else (flows "ac2g"/"fwdbwd", "cuda_sync", "gpu_user_annotation", "overhead", "Trace",
# metadata without a category) is skipped.
_CATEGORY_KIND = {
    "cpu_op": CPU_OP,
    "operator": CPU_OP,
    "user_annotation": ANNOTATION,
    "python_function": MODULE,
    "cuda_runtime": RUNTIME,
    "runtime": RUNTIME,
    "cuda_driver": DRIVER,
    "driver": DRIVER,
    "kernel": KERNEL,
    "gpu_memcpy": MEMCPY,
    "memcpy": MEMCPY,
    "gpu_memset": MEMSET,
    "memset": MEMSET,
}

_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_MODULE_PREFIX = "nn.Module:"
_BOUNDARY_RE = re.compile(rb"\}\s*,\s*$")  # what must precede an element-starting "{"
_SLICE_BYTES = 8 << 20  # JSON text parsed at once: bounds the transient Python objects
_BLOCK_BYTES = 32 << 20  # decompressed block handed over by the reader
_GZ_READ_BYTES = 4 << 20  # compressed bytes read at a time


@dataclass
class Trace:
    """One parsed trace. Tables hold only what the analysis needs; times are float64 microseconds.

    - `host`: cpu_op, user_annotation and `nn.Module:` python_function events (kind, name, pid, tid,
      ts_us, dur_us). Other python_function events (with_stack) are dropped: they are numerous and
      no metric uses them.
    - `calls`: cuda_runtime / cuda_driver API calls (hip* calls included), with `correlation`.
    - `gpu`: kernel, gpu_memcpy and gpu_memset activities, with `device` (pid), `stream` (tid) and
      `correlation`.
    - `steps`: `ProfilerStep#N` windows from the host side (step, ts_us, dur_us), possibly empty.
    """

    path: str
    meta: dict[str, Any]
    t0_us: float
    n_events: int
    host: pd.DataFrame
    calls: pd.DataFrame
    gpu: pd.DataFrame
    steps: pd.DataFrame

    @property
    def has_gpu(self) -> bool:
        return len(self.gpu) > 0


class _Columns:
    """Growing per-table columns; each parsed slice is appended as numpy arrays, not Python objects."""

    def __init__(self, names: tuple[str, ...], dtypes: tuple[Any, ...]):
        self.names = names
        self.dtypes = dtypes
        self.parts: list[list[np.ndarray]] = [[] for _ in names]

    def add(self, cols: list[list[Any]]) -> None:
        if not cols[0]:
            return
        for name, part, values, dtype in zip(self.names, self.parts, cols, self.dtypes):
            try:
                part.append(np.asarray(values, dtype=dtype))
            except (TypeError, ValueError, OverflowError):
                if name in ("ts", "dur"):  # a time that is no number would poison every figure
                    bad = next(v for v in values if not _is_number(v))
                    raise TypeError(f"'{name}' must be a number of microseconds, got {bad!r}") from None
                # e.g. a string pid or tid: keep it, as a stable code
                part.append(np.asarray([_coerce_num(v) for v in values], dtype=dtype))

    def frame(self) -> dict[str, np.ndarray]:
        out = {}
        for name, part, dtype in zip(self.names, self.parts, self.dtypes):
            out[name] = np.concatenate(part) if part else np.empty(0, dtype=dtype)
        return out


_ODD_IDS: dict[Any, int] = {}


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError, OverflowError):
        return False
    return not isinstance(v, bool)


def _coerce_num(v: Any) -> float:
    """Numbers pass; anything else (a string pid, None) gets a stable negative code."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    if v is None:
        return -1
    try:
        return float(v)
    except (TypeError, ValueError):
        return -(1_000_000 + _ODD_IDS.setdefault(str(v), len(_ODD_IDS)))


class _Extractor:
    """Reduces lists of event dicts to columns. The inner loop is the hot path: keep it plain."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.kind_of_cat: dict[Any, int] = {}
        self.host = _Columns(("kind", "name", "pid", "tid", "ts", "dur"), (np.int8, np.int32, np.int64, np.int64, np.float64, np.float64))
        self.calls = _Columns(
            ("kind", "name", "pid", "tid", "ts", "dur", "correlation"),
            (np.int8, np.int32, np.int64, np.int64, np.float64, np.float64, np.int64),
        )
        self.gpu = _Columns(
            ("kind", "name", "pid", "tid", "ts", "dur", "correlation"),
            (np.int8, np.int32, np.int64, np.int64, np.float64, np.float64, np.int64),
        )
        self.n_events = 0

    def result(self) -> dict[str, Any]:
        """Picklable columns of what was fed, for merging in the parent process."""
        names = [None] * len(self.names)
        for n, c in self.names.items():
            names[c] = n
        return {"names": names, "host": self.host.frame(), "calls": self.calls.frame(), "gpu": self.gpu.frame(), "n": self.n_events}

    def merge(self, res: dict[str, Any]) -> None:
        """Append a worker's columns, remapping its name codes onto ours."""
        names = self.names
        lut = np.empty(max(1, len(res["names"])), dtype=np.int32)
        for i, n in enumerate(res["names"]):
            code = names.get(n)
            if code is None:
                code = names[n] = len(names)
            lut[i] = code
        for table, cols in ((self.host, res["host"]), (self.calls, res["calls"]), (self.gpu, res["gpu"])):
            if len(cols["ts"]) == 0:
                continue
            for part, name in zip(table.parts, table.names):
                part.append(lut[cols[name]] if name == "name" else cols[name])
        self.n_events += res["n"]

    def _classify(self, cat: Any) -> int:
        kind = _CATEGORY_KIND.get(str(cat).lower(), -1) if cat is not None else -1
        self.kind_of_cat[cat] = kind
        return kind

    def feed(self, events: list[Any]) -> None:
        if not isinstance(events, list):
            raise TypeError("traceEvents is not a list")
        self.n_events += len(events)
        names = self.names
        kind_get = self.kind_of_cat.get
        h_k, h_n, h_p, h_t, h_ts, h_d = hcols = [[], [], [], [], [], []]
        c_k, c_n, c_p, c_t, c_ts, c_d, c_c = ccols = [[], [], [], [], [], [], []]
        g_k, g_n, g_p, g_t, g_ts, g_d, g_c = gcols = [[], [], [], [], [], [], []]
        for e in events:
            cat = e.get("cat")
            kind = kind_get(cat)
            if kind is None:
                kind = self._classify(cat)
            if kind < 0 or e.get("ph") != "X":
                continue
            name = e.get("name")
            code = names.get(name)
            if code is None:
                if kind == MODULE and not str(name).startswith(_MODULE_PREFIX):
                    continue
                code = names[name] = len(names)
            elif kind == MODULE and not str(name).startswith(_MODULE_PREFIX):
                continue
            if kind <= MODULE:
                h_k.append(kind)
                h_n.append(code)
                h_p.append(e.get("pid"))
                h_t.append(e.get("tid"))
                h_ts.append(e["ts"])
                h_d.append(e.get("dur", 0))
                continue
            args = e.get("args")
            corr = args.get("correlation", -1) if args else -1
            if kind <= DRIVER:
                c_k.append(kind)
                c_n.append(code)
                c_p.append(e.get("pid"))
                c_t.append(e.get("tid"))
                c_ts.append(e["ts"])
                c_d.append(e.get("dur", 0))
                c_c.append(corr)
            else:
                g_k.append(kind)
                g_n.append(code)
                g_p.append(e.get("pid"))
                g_t.append(e.get("tid"))
                g_ts.append(e["ts"])
                g_d.append(e.get("dur", 0))
                g_c.append(corr)
        self.host.add(hcols)
        self.calls.add(ccols)
        self.gpu.add(gcols)


def open_text(path: Path) -> Iterator[bytes]:
    """Yield decompressed blocks of ~32 MB; gzip is detected by its magic bytes, not the name.

    gzip is inflated by a helper thread (zlib releases the GIL) so it overlaps the parsing. Blocks
    are large on purpose: the thread needs the GIL between blocks, and the parser holds it for tens
    of milliseconds per slice, so small blocks would starve it."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read trace ({exc.strerror or exc})") from None
    with fh:
        magic = fh.read(2)
        fh.seek(0)
        if magic != b"\x1f\x8b":
            while True:
                try:
                    block = fh.read(_BLOCK_BYTES)
                except OSError as exc:
                    raise InputError(f"{path}: cannot read trace ({exc.strerror or exc})") from None
                if not block:
                    return
                yield block
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        worker = threading.Thread(target=_inflate, args=(fh, q, stop), name="perfbench-trace-gunzip", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, EOFError):
                        raise InputError(f"{path}: truncated gzip file (compressed data ends early)")
                    raise InputError(f"{path}: corrupt gzip data ({item})")
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                worker.join(0.01)


def _inflate(fh: Any, q: queue.Queue, stop: threading.Event) -> None:
    """Producer thread: inflate gzip members (concatenated members allowed) into ~32 MB blocks."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        d = zlib.decompressobj(wbits=31)
        pending = b""
        started = False
        while not stop.is_set():
            data = pending or fh.read(_GZ_READ_BYTES)
            pending = b""
            if not data:
                if started and not d.eof:
                    raise EOFError("compressed data ends before the end-of-stream marker")
                break
            started = True
            out = d.decompress(data, _BLOCK_BYTES)
            while True:
                if out and not put(out):
                    return
                if d.eof:
                    pending = d.unused_data
                    d = zlib.decompressobj(wbits=31)
                    started = bool(pending.strip(b"\x00"))
                    if not started:
                        pending = b""
                    break
                tail = d.unconsumed_tail
                if not tail:
                    break
                out = d.decompress(tail, _BLOCK_BYTES)
        put(None)
    except (zlib.error, EOFError, OSError) as exc:
        put(exc)
    except BaseException as exc:  # pragma: no cover - never leave the consumer waiting
        put(exc)


def _find_events_start(buf: bytes) -> tuple[int, bool] | None:
    """Position of the first byte after `[` that opens the events list, and whether the document is
    an object (`{"traceEvents": [...]}`) rather than a bare list. None: need more data."""
    stripped = buf.lstrip()
    if not stripped:
        return None
    offset = len(buf) - len(stripped)
    if stripped[:1] == b"[":
        return offset + 1, False
    if stripped[:1] != b"{":
        raise ValueError("not a JSON object or list")
    m = re.search(rb'"traceEvents"\s*:\s*\[', buf)
    if m is None:
        return None
    return m.end(), True


def _last_boundary(buf: bytes, lo: int, hi: int) -> int:
    """Index of the last `{` in buf[lo:hi] that looks like the start of a list element (preceded by
    `}` `,` and whitespace), or -1. Scans backwards, so it usually stops within one event."""
    pos = hi
    for _ in range(10_000):
        pos = buf.rfind(b"{", lo, pos)
        if pos <= lo:
            return -1
        if _BOUNDARY_RE.search(buf, max(lo, pos - 64), pos):
            return pos
    return -1


def _parse_error(path: Path, exc: Exception, offset: int, at_end: bool) -> InputError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    msg = re.sub(r":? line \d+ column \d+ \(char \d+\)$", "", msg)  # positions in our slice, not the file
    if at_end:
        return InputError(f"{path}: truncated or malformed JSON: the trace ends before its events list is closed ({msg})")
    return InputError(f"{path}: malformed JSON near byte {offset} of the decompressed text ({msg})")


def load_trace(path: str | Path, *, workers: int | None = None) -> Trace:
    """Parse a `.json` or `.json.gz` PyTorch-profiler trace. Raises InputError (exit 2) when the file
    is missing, empty, truncated, not JSON, or not a profiler trace.

    `workers`: processes that parse slices in parallel (opt-in; also PERFBENCH_TRACE_WORKERS).
    None/0/1 = in-process. Forked workers are used only for traces of ~192 MB of JSON or more and
    only where forking is safe (no other Python threads, torch not imported). Why opt-in: on the
    2-vCPU reference VM the parse is memory-bound and two workers gave 2.2-5.4 s against a steadier
    3.1-3.7 s in-process for 890k events, at twice the memory."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such trace file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a trace file")
    n_workers = _choose_workers(path, workers)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # parsing allocates millions of containers; cyclic GC passes would triple the time
    pool = None
    try:
        if n_workers > 1:
            pool = _start_pool(n_workers)
        return _load(path, pool)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if gc_was_enabled:
            gc.enable()


_PARALLEL_MIN_BYTES = 192 << 20  # below this, pipeline fill/drain costs more than 2 cores win


def _choose_workers(path: Path, workers: int | None) -> int:
    if workers is None:
        try:
            workers = int(os.environ.get("PERFBENCH_TRACE_WORKERS", "0"))
        except ValueError:
            workers = 0
    if workers <= 1 or _estimated_json_bytes(path) < _PARALLEL_MIN_BYTES or not _fork_is_safe():
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(workers, max(cpus, 1)) if cpus > 1 else 0


def _estimated_json_bytes(path: Path) -> int:
    """Uncompressed size: the gzip trailer's ISIZE (mod 4 GiB) or the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b" or size < 18:
                return size
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        return max(isize, size * 4)
    except OSError:
        return 0


def _fork_is_safe() -> bool:
    """Fork workers only from a process with no other Python threads and without torch loaded
    (torch's thread pools and a CUDA context do not survive fork). numpy's idle BLAS threads are
    fine: OpenBLAS re-initialises itself in the child."""
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return False
    if "torch" in sys.modules:
        return False
    return threading.active_count() == 1


def _start_pool(n: int) -> Any:
    import multiprocessing as mp
    import warnings

    with warnings.catch_warnings():  # 3.12+ warns about fork with (BLAS) threads; see above
        warnings.simplefilter("ignore", DeprecationWarning)
        return mp.get_context("fork").Pool(n)


def _parse_slice(raw: bytes) -> tuple[str, Any]:
    """Worker: parse one slice of the events list and reduce it to columns."""
    body = raw.rstrip()
    if body.endswith(b","):
        body = body[:-1]
    gc.disable()
    try:
        events = _loads(b"[" + body + b"]")
    except ValueError:
        return "json", None
    ex = _Extractor()
    try:
        ex.feed(events)
    except (AttributeError, TypeError, KeyError) as exc:
        return "event", str(exc)
    del events
    return "ok", ex.result()


def _slices(path: Path, meta: dict[str, Any]) -> Iterator[tuple[str, bytes, int]]:
    """Cut the decompressed text into ("slice", raw, offset) pieces of whole list elements, then
    one ("tail", raw, offset) with the rest (the last elements and whatever closes the document).
    The head (keys before traceEvents) goes into `meta`."""
    buf = b""
    consumed = 0
    start: tuple[int, bool] | None = None
    for block in open_text(path):
        buf = buf + block if buf else block
        if start is None:
            try:
                start = _find_events_start(buf)
            except ValueError:
                raise InputError(f"{path}: not a PyTorch profiler trace (not a JSON object with 'traceEvents')") from None
            if start is None:
                if len(buf) > 64 << 20:
                    raise InputError(f"{path}: not a PyTorch profiler trace (no 'traceEvents' list found)")
                continue
            begin, is_obj = start
            meta["__is_obj__"] = is_obj
            if is_obj:
                try:
                    head = _loads(buf[:begin] + b"]}")
                except ValueError:
                    head = None
                if isinstance(head, dict):
                    meta.update({k: v for k, v in head.items() if k != "traceEvents"})
            buf = buf[begin:]
            consumed += begin
        pos = 0
        while len(buf) - pos > _SLICE_BYTES:
            cut = _last_boundary(buf, pos, pos + _SLICE_BYTES)
            if cut <= pos:  # no element start in a whole slice: let the slice grow
                cut = _last_boundary(buf, pos, len(buf))
                if cut <= pos:
                    break
            yield "slice", buf[pos:cut], consumed + pos
            pos = cut
        if pos:
            buf = buf[pos:]
            consumed += pos
    if start is None:
        if not buf.strip():
            raise InputError(f"{path}: empty file, not a trace")
        try:
            _loads(buf)
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
        raise InputError(f"{path}: not a PyTorch profiler trace (no 'traceEvents' list)")
    yield "tail", buf, consumed


def _load(path: Path, pool: Any = None) -> Trace:
    ex = _Extractor()
    meta: dict[str, Any] = {}
    pending: deque[tuple[bytes, int, Any]] = deque()
    carry: list[bytes] = []  # slices that failed to parse alone (a cut inside an element), to join
    carry_off = 0
    carry_len = 0
    depth = 2 * getattr(pool, "_processes", 1)

    def absorb(raw: bytes, offset: int, outcome: tuple[str, Any] | None) -> None:
        nonlocal carry_off, carry_len
        if carry:  # joining: this slice continues the failed one(s)
            carry.append(raw)
            carry_len += len(raw)
            if carry_len > 4 * _BLOCK_BYTES:  # stop retrying; the tail parse reports the error
                return
            outcome = _parse_slice(b"".join(carry))
            if outcome[0] == "json":
                return
            carry.clear()
            carry_len = 0
        else:
            if outcome is None:
                outcome = _parse_slice(raw)
            if outcome[0] == "json":
                carry.append(raw)
                carry_len = len(raw)
                carry_off = offset
                return
        if outcome[0] == "event":
            raise InputError(f"{path}: not a PyTorch profiler trace (an event is not a well-formed trace event: {outcome[1]})")
        ex.merge(outcome[1])

    tail = None
    pieces = _slices(path, meta)
    try:
        for kind, raw, offset in pieces:
            if kind == "tail":
                tail = (raw, offset)
                break
            if pool is None:
                absorb(raw, offset, None)
                continue
            pending.append((raw, offset, pool.apply_async(_parse_slice, (raw,))))
            while pending and (len(pending) > depth or pending[0][2].ready()):
                r, o, fut = pending.popleft()
                absorb(r, o, fut.get())
    finally:
        pieces.close()  # on error too: stops the gunzip thread now, not when the traceback dies
    while pending:
        r, o, fut = pending.popleft()
        absorb(r, o, fut.get())
    assert tail is not None
    raw, offset = tail
    if carry:
        raw = b"".join(carry) + raw
        offset = carry_off
        carry.clear()
    is_obj = meta.pop("__is_obj__", True)
    wrapper = b'{"traceEvents":[' if is_obj else b"["
    try:
        doc = _loads(wrapper + raw)
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        at_end = pos is None or pos >= len(wrapper) + len(raw.rstrip()) - 2
        raise _parse_error(path, exc, offset + max(0, (pos or 0) - len(wrapper)), at_end) from None
    if is_obj:
        if not isinstance(doc, dict):
            raise InputError(f"{path}: not a PyTorch profiler trace")
        tail_events = doc.pop("traceEvents", [])
        meta.update(doc)
    else:
        tail_events = doc
    _feed(ex, tail_events, path)
    del doc, tail_events, raw
    return _build(path, ex, meta)


def _feed(ex: _Extractor, events: Any, path: Path) -> None:
    try:
        ex.feed(events)
    except (AttributeError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: not a PyTorch profiler trace (an event is not a well-formed trace event: {exc})") from None


def _build(path: Path, ex: _Extractor, meta: dict[str, Any]) -> Trace:
    host, calls, gpu = ex.host.frame(), ex.calls.frame(), ex.gpu.frame()
    if len(host["ts"]) + len(calls["ts"]) + len(gpu["ts"]) == 0:
        raise InputError(
            f"{path}: not a PyTorch profiler trace (no cpu_op, user_annotation, cuda_runtime or kernel events "
            f"among its {ex.n_events} events)"
        )
    t0 = min(float(a["ts"].min()) for a in (host, calls, gpu) if len(a["ts"]))
    name_list = np.empty(len(ex.names), dtype=object)
    for n, c in ex.names.items():
        name_list[c] = n if isinstance(n, str) else str(n)
    categories = _unique_categories(name_list)

    def names(codes: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, categories=categories)

    host_df = pd.DataFrame(
        {
            "kind": pd.Categorical.from_codes(host["kind"], categories=[KIND_NAMES[i] for i in range(8)]),
            "name": names(host["name"]),
            "pid": host["pid"],
            "tid": host["tid"],
            "ts_us": host["ts"] - t0,
            "dur_us": host["dur"],
        }
    )
    calls_df = pd.DataFrame(
        {
            "api": np.where(calls["kind"] == DRIVER, "driver", "runtime"),
            "name": names(calls["name"]),
            "pid": calls["pid"],
            "tid": calls["tid"],
            "ts_us": calls["ts"] - t0,
            "dur_us": calls["dur"],
            "correlation": calls["correlation"],
        }
    )
    calls_df["api"] = calls_df["api"].astype("category")
    gpu_kind = pd.Categorical.from_codes(gpu["kind"] - KERNEL, categories=["kernel", "memcpy", "memset"])
    gpu_df = pd.DataFrame(
        {
            "kind": gpu_kind,
            "name": names(gpu["name"]),
            "device": gpu["pid"],
            "stream": gpu["tid"],
            "ts_us": gpu["ts"] - t0,
            "dur_us": gpu["dur"],
            "correlation": gpu["correlation"],
        }
    )
    steps = _steps(host_df, ex.names)
    return Trace(
        path=str(path),
        meta=meta,
        t0_us=t0,
        n_events=ex.n_events,
        host=host_df,
        calls=calls_df,
        gpu=gpu_df,
        steps=steps,
    )


def _unique_categories(values: np.ndarray) -> pd.Index:
    """Categories must be unique; str() of odd (non-string) names could collide, so disambiguate."""
    idx = pd.Index(values, dtype=object)
    if idx.is_unique:
        return idx
    seen: dict[str, int] = {}
    out = []
    for v in idx:
        k = seen.get(v, 0)
        seen[v] = k + 1
        out.append(v if k == 0 else f"{v} #{k}")
    return pd.Index(out, dtype=object)


def _steps(host: pd.DataFrame, names: dict[str, int]) -> pd.DataFrame:
    """ProfilerStep#N windows on the host side (any category: newer Kineto uses user_annotation,
    older ones cpu_op). If a step appears more than once (several threads), the first one wins."""
    step_codes = {}
    for n, c in names.items():
        m = _STEP_RE.match(str(n))
        if m:
            step_codes[c] = int(m.group(1))
    if not step_codes:
        return pd.DataFrame({"step": pd.Series([], dtype=np.int64), "ts_us": pd.Series([], dtype=float), "dur_us": pd.Series([], dtype=float)})
    codes = host["name"].cat.codes.to_numpy()
    mask = np.isin(codes, np.fromiter(step_codes, dtype=np.int64)) & (host["kind"].to_numpy() != KIND_NAMES[MODULE])
    sub = host.loc[mask, ["ts_us", "dur_us"]].copy()
    sub["step"] = [step_codes[c] for c in codes[mask]]
    sub = sub.sort_values("ts_us").drop_duplicates("step", keep="first")
    return sub[["step", "ts_us", "dur_us"]].reset_index(drop=True)
