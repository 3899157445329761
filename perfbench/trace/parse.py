"""Read a PyTorch-profiler (Kineto) Chrome trace into a few numeric pandas tables, fast and safely.

Why not `json.load` and one DataFrame of dicts (what HTA does): a 900k-event trace is ~300 MB of
JSON, and its full Python object tree needs several GB and tens of seconds. Instead the text (read
within bounds by `textio`: size limit, gzip bombs) is cut into ~2 MB slices at event boundaries
and each slice is decoded at once into the few fields the metrics need (ph, cat, name, pid, tid,
ts, dur, args.correlation) by `events`, then freed: with msgspec installed, into typed records that
skip every other field in C (about 4x faster than building dicts); a slice holding anything odd is
read by the lenient reader, which applies the same rules. Peak memory is one slice plus the columns.

A cut is placed just before a `{` that follows `}` `,` (whitespace allowed): the start of the next
element of `traceEvents` when the file is well formed. A wrong cut (inside a nested object or a
string) leaves the slice unbalanced, so it fails to parse and is joined with the next one; a real
syntax error surfaces as `InputError` naming the file. Text padded with blanks or holding one
endless string costs linear time: 64 MB without an event boundary, or fewer than one event per
64 KB of text, is refused; so is JSON nested deeper than the decoder's recursion limit (an
InputError, never a crash).

Values are range-checked (`Trace.dropped` counts each reason): an event whose ts is not a number or
lies beyond +-2^53 us, or whose dur is not a number or longer than a day, is dropped; a negative
dur is clamped to 0; a correlation id that is not a 64-bit integer >= 0 is treated as missing. A
trace is refused when such drops take more than half of the host events, launch calls or GPU
activities, or when the remaining events span more than a day.

Timestamps: Chrome traces are in microseconds; the tables keep `ts_us`/`dur_us` as float64 relative
to the earliest recognised event (`Trace.t0_us` holds the absolute origin). Epoch-based timestamps
(~1.7e15 us) only carry ~0.25 us of precision once parsed into a double; that limit is the JSON
number's, not this reader's. Nothing here imports torch.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd

from perfbench.errors import InputError
from perfbench.trace.events import (
    COLUMNS,
    DRIVER,
    KERNEL,
    KIND_NAMES,
    MODULE,
    RUNTIME,
    Codes,
    Malformed,
    NotEvents,
    decode_events,
    decode_tail,
    safe_loads,
    tail_events,
)
from perfbench.trace.textio import Limits, human, limits_for, open_text

_STEP_RE = re.compile(r"^ProfilerStep#(\d{1,18})$")
_BOUNDARY_RE = re.compile(rb"\}\s*,\s*$")  # what must precede an element-starting "{"
# Sizes measured on the 2-vCPU reference VM (scripts/bench_trace.py): smaller pieces cost no time
# and keep the transient memory (queued blocks, one slice, its decoded records) near 50 MB.
_SLICE_BYTES = 2 << 20  # JSON text decoded at once: bounds the transient Python objects
_BLOCK_BYTES = 4 << 20  # decompressed block handed over by the reader
_MAX_CARRY_BYTES = 32 << 20  # slices joined to get past a wrong cut before the text counts as malformed

#: Text without one event boundary, or with fewer events than one per MAX_BYTES_PER_EVENT once
#: _DENSITY_MIN_BYTES were read, is refused (padding, a bomb, or not an event list).
MAX_EVENT_BYTES = 64 << 20
MAX_BYTES_PER_EVENT = 64 << 10
_DENSITY_MIN_BYTES = 128 << 20
#: Plausible values: |ts| <= 2^53 us (exact doubles; epoch-based us are ~1.7e15); dur and the whole
#: trace's span at most a day. Larger values are corrupt, not measurements.
TS_LIMIT_US = float(2**53)
MAX_SPAN_US = 86_400e6
#: Refuse when drops take more than this share of a table's rows.
MAX_DROPPED_SHARE = 0.5
#: Per-reason counts in Trace.dropped, in this order.
DROP_REASONS = ("bad_ts", "bad_dur", "negative_dur", "bad_correlation")


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
    - `dropped`: per-reason counts of values dropped or clamped while reading (DROP_REASONS).
    """

    path: str
    meta: dict[str, Any]
    t0_us: float
    n_events: int
    host: pd.DataFrame
    calls: pd.DataFrame
    gpu: pd.DataFrame
    steps: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @property
    def has_gpu(self) -> bool:
        return len(self.gpu) > 0


