"""The trace commands tried as a careless (or hostile) user would: every class of defect the
hostile-input issue found, one test per class and its variants.

Class 2: a trace's numbers must be possible (range checks, counted drops, refusals).
Class 3: bounded time and memory on hostile files (size limit, bombs, deep nesting).
Class 7: every numeric option of the trace commands is checked (exit 2 naming the option).
Class 1: names from a trace are data, never markup or terminal control.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfbench.errors import InputError
from perfbench.trace import analyze, detect_transition, load_trace

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "tests" / "fixtures" / "traces" / "h100"
T = 1_000_000.0


def _x(cat, name, ts, dur, pid=1, tid=1, corr=None):
    e = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if corr is not None:
        e["args"] = {"correlation": corr}
    return e


def _launches(n=20, names=None):
    """n launch calls, each with its kernel 10 us later (20 us long), 100 us apart."""
    ev = []
    for i in range(n):
        ev.append(_x("cuda_runtime", "cudaLaunchKernel", T + 100 * i, 5, corr=i))
        ev.append(_x("kernel", names[i % len(names)] if names else f"k{i % 3}", T + 100 * i + 10, 20, pid=0, tid=7, corr=i))
    return ev


def _write(tmp_path, events, name="t.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"traceEvents": events}))
    return p


def _cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfbench", "trace", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


@pytest.fixture
def run_main(monkeypatch, capsys):
    """`perfbench trace ARGS` in this process (main(): exit codes and error printing as a user sees)."""
    from perfbench.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["perfbench", "trace", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


# ------------------------------------------------------------------------- class 2: possible numbers


def test_negative_durations_are_clamped_counted_and_said(tmp_path, run_main):
    ev = _launches()
    ev[1]["dur"] = -5000  # the first kernel: once gave a GPU utilisation of -18.9
    ev[3]["dur"] = -1
    f = analyze(_write(tmp_path, ev)).figures
    assert f.dropped["negative_dur"] == 2 and 0 <= f.gpu_util <= 1
    assert f.gpu_busy_us <= f.gpu_span_us and f.akd_us >= 0
    assert "2 negative durations clamped to 0" in f.note
    code, out, err = run_main("analyze", str(tmp_path / "t.json"), "-f", "json")
    assert code == 0 and json.loads(out)["dropped"]["negative_dur"] == 2 and "negative durations" in err
    code, out, _ = run_main("analyze", str(tmp_path / "t.json"))
    assert code == 0 and "negative_dur 2" in out and "clamped" in out


def test_absurd_timestamps_are_dropped_and_counted(tmp_path):
    ev = _launches()
    ev[3]["ts"] = 1e301  # a kernel: once made TKLQT 10^301
    ev[5]["ts"] = "soon"
    ev[7]["ts"] = None
    f = analyze(_write(tmp_path, ev)).figures
    assert f.dropped["bad_ts"] == 3 and f.tklqt_us == pytest.approx(17 * 10.0) and f.kernels == 17
    assert "3 events with an unusable timestamp dropped" in f.note


def test_timestamps_spanning_more_than_a_day_are_refused(tmp_path, run_main):
    ev = _launches()
    ev[5]["ts"] = T + 2 * 86_400e6
    p = _write(tmp_path, ev)
    with pytest.raises(InputError, match="span 2.0 days"):
        load_trace(p)
    code, out, err = run_main("analyze", str(p))
    assert code == 2 and str(p) in err and "span" in err and out == ""


@pytest.mark.parametrize("field,value", [("pid", 2**64), ("tid", -(10**30)), ("correlation", 2**64 - 1), ("correlation", 10**25),
                                         ("ts", 10**40), ("dur", 2**70), ("correlation", -7), ("correlation", 3.0),
                                         ("correlation", "12"), ("pid", True), ("dur", "5"), ("ts", 1e400)])
def test_integers_beyond_64_bits_and_odd_types_are_range_checked(tmp_path, field, value):
    """Once an OverflowError traceback. Ids that are no int64 become stable codes; values that
    cannot be measurements are dropped or treated as missing, and counted."""
    ev = _launches()
    target = ev[2] if field != "pid" else ev[0]
    if field == "correlation":
        target["args"]["correlation"] = value
    else:
        target[field] = value
    text = json.dumps({"traceEvents": ev}).replace("Infinity", "1e400")  # json writes 1e400 as Infinity
    p = tmp_path / "t.json"
    p.write_text(text)
    f = analyze(p).figures
    if field == "correlation":
        assert f.dropped["bad_correlation"] == 1 and f.launches == 19 and f.orphans == 1
    elif field in ("ts", "dur") and value != "5":
        assert f.dropped["bad_ts" if field == "ts" else "bad_dur"] == 1
    assert f.gpu_util is not None and 0 <= f.gpu_util <= 1
    json.dumps(f.as_dict(), allow_nan=False)


def test_every_event_sharing_one_correlation_id_is_refused(tmp_path, run_main):
    """Once silently collapsed 673 launches into 1."""
    ev = _launches(40)
    for e in ev:
        e["args"]["correlation"] = 5
    p = _write(tmp_path, ev)
    with pytest.raises(InputError, match="several launch calls share"):
        analyze(p)
    code, _, err = run_main("analyze", str(p), "-f", "json")
    assert code == 2 and str(p) in err and "Traceback" not in err
    ev = _launches(40)  # kernels only share one id: one cudaLaunchKernel cannot launch 40 kernels
    for e in ev[1::2]:
        e["args"]["correlation"] = 0
    with pytest.raises(InputError, match="not a graph replay"):
        analyze(_write(tmp_path, ev, "k.json"))


def test_a_few_duplicated_correlation_ids_are_left_unjoined_and_counted(tmp_path):
    ev = _launches(60)
    ev.append(_x("cuda_runtime", "cudaLaunchKernel", T + 50, 5, corr=3))  # a second call with id 3
    f = analyze(_write(tmp_path, ev)).figures
    assert f.dropped["ambiguous_correlation"] == 1 and f.orphans == 0 and f.launches == 59
    assert "several calls share" in f.note


def test_cuda_graph_replays_are_not_mistaken_for_shared_ids():
    f = analyze(H100 / "llama1b_prefill_compiled_b1.json.gz").figures
    assert f.kernels == 251 and f.launches == 2 and f.dropped["ambiguous_correlation"] == 0


def test_a_trace_whose_launches_are_mostly_dropped_is_refused(tmp_path, run_main):
    ev = _launches()
    for e in ev[0:24:2]:  # 12 of 20 launch calls
        e["ts"] = "n/a"
    p = _write(tmp_path, ev)
    with pytest.raises(InputError, match="12 of 20 launch calls"):
        load_trace(p)
    code, _, err = run_main("kernels", str(p))
    assert code == 2 and str(p) in err


def test_clean_fixtures_drop_nothing():
    for p in sorted((REPO / "tests" / "fixtures" / "traces").glob("*/*.json.gz")):
        d = analyze(p).figures.dropped
        assert set(d) == {"bad_ts", "bad_dur", "negative_dur", "bad_correlation", "ambiguous_correlation", "negative_gap"}
        assert not any(v for k, v in d.items() if k != "negative_gap"), (p.name, d)


def test_transition_refuses_impossible_latencies():
    pts = [{"tklqt_us": 1.0, "gpu_util": 0.1}, {"tklqt_us": 2.0, "gpu_util": 0.2}]
    for bad in ([float("nan"), 1.0], [1.0, float("inf")], [-5.0, 1.0], [0.0, 1.0]):
        with pytest.raises(InputError, match="finite numbers > 0"):
            detect_transition([1, 2], pts, bad)
    tr = detect_transition([1, 2], [{"tklqt_us": float("inf"), "gpu_util": float("nan")}, {"tklqt_us": 1.0, "gpu_util": 0.6}])
    assert tr.methods["gpu_util"] == 2 and tr.baseline_tklqt_us == 1.0  # inf/NaN figures count as missing


# ------------------------------------------------------------------------- class 3: bounded resources

_WS_MEMBER = gzip.compress(b" " * (1 << 20), compresslevel=9)  # 1 MiB of blanks in ~1 KB


def _gz(*parts: bytes) -> bytes:
    return b"".join(p if p[:2] == b"\x1f\x8b" else gzip.compress(p) for p in parts)


BOMBS = {  # 2 MB files that inflate to 2 GB
    "blanks_in_list": lambda: _gz(b'{"traceEvents": [', *[_WS_MEMBER] * 2048, b"]}"),
    "blanks_first": lambda: _gz(*[_WS_MEMBER] * 2048, b'{"traceEvents": []}'),
    "endless_string": lambda: _gz(b'{"traceEvents": [{"ph": "X", "name": "', *[gzip.compress(b"a" * (1 << 20))] * 2048, b'"}]}'),
    "blank_gaps": lambda: _gz(b'{"traceEvents": [', *([b'{"ph": "i"},', *[_WS_MEMBER] * 10] * 200), b'{"ph": "i"}]}'),
    "tiny_events": lambda: _gz(b'{"traceEvents": [', *[gzip.compress(b'{"ph":"i","name":"x"},' * 50_000)] * 1000, b'{"ph":"i"}]}'),
}
_BOMB_CHILD = r"""
import sys, time
import perfbench.trace.parse as P
from perfbench.errors import InputError

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss can carry the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

