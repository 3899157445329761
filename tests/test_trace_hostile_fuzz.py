"""Property tests of the trace reader: whatever the events hold, in whatever key order, layout or
slicing, the reader gives the tables the rules say (checked against a plain json.loads reading),
the fast typed decoder and the lenient reader agree exactly, and no input makes it fail with
anything but InputError. Class 2 and 3 of the hostile-input issue."""

from __future__ import annotations

import gzip
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import perfbench.trace.events as events_mod
import perfbench.trace.parse as parse
from perfbench.errors import InputError
from perfbench.trace import analyze, load_trace

CATEGORIES = {"cpu_op": "host", "operator": "host", "user_annotation": "host", "python_function": "host",
              "cuda_runtime": "calls", "runtime": "calls", "cuda_driver": "calls", "driver": "calls",
              "kernel": "gpu", "gpu_memcpy": "gpu", "memcpy": "gpu", "gpu_memset": "gpu", "memset": "gpu"}
T0 = 1.7e15  # epoch microseconds, as recent Kineto writes them
DAY_US = 86_400e6

_TMP = Path(tempfile.mkdtemp(prefix="perfbench_fuzz_"))

names = st.one_of(
    st.sampled_from(["aten::mm", "nn.Module: Linear_0", "ProfilerStep#3", "k}, {\"ph\": \"X\"", "[/]", "[bold]x",
                     "\x1b]0;t\x07", "cudaLaunchKernel", "cudaGraphLaunch", ""]),
    st.text(max_size=12),
)
huge_ints = st.sampled_from([2**63, 2**64 - 1, -(2**63) - 1, 10**30, -(10**30)])


def mostly(usual, *odd, odd_in: int = 6):
    """`usual` most of the time (odd_in - 1 draws in odd_in), else one of the odd strategies."""
    return st.integers(1, odd_in).flatmap(lambda i: usual if i > 1 else st.one_of(*odd))


ids = mostly(st.integers(0, 40_000), st.integers(-5, -1), huge_ints, st.text(max_size=4), st.floats(-10, 10), st.booleans(), st.none())
times = mostly(
    st.floats(0, 5e6).map(lambda x: T0 + x) | st.integers(0, 10**6).map(lambda x: int(T0) + x),  # within seconds, epoch us
    st.floats(-1e3, 1e4),  # relative timestamps (then the span check decides)
    st.sampled_from([1e301, -1e301, 1e20, 9.1e15]), huge_ints, st.text(max_size=3), st.none(), st.booleans(),
    odd_in=12,
)
durations = mostly(st.floats(0, 1e5) | st.integers(0, 10**5), st.floats(-1e4, 0), st.integers(-100, 0),
                   st.sampled_from([1e300, 1e12, -1e20]), huge_ints, st.text(max_size=3), st.none())
correlations = mostly(st.integers(0, 50), st.integers(-3, -1), huge_ints, st.floats(0, 50), st.text(max_size=3), st.booleans(), st.none())
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


@st.composite
def events(draw):
    e = {}
    if draw(st.integers(0, 9)):  # mostly complete events
        e["ph"] = draw(mostly(st.just("X"), st.sampled_from(["i", "s", "f", "M", "x"]), st.none(), st.integers(0, 2), odd_in=4))
    cat = draw(mostly(st.sampled_from(list(CATEGORIES) + ["Kernel", "CPU_OP"]),
                      st.sampled_from(["ac2g", "Trace", "gpu_user_annotation"]), st.text(max_size=5), st.none(), st.integers(0, 3), odd_in=4))
    if draw(st.integers(0, 19)):
        e["cat"] = cat
    for key, strat, keep in (("name", names, 19), ("pid", ids, 19), ("tid", ids, 19), ("ts", times, 29), ("dur", durations, 9)):
        if draw(st.integers(0, keep)):
            e[key] = draw(strat)
    args_kind = draw(st.integers(0, 9))
    if args_kind >= 3:
        args = draw(st.dictionaries(st.text(max_size=5), json_value, max_size=3))
        if args_kind >= 5:
            args["correlation"] = draw(correlations)
        e["args"] = args
    elif args_kind == 1:
        e["args"] = draw(json_value)
    for k in draw(st.lists(st.text(max_size=4), max_size=2)):
        e[k] = draw(json_value)
    keys = draw(st.permutations(list(e)))
    return {k: e[k] for k in keys}