def _parse_slice(text: bytes, codes: Optional[Codes] = None) -> tuple[str, Any]:
    """One slice, `[` elements `]` -> ("ok", columns) | ("json", Malformed) | ("event", message).
    Without `codes` (a worker process), the columns carry their own name table."""
    own = codes is None
    codes = Codes() if own else codes
    gc.disable()
    try:
        cols = decode_events(text, codes)
    except Malformed as exc:
        return "json", exc
    except NotEvents as exc:
        return "event", str(exc)
    if own:
        cols["names"] = list(codes)
    return "ok", cols


def _wrap(buf: bytes, pos: int, cut: int) -> bytes:
    """buf[pos:cut] (elements, each followed by a comma) as a JSON list, in one copy: `[` before
    it and its last comma turned into `]` (the whitespace after that comma stays, after the `]`)."""
    comma = buf.rfind(b",", pos, cut)
    mv = memoryview(buf)
    return b"".join((b"[", mv[pos:comma], b"]", mv[comma + 1:cut]))


def _unwrap(text: bytes) -> bytes:
    """The original text of a wrapped slice."""
    end = text.rfind(b"]")
    return text[1:end] + b"," + text[end + 1:]


def _join(texts: list[bytes]) -> bytes:
    """Wrapped slices -> one wrapped slice of their text."""
    raw = b"".join(map(_unwrap, texts))
    return _wrap(raw, 0, len(raw))


class _Table:
    """Columns appended slice by slice (numpy arrays, never Python objects per event)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k, _ in COLUMNS}
        self.n_events = 0

    def add(self, cols: dict[str, Any], lut: Optional[np.ndarray] = None) -> None:
        self.n_events += cols["n"]
        if not len(cols["kind"]):
            return
        for key, _ in COLUMNS:
            v = cols[key]
            self.parts[key].append(lut[v] if key == "name" and lut is not None else v)

    def merge(self, cols: dict[str, Any], codes: Codes) -> None:
        """A worker's columns: its name codes remapped onto ours."""
        lut = np.fromiter(map(codes.__getitem__, cols["names"]), np.int32, len(cols["names"]))
        self.add(cols, lut if len(lut) else np.zeros(1, np.int32))

    def columns(self) -> dict[str, np.ndarray]:
        """The whole columns; the parts are released as they are joined (peak: one column twice)."""
        out = {}
        for key, dtype in COLUMNS:
            parts = self.parts.pop(key)
            out[key] = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
            del parts
        return out


# ------------------------------------------------------------------------------------ slicing


_NONBLANK = re.compile(rb"[^ \t\r\n]")
_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')


def _last_boundary(buf: bytes | bytearray, lo: int, hi: int) -> int:
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


def _read_head(path: Path, buf: bytes | bytearray, begin: int, meta: dict[str, Any]) -> None:
    """Keys before traceEvents (deviceProperties, ...) into meta."""
    try:
        head = safe_loads(bytes(buf[:begin]) + b"]}")
    except Malformed as exc:
        raise InputError(f"{path}: malformed JSON before its events list ({exc})") from None
    if isinstance(head, dict):
        meta.update({k: v for k, v in head.items() if k != "traceEvents"})


def _no_events_start(path: Path, buf: bytes) -> InputError:
    if not buf.strip():
        return InputError(f"{path}: empty file, not a trace")
    try:
        safe_loads(buf)
    except Malformed as exc:
        return InputError(f"{path}: not valid JSON ({exc})")
    return InputError(f"{path}: not a PyTorch profiler trace (no 'traceEvents' list)")