t = time.perf_counter()
try:
    P.load_trace(sys.argv[1], max_bytes=int(sys.argv[2]) or None)
    print("LOADED")
except InputError as exc:
    print("REFUSED", time.perf_counter() - t, peak_mb(), exc)
"""


@pytest.mark.parametrize("kind,limit", [(k, 0) for k in sorted(BOMBS)] + [(k, 8 << 30) for k in sorted(BOMBS) if k != "tiny_events"])
def test_compression_and_padding_bombs_are_refused_fast_in_bounded_memory(tmp_path, kind, limit):
    """Once 79 s and 6.4 GB before a refusal. With the default checks a bomb is refused by the
    ratio check; with the limit raised (which lifts it), by the boundary checks (valid events at
    1000:1 are then a real, if silly, trace: read up to the raised limit)."""
    p = tmp_path / f"{kind}.json.gz"
    p.write_bytes(BOMBS[kind]())
    assert p.stat().st_size < 6 << 20
    res = subprocess.run([sys.executable, "-c", _BOMB_CHILD, str(p), str(limit)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    word, secs, rss_mb, msg = res.stdout.split(" ", 3)
    assert word == "REFUSED" and str(p) in msg
    assert float(secs) < 3.0, res.stdout
    assert int(rss_mb) < 400, res.stdout


def test_decompressed_size_limit_flag_and_environment(tmp_path, run_main):
    p = H100 / "llama1b_prefill_eager_b1.json.gz"  # ~1.9 MB of JSON
    with pytest.raises(InputError, match=r"more than 1\.0 MiB of JSON text.*--max-trace-bytes.*PERFBENCH_MAX_TRACE_BYTES"):
        load_trace(p, max_bytes=1 << 20)
    code, _, err = run_main("analyze", str(p), "--max-trace-bytes", "1M")
    assert code == 2 and "more than 1.0 MiB" in err
    assert run_main("analyze", str(p), "--max-trace-bytes", "8G", "-f", "json")[0] == 0
    res = _cli("analyze", str(p), env={"PERFBENCH_MAX_TRACE_BYTES": "1M"})
    assert res.returncode == 2 and "more than 1.0 MiB" in res.stderr
    plain = tmp_path / "plain.json"
    plain.write_bytes(gzip.decompress(p.read_bytes()))
    with pytest.raises(InputError, match="more than 1.0 MiB"):  # plain text: refused from its size, unread
        load_trace(plain, max_bytes=1 << 20)
    for bad in ("abc", "0", "10", "-5G", "1e9"):
        code, _, err = run_main("analyze", str(p), "--max-trace-bytes", bad)
        assert code == 2 and "--max-trace-bytes" in err, (bad, err)
    res = _cli("analyze", str(p), env={"PERFBENCH_MAX_TRACE_BYTES": "lots"})
    assert res.returncode == 2 and "PERFBENCH_MAX_TRACE_BYTES" in res.stderr and "Traceback" not in res.stderr


_DEEP = b"[" * 200_000 + b"]" * 200_000
_EV = b'{"ph":"X","cat":"cpu_op","name":"a","pid":1,"tid":1,"ts":1,"dur":1}'
DEEP = {
    "in_args": b'{"traceEvents":[' + _EV + b',{"ph":"X","cat":"kernel","args":{"x":' + _DEEP + b"}}]}",
    "before_events": b'{"x":' + _DEEP + b',"traceEvents":[' + _EV + b"]}",
    "after_events": b'{"traceEvents":[' + _EV + b'],"x":' + _DEEP + b"}",
    "bare_list": _DEEP,
    "objects": b'{"traceEvents":[' + _EV + b"," + b'{"a":' * 200_000 + b"1" + b"}" * 200_000 + b"]}",
    "mid_trace": b'{"traceEvents":[' + (_EV + b",\n") * 60_000 + b'{"x":' + _DEEP + b"},\n" + (_EV + b",\n") * 60_000 + _EV + b"]}",
}


@pytest.mark.parametrize("where", sorted(DEEP))
def test_deeply_nested_json_is_an_input_error_not_a_crash(tmp_path, where):
    """In a child process: an old orjson crashed the interpreter on such input (SIGSEGV)."""
    p = tmp_path / f"deep_{where}.json"
    p.write_bytes(DEEP[where])
    res = _cli("analyze", str(p), "-f", "json")
    assert res.returncode == 2, (res.returncode, res.stderr[-500:])
    assert "nested too deeply" in res.stderr and str(p.name) in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------------- class 7: numeric options

B = [str(H100 / f"llama1b_prefill_eager_b{b}.json.gz") for b in (1, 16)]


@pytest.mark.parametrize("args,option", [
    (["sweep", *B, "-b", "1,16", "--latency-ms", "nan,inf"], "--latency-ms"),
    (["sweep", *B, "-b", "1,16", "--latency-ms", "-5,0"], "--latency-ms"),
    (["sweep", *B, "-b", "1,16", "--latency-ms", "1,1e300"], "--latency-ms"),
    (["sweep", *B, "-b", "0,16"], "--batch-sizes"),
    (["sweep", *B, "-b", "1,99999999999999999999"], "--batch-sizes"),
    (["kernels", B[0], "--top", "-3"], "--top"),
    (["kernels", B[0], "--top", "0"], "--top"),
    (["kernels", B[0], "--top", "1000000000"], "--top"),
    (["analyze", B[0], "--top", "-1"], "--top"),
    (["ops", B[0], "--top", "-2"], "--top"),
    (["fusion", B[0], "--top", "0"], "--top"),
    (["fusion", B[0], "--max-len", "1"], "--max-len"),
    (["fusion", B[0], "--max-len", "1000"], "--max-len"),
    (["overhead", B[0], "--timed-median-ms", "nan"], "--timed-median-ms"),
    (["overhead", B[0], "--timed-median-ms", "inf"], "--timed-median-ms"),
    (["overhead", B[0], "--timed-median-ms", "-1"], "--timed-median-ms"),
    (["overhead", B[0], "--timed-median-ms", "0"], "--timed-median-ms"),
    (["compare", B[0], B[1], "--max-trace-bytes", "nan"], "--max-trace-bytes"),
])
def test_numeric_options_are_checked(run_main, args, option):
    code, out, err = run_main(*args)
    assert code == 2, (code, err)
    assert option in err and "Traceback" not in err and out == ""


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_trace_workers_environment_is_checked(value):
    res = _cli("kernels", B[0], env={"PERFBENCH_TRACE_WORKERS": value})
    assert res.returncode == 2 and "PERFBENCH_TRACE_WORKERS" in res.stderr and "Traceback" not in res.stderr


def test_numeric_option_errors_say_what_is_allowed(run_main):
    _, _, err = run_main("sweep", *B, "-b", "1,16", "--latency-ms", "nan,inf")
    assert "finite" in err and "> 0" in err
    _, _, err = run_main("kernels", B[0], "--top", "-3")
    assert "from 1 to 100,000" in err
    assert _cli("kernels", B[0], "--top", "-3").returncode == 2  # the real command line too


# ------------------------------------------------------------------------- class 1: names are data

HOSTILE_NAMES = ["[bold red]evil[/]", "[/]", "\x1b]0;pwned\x07title", "\x1b[2Jclear", "bell\x07", "\u202eevil", "c1\x9bx"]


def test_names_from_a_trace_print_literally_never_as_markup_or_control(tmp_path):
    ev = _launches(len(HOSTILE_NAMES) * 3, HOSTILE_NAMES)
    ev += [_x("cpu_op", n, T + 100 * i - 2, 30) for i, n in enumerate(HOSTILE_NAMES * 3)]
    p = _write(tmp_path, ev, "[red]names[blink].json")
    for cmd in (["kernels", str(p), "--top", "10"], ["ops", str(p)], ["fusion", str(p)], ["analyze", str(p)]):
        res = _cli(*cmd)
        assert res.returncode == 0, res.stderr
        for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert ch not in res.stdout and ch not in res.stderr, (cmd, ch)
        assert "[red]names[blink].json" in res.stdout  # the file name in the title, literally
    out = _cli("kernels", str(p), "--top", "10").stdout
    for shown in ("[bold red]evil[/]", "[/]", "\\x1b]0;pwned\\x07title", "\\x1b[2Jclear", "bell\\x07", "\\u202eevil", "\\x9bx"):
        assert shown in out, shown
    rows = json.loads(_cli("kernels", str(p), "--top", "10", "-f", "json").stdout)  # JSON: valid, names exact
    assert sorted(r["name"] for r in rows) == sorted(HOSTILE_NAMES)