@st.composite
def traces(draw):
    evs = draw(st.lists(events(), min_size=1, max_size=25))
    if draw(st.booleans()):  # a launch and its kernel, so the join has something to do
        c = draw(st.integers(0, 50))
        t = T0 + draw(st.floats(0, 1e6))
        evs += [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": t, "dur": 5.0, "args": {"correlation": c}},
                {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": t + 7, "dur": 3.0, "args": {"correlation": c}}]
    evs = draw(st.permutations(evs))
    indent = draw(st.sampled_from([None, None, 0, 1, 2]))
    seps = (",", ":") if indent is None and draw(st.booleans()) else None
    if draw(st.integers(0, 4)):
        doc: object = {"schemaVersion": 1, "traceEvents": evs, "traceName": "x"} if draw(st.booleans()) else {"traceEvents": evs}
    else:
        doc = evs
    return json.dumps(doc, indent=indent, separators=seps).encode()


# ------------------------------------------------------------------------------------ the rules


def _number(v):
    if type(v) in (int, float):
        try:
            return float(v)
        except OverflowError:
            return math.nan
    return math.nan


def _corr(args):
    if not isinstance(args, dict) or "correlation" not in args:
        return -1
    c = args["correlation"]
    return c if type(c) is int and -1 <= c < 2**63 else -2


def expected(text: bytes):
    """The reading the docstring of perfbench.trace.parse promises, from json.loads: rows per
    table (name, ts, dur, correlation), drop counts, or "refused"."""
    doc = json.loads(text)
    evs = doc["traceEvents"] if isinstance(doc, dict) else doc
    rows = {"host": [], "calls": [], "gpu": []}
    counts = dict.fromkeys(parse.DROP_REASONS, 0)
    lost = {"host": 0, "calls": 0, "gpu": 0}
    read = {"host": 0, "calls": 0, "gpu": 0}
    for e in evs:
        cat = e.get("cat")
        table = CATEGORIES.get(cat.lower()) if isinstance(cat, str) else None
        if table is None or e.get("ph") != "X":
            continue
        name = e.get("name")
        name = name if isinstance(name, str) else "" if name is None else str(name)
        if cat.lower() == "python_function" and not name.startswith("nn.Module:"):
            continue
        read[table] += 1
        ts, dur = _number(e.get("ts")), _number(e.get("dur", 0.0))
        corr = _corr(e.get("args")) if table != "host" else -1
        bad_ts = not abs(ts) <= 2.0**53
        bad_dur = not bad_ts and not abs(dur) <= DAY_US
        counts["bad_ts"] += bad_ts
        counts["bad_dur"] += bad_dur
        if corr < -1 and table != "host":
            counts["bad_correlation"] += 1
        lost[table] += bad_ts or bad_dur or corr < -1
        if bad_ts or bad_dur:
            continue
        if dur < 0:
            counts["negative_dur"] += 1
            dur = 0.0
        rows[table].append((name, ts, dur, max(corr, -1)))
    if any(lost[t] and lost[t] > 0.5 * read[t] for t in lost):
        return "refused"
    kept = [r for t in rows.values() for r in t]
    if not kept or max(r[1] + r[2] for r in kept) - min(r[1] for r in kept) > DAY_US:
        return "refused"
    return rows, counts


def _table(df, t0, with_corr: bool):
    corr = df["correlation"].tolist() if with_corr else [-1] * len(df)
    return list(zip(df["name"].astype(str).tolist(), (df["ts_us"] + t0).tolist(), df["dur_us"].tolist(), corr))


def _load(text: bytes, gz: bool = False):
    p = _TMP / ("t.json.gz" if gz else "t.json")
    p.write_bytes(gzip.compress(text, compresslevel=1) if gz else text)
    return load_trace(p)


def _same(a, b) -> None:
    for x, y in ((a.host, b.host), (a.calls, b.calls), (a.gpu, b.gpu)):
        assert x.shape == y.shape
        for col in x.columns:
            assert x[col].astype(str).tolist() == y[col].astype(str).tolist(), col
    assert a.dropped == b.dropped and a.n_events == b.n_events and a.t0_us == b.t0_us


# ------------------------------------------------------------------------------------ properties

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(text=traces(), slice_bytes=st.sampled_from([None, 64, 300, 2000]), gz=st.booleans())
def test_reader_follows_the_rules_whatever_the_events_hold(text, slice_bytes, gz):
    want = expected(text)
    old = parse._SLICE_BYTES
    parse._SLICE_BYTES = slice_bytes or old  # small slices: many cuts, some inside names like 'k}, {"ph"'
    try:
        if want == "refused":
            with pytest.raises(InputError):
                _load(text, gz)
            return
        tr = _load(text, gz)
    finally:
        parse._SLICE_BYTES = old
    rows, counts = want
    assert tr.dropped == counts
    for key, df in (("host", tr.host), ("calls", tr.calls), ("gpu", tr.gpu)):
        got, exp = _table(df, tr.t0_us, key != "host"), rows[key]
        assert [g[0] for g in got] == [r[0] for r in exp]
        assert np.allclose([g[1] for g in got], [r[1] for r in exp], rtol=1e-12, atol=1e-3)
        assert [g[2] for g in got] == [r[2] for r in exp]
        assert [g[3] for g in got] == [r[3] for r in exp]
        assert np.isfinite(df["ts_us"]).all() and (df["dur_us"] >= 0).all()


@pytest.mark.skipif(events_mod.msgspec is None, reason="compares the msgspec decoder with the lenient reader")
@FUZZ
@given(text=traces())
def test_typed_decoder_and_lenient_reader_agree_exactly(text):
    try:
        fast = _load(text)
    except InputError as exc:
        fast = str(exc)
    saved = events_mod.TYPED
    events_mod.TYPED = None  # every slice through json decoding + the lenient reader
    try:
        try:
            slow = _load(text)
        except InputError as exc:
            slow = str(exc)
    finally:
        events_mod.TYPED = saved
    if isinstance(fast, str) or isinstance(slow, str):
        assert fast == slow
    else:
        _same(fast, slow)


@FUZZ
@given(text=traces())
def test_figures_are_possible_numbers_or_the_trace_is_refused(text):
    try:
        f = analyze(_load(text)).figures
    except InputError:
        return
    for k in ("tklqt_us", "launch_call_us", "queue_us", "akd_us", "gpu_busy_us", "gpu_span_us", "idle_host_wait_us"):
        v = getattr(f, k)
        assert v is None or (math.isfinite(v) and v >= 0), (k, v)
    if f.gpu_util is not None:
        assert 0.0 <= f.gpu_util <= 1.0
        assert f.gpu_busy_us <= f.gpu_span_us * (1 + 1e-12)
    assert all(isinstance(n, int) and n >= 0 for n in f.dropped.values())
    json.dumps(f.as_dict(), allow_nan=False)  # valid JSON: no NaN or infinity slips through


_VALID = json.dumps({"traceEvents": [
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": T0, "dur": 50.0, "args": {"External id": 1}},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": T0 + 5, "dur": 5.0, "args": {"correlation": 9}},
    {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": T0 + 12, "dur": 30.0, "args": {"correlation": 9, "grid": [1, 2, 3]}},
    {"ph": "f", "id": 9, "pid": 0, "tid": 7, "ts": T0 + 12, "cat": "ac2g", "name": "ac2g", "bp": "e"},
]}, indent=1).encode()


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, len(_VALID)), st.integers(0, 8), st.binary(max_size=6) | st.sampled_from(
    [b"[" * 3000, b"{", b"}", b",", b'"', b"\\", b"1e400", b"NaN", b"\xff", b"\x00", b"-", b"99999999999999999999999"])), max_size=4),
    gz=st.booleans(), slice_bytes=st.sampled_from([None, 50]))
def test_mangled_text_is_read_or_refused_never_a_crash(cuts, gz, slice_bytes):
    """Bytes deleted, replaced or inserted anywhere (deep brackets, bad UTF-8, huge numbers, NUL):
    a Trace or an InputError naming the file; no other exception, no hang."""
    text = _VALID
    for pos, drop, insert in cuts:
        text = text[:pos] + insert + text[pos + drop:]
    old = parse._SLICE_BYTES
    parse._SLICE_BYTES = slice_bytes or old
    try:
        tr = _load(text, gz)
    except InputError as exc:
        assert "t.json" in str(exc)
        return
    finally:
        parse._SLICE_BYTES = old
    assume(tr is not None)
    assert np.isfinite(tr.gpu["ts_us"]).all()