class _Slicer:
    """Decompressed blocks -> ("slice", `[`elements`]`, offset) pieces of whole list elements, then
    one ("tail", rest, offset): the last elements and whatever closes the document. The head (keys
    before traceEvents) goes into `meta`. Every byte is scanned a bounded number of times, so text
    padded with blanks or one endless string costs linear time until it is refused."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path, self.meta = path, meta
        self.buf = bytearray()  # deleting from its front is O(1)
        self.consumed = 0  # offset in the text of buf[0]
        self.first = -1  # the document's first non-blank byte
        self.searched = 0  # buf[:searched] holds no document start / no events key
        self.scanned = 0  # buf[scanned:] is where an element boundary may still be found
        self.started = False

    def feed(self, block: bytes) -> Iterator[tuple[str, bytes, int]]:
        self.buf += block
        if self.started or self._start():
            yield from self._cut()

    def tail(self) -> tuple[str, bytes, int]:
        if not self.started:
            raise _no_events_start(self.path, bytes(self.buf))
        return "tail", bytes(self.buf), self.consumed

    def _start(self) -> bool:
        """Find `[` opening the events list (document `[...]` or `{..."traceEvents": [...`)."""
        buf = self.buf
        if self.first < 0:
            m = _NONBLANK.search(buf, self.searched)
            if m is None:
                self.searched = len(buf)
                return self._need_more("no JSON")
            self.first = self.searched = m.start()
            if buf[self.first] == ord("["):
                return self._begin(self.first + 1, False)
            if buf[self.first] != ord("{"):
                raise InputError(f"{self.path}: not a PyTorch profiler trace (not a JSON object with 'traceEvents')")
        m = _EVENTS_KEY.search(buf, max(self.first, self.searched - 64))
        if m is None:
            self.searched = len(buf)
            return self._need_more("no 'traceEvents' list")
        return self._begin(m.end(), True)

    def _need_more(self, what: str) -> bool:
        if len(self.buf) > MAX_EVENT_BYTES:
            raise InputError(f"{self.path}: not a PyTorch profiler trace ({what} in its first {human(MAX_EVENT_BYTES)})")
        return False

    def _begin(self, begin: int, is_obj: bool) -> bool:
        self.meta["__is_obj__"] = is_obj
        if is_obj:
            _read_head(self.path, self.buf, begin, self.meta)
        del self.buf[:begin]
        self.consumed = begin
        self.started = True
        return True

    def _cut(self) -> Iterator[tuple[str, bytes, int]]:
        buf, pos = self.buf, 0
        while len(buf) - pos > _SLICE_BYTES:
            cut = _last_boundary(buf, pos, pos + _SLICE_BYTES)
            if cut <= pos:  # no element start in a whole slice: let the slice grow, within reason
                cut = _last_boundary(buf, max(pos, self.scanned - 64), len(buf))
                if cut <= pos:
                    self._no_boundary(pos)
                    break
            yield "slice", _wrap(buf, pos, cut), self.consumed + pos
            pos = cut
        del buf[:pos]
        self.consumed += pos
        self.scanned = max(0, self.scanned - pos)

    def _no_boundary(self, pos: int) -> None:
        self.scanned = len(self.buf)
        if len(self.buf) - pos > MAX_EVENT_BYTES:
            raise InputError(
                f"{self.path}: no trace event starts in {human(len(self.buf) - pos)} of text from byte "
                f"{self.consumed + pos}: padding, a compression bomb or not an event list; refused"
            )


def _slices(path: Path, meta: dict[str, Any], limits: Limits) -> Iterator[tuple[str, bytes, int]]:
    """The pieces of the trace's text, in order (see _Slicer)."""
    slicer = _Slicer(path, meta)
    for block in open_text(path, limits):
        yield from slicer.feed(block)
    yield slicer.tail()


# ------------------------------------------------------------------------------------ loading


def load_trace(path: str | Path, *, workers: int | None = None, max_bytes: int | None = None) -> Trace:
    """Parse a `.json` or `.json.gz` PyTorch-profiler trace. Raises InputError (exit 2) when the file
    is missing, empty, truncated, not JSON, not a profiler trace, too large or implausible.

    `max_bytes`: decompressed text allowed (default 4 GiB, or PERFBENCH_MAX_TRACE_BYTES); giving it
    also lifts the gzip-ratio check. `workers`: processes that parse slices in parallel (opt-in;
    also PERFBENCH_TRACE_WORKERS). None/0/1 = in-process. Forked workers are used only for traces
    of ~192 MB of JSON or more and only where forking is safe (no other Python threads, torch not
    imported). Why opt-in: on the 2-vCPU reference VM two workers took 1.14 s against 1.07 s
    in-process for 890k events, at 2 x 62 MB more memory (scripts/bench_trace.py with and
    without PERFBENCH_TRACE_WORKERS=2)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such trace file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a trace file")
    limits = limits_for(max_bytes, _BLOCK_BYTES)
    n_workers = _choose_workers(path, workers)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # decoding allocates millions of objects; cyclic GC passes would triple the time
    pool = None
    try:
        if n_workers > 1:
            pool = _start_pool(n_workers)
        return _Loader(path, pool, limits).run()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if gc_was_enabled:
            gc.enable()


_PARALLEL_MIN_BYTES = 192 << 20  # below this, pipeline fill/drain costs more than 2 cores win


def _choose_workers(path: Path, workers: int | None) -> int:
    if workers is None:
        text = os.environ.get("PERFBENCH_TRACE_WORKERS", "").strip() or "0"
        try:
            workers = int(text)
        except ValueError:
            workers = -1
        if workers < 0:
            raise InputError(f"PERFBENCH_TRACE_WORKERS must be a whole number of processes >= 0, got {text!r}")
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


class _Loader:
    """Slices -> columns (in-process or through a pool), wrong cuts joined, bombs refused early."""

    def __init__(self, path: Path, pool: Any, limits: Limits):
        self.path, self.pool, self.limits = path, pool, limits
        self.table = _Table()
        self.codes = Codes()
        self.meta: dict[str, Any] = {}
        self.carry: list[bytes] = []  # slices that failed to parse alone (a cut inside an element), to join
        self.carry_off = 0
        self.carry_len = 0

    def run(self) -> Trace:
        tail = None
        pending: deque[tuple[bytes, int, Any]] = deque()
        depth = 2 * getattr(self.pool, "_processes", 1)
        pieces = _slices(self.path, self.meta, self.limits)
        try:
            for kind, raw, offset in pieces:
                if kind == "tail":
                    tail = (raw, offset)
                    break
                if self.pool is None:
                    self._absorb(raw, offset, None)
                    continue
                pending.append((raw, offset, self.pool.apply_async(_parse_slice, (raw,))))
                while pending and (len(pending) > depth or pending[0][2].ready()):
                    r, o, fut = pending.popleft()
                    self._absorb(r, o, fut.get())
            while pending:
                r, o, fut = pending.popleft()
                self._absorb(r, o, fut.get())
        finally:
            pieces.close()  # on error too: stops the gunzip thread now, not when the traceback dies
        assert tail is not None
        self._read_tail(*tail)
        return _build(self.path, self.table, list(self.codes), self.meta)

    def _absorb(self, text: bytes, offset: int, outcome: tuple[str, Any] | None) -> None:
        if self.carry:  # joining: this slice continues the failed one(s)
            self.carry.append(text)
            self.carry_len += len(text)
            outcome = _parse_slice(_join(self.carry), self.codes)
            if outcome[0] == "json":
                if self.carry_len > _MAX_CARRY_BYTES:  # no valid event list however far we join
                    raise _parse_error(self.path, outcome[1], self.carry_off, 1, False)
                return
            offset = self.carry_off
            self.carry.clear()
            self.carry_len = 0
        else:
            if outcome is None:
                outcome = _parse_slice(text, self.codes)
            if outcome[0] == "json":
                self.carry, self.carry_len, self.carry_off = [text], len(text), offset
                return
        if outcome[0] == "event":
            raise InputError(f"{self.path}: not a PyTorch profiler trace ({outcome[1]})")
        cols = outcome[1]
        if "names" in cols:
            self.table.merge(cols, self.codes)
        else:
            self.table.add(cols)
        self._check_density(offset + len(text))

    def _check_density(self, end: int) -> None:
        if end > _DENSITY_MIN_BYTES and self.table.n_events * MAX_BYTES_PER_EVENT < end:
            raise InputError(
                f"{self.path}: {self.table.n_events} events in the first {human(end)} of text (profiler traces hold "
                f"thousands per MB): padding, a compression bomb or not an event list; refused"
            )

    def _read_tail(self, raw: bytes, offset: int) -> None:
        if self.carry:
            raw = b"".join(map(_unwrap, self.carry)) + raw
            offset = self.carry_off
            self.carry.clear()
        is_obj = self.meta.pop("__is_obj__", True)
        wrapper = b'{"traceEvents":[' if is_obj else b"["
        try:
            events = tail_events(wrapper + raw, is_obj, self.meta)
            cols = decode_tail(events, self.codes)
        except Malformed as exc:
            raise _parse_error(self.path, exc, offset, len(wrapper), self._at_end(exc, raw, wrapper)) from None
        except NotEvents as exc:
            raise InputError(f"{self.path}: not a PyTorch profiler trace ({exc})") from None
        self.table.add(cols)

    @staticmethod
    def _at_end(exc: Malformed, raw: bytes, wrapper: bytes) -> bool:
        return exc.truncated or exc.pos is not None and exc.pos >= len(wrapper) + len(raw.rstrip()) - 2


def _parse_error(path: Path, exc: Malformed, offset: int, wrapper_len: int, at_end: bool) -> InputError:
    if exc.deep or exc.pos is None and not at_end:
        return InputError(f"{path}: malformed JSON in the text from byte {offset}: {exc}")
    if at_end:
        return InputError(f"{path}: truncated or malformed JSON: the trace ends before its events list is closed ({exc})")
    where = offset + max(0, (exc.pos or 0) - wrapper_len)
    return InputError(f"{path}: malformed JSON near byte {where} of the decompressed text ({exc})")


# ------------------------------------------------------------------------------------ checks + tables


def _range_check(path: Path, c: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, int]]:
    """Rows to keep and the per-reason counts (DROP_REASONS). Clamps negative durations and bad
    correlation ids in place. Refuses a trace whose drops leave too little to measure."""
    ts, dur, kind, corr = c["ts"], c["dur"], c["kind"], c["corr"]
    with np.errstate(invalid="ignore"):
        bad_ts = ~(np.abs(ts) <= TS_LIMIT_US)  # NaN (missing, not a number) included
        bad_dur = ~bad_ts & ~(np.abs(dur) <= MAX_SPAN_US)
        drop = bad_ts | bad_dur
        neg = ~drop & (dur < 0)
    dur[neg] = 0.0
    bad_corr = (kind >= RUNTIME) & (corr < -1)
    corr[corr < -1] = -1
    counts = {"bad_ts": int(bad_ts.sum()), "bad_dur": int(bad_dur.sum()), "negative_dur": int(neg.sum()),
              "bad_correlation": int(bad_corr.sum())}
    for what, rows in (("host events", kind <= MODULE), ("launch calls", (kind == RUNTIME) | (kind == DRIVER)),
                       ("GPU activities", kind >= KERNEL)):
        lost = int((rows & (drop | bad_corr)).sum())
        if lost and lost > MAX_DROPPED_SHARE * int(rows.sum()):
            raise InputError(
                f"{path}: {lost} of {int(rows.sum())} {what} have an unusable timestamp, duration or correlation id "
                f"({_reasons(counts)}): too few remain for the figures; refused"
            )
    keep = ~drop
    _check_span(path, ts[keep], dur[keep])
    return keep, counts


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"


def _check_span(path: Path, ts: np.ndarray, dur: np.ndarray) -> None:
    if not len(ts):
        return
    lo, hi = float(ts.min()), float((ts + dur).max())
    if hi - lo > MAX_SPAN_US:
        raise InputError(
            f"{path}: its events span {(hi - lo) / 86_400e6:,.1f} days (ts {lo:.6g} to {hi:.6g} us); a profiler trace "
            "covers seconds to minutes, so these timestamps are corrupt; refused"
        )


def _build(path: Path, table: _Table, names_list: list[str], meta: dict[str, Any]) -> Trace:
    c = table.columns()
    keep, dropped = _range_check(path, c)
    if not keep.any():
        raise InputError(
            f"{path}: not a PyTorch profiler trace (no cpu_op, user_annotation, cuda_runtime or kernel events "
            f"among its {table.n_events} events)"
        )
    t0 = float(c["ts"][keep].min())
    parts = _split(c, keep, t0)
    categories = _unique_categories(np.array(names_list, dtype=object))
    host = _host_frame(parts["host"], categories)
    return Trace(path=str(path), meta=meta, t0_us=t0, n_events=table.n_events, host=host,
                 calls=_calls_frame(parts["calls"], categories), gpu=_gpu_frame(parts["gpu"], categories),
                 steps=_steps(host, names_list), dropped=dropped)


def _split(c: dict[str, np.ndarray], keep: np.ndarray, t0: float) -> dict[str, dict[str, np.ndarray]]:
    """The kept rows of each table, in file order, column by column: each whole column is freed
    once split, so the peak is the columns plus one column, not twice the columns."""
    kind = c["kind"]
    masks = {"host": keep & (kind <= MODULE), "calls": keep & ((kind == RUNTIME) | (kind == DRIVER)),
             "gpu": keep & (kind >= KERNEL)}
    out: dict[str, dict[str, np.ndarray]] = {t: {} for t in masks}
    del kind
    for key, _ in COLUMNS:
        col = c.pop(key)
        for t, m in masks.items():
            out[t][key] = col[m]
        del col
    for t in out.values():
        t["ts"] -= t0
    return out


def _names(codes: np.ndarray, categories: pd.Index) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=categories)


def _host_frame(c: dict[str, np.ndarray], categories: pd.Index) -> pd.DataFrame:
    return pd.DataFrame({
        "kind": pd.Categorical.from_codes(c["kind"], categories=[KIND_NAMES[i] for i in range(8)]),
        "name": _names(c["name"], categories),
        "pid": c["pid"],
        "tid": c["tid"],
        "ts_us": c["ts"],
        "dur_us": c["dur"],
    }, copy=False)


def _calls_frame(c: dict[str, np.ndarray], categories: pd.Index) -> pd.DataFrame:
    api = pd.Categorical.from_codes((c["kind"] == DRIVER).astype(np.int8), categories=["runtime", "driver"])
    return pd.DataFrame({
        "api": api,
        "name": _names(c["name"], categories),
        "pid": c["pid"],
        "tid": c["tid"],
        "ts_us": c["ts"],
        "dur_us": c["dur"],
        "correlation": c["corr"],
    }, copy=False)


def _gpu_frame(c: dict[str, np.ndarray], categories: pd.Index) -> pd.DataFrame:
    return pd.DataFrame({
        "kind": pd.Categorical.from_codes(c["kind"] - KERNEL, categories=["kernel", "memcpy", "memset"]),
        "name": _names(c["name"], categories),
        "device": c["pid"],
        "stream": c["tid"],
        "ts_us": c["ts"],
        "dur_us": c["dur"],
        "correlation": c["corr"],
    }, copy=False)


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


def _steps(host: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """ProfilerStep#N windows on the host side (any category: newer Kineto uses user_annotation,
    older ones cpu_op). If a step appears more than once (several threads), the first one wins."""
    step_codes = {}
    for c, n in enumerate(names):
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
