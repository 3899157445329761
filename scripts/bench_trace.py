#!/usr/bin/env python
"""Benchmark trace analysis on a big synthetic trace (target: ~900k events in < 2.5 s on 2 vCPUs,
memory flat in trace size).

Builds a trace from N time-shifted copies of the real H100 `llama1b_generate8_b1.json.gz` fixture
(44k events each), with correlation ids, flow ids and External ids made unique per copy, writes it
gzipped to a temp dir, then runs `perfbench.trace.analyze` on it in fresh subprocesses and reports,
for 5, 10 and 20 copies by default (so linearity shows):

- analyze_s: load + analysis, median of --repeat runs (and the fastest); wall_s: the same process
  from interpreter start (imports included);
- rss_MB: peak RSS of the analysing process (+ each parse worker's, if any);
- floor_s: decompressing the file and nothing else (the same inflater perfbench uses), and
  x_floor = analyze_s / floor_s: how far the parse is from that floor;
- with HolisticTraceAnalysis importable (by this interpreter, or the one given with --hta-python;
  it is no dependency of perfbench), HTA's TraceAnalysis load of the same file, side by side.

    .venv/bin/python scripts/bench_trace.py [--copies 5,10,20] [--keep DIR] [--plain] [--repeat 3]
        [--hta-python /path/to/python-with-hta]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import orjson

    def dumps(obj) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover
    orjson = None

    def dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "fixtures" / "traces" / "h100" / "llama1b_generate8_b1.json.gz"

#: Peak RSS of a child process, shared by the analysing and the HTA child.
_PEAK_MB = r"""
import json, resource, sys, time

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss can carry the forking parent's)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

CHILD = _PEAK_MB + r"""

t0 = time.perf_counter()
from perfbench.trace import analyze
t1 = time.perf_counter()
a = analyze(sys.argv[1])
t2 = time.perf_counter()
import perfbench.trace.parse as P
workers = P._choose_workers(P.Path(sys.argv[1]), None)
print(json.dumps({"import_s": t1 - t0, "analyze_s": t2 - t1, "events": a.trace.n_events,
                  "maxrss_mb": peak_mb(),
                  "workers": workers,
                  "worker_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "figures": a.as_full_dict()}))
"""

FLOOR = r"""
import json, sys, time
try:  # the inflater perfbench.trace.textio picks
    from isal import isal_zlib as zl
except ImportError:
    import zlib as zl
name = zl.__name__
t = time.perf_counter()
n = 0
with open(sys.argv[1], "rb") as fh:
    if fh.read(2) == b"\x1f\x8b":
        fh.seek(0)
        d = zl.decompressobj(wbits=31)
        while True:
            data = fh.read(1 << 20)
            if not data:
                break
            while data:
                out = d.decompress(data, 8 << 20)
                n += len(out)
                data = d.unconsumed_tail
                if d.eof:  # next gzip member
                    data, d = d.unused_data, zl.decompressobj(wbits=31)
    else:
        while True:
            b = fh.read(8 << 20)
            if not b:
                break
            n += len(b)
print(json.dumps({"floor_s": time.perf_counter() - t, "json_bytes": n, "inflater": name}))
"""

HTA = _PEAK_MB + r"""
import os, shutil, tempfile

try:
    from hta.trace_analysis import TraceAnalysis
except ImportError:
    print(json.dumps({"hta": None})); raise SystemExit(0)
d = tempfile.mkdtemp(prefix="hta_bench_")
shutil.copy(sys.argv[1], os.path.join(d, "rank-0" + (".json.gz" if sys.argv[1].endswith(".gz") else ".json")))
t = time.perf_counter()
ta = TraceAnalysis(trace_dir=d)
el = time.perf_counter() - t
shutil.rmtree(d, ignore_errors=True)
print(json.dumps({"hta": el, "hta_rss_mb": peak_mb()}))
"""


def build(copies: int, out: Path, plain: bool = False) -> int:
    """Write `copies` shifted copies of the source trace; returns the number of events written."""
    doc = loads(gzip.open(SOURCE).read())
    events = doc.pop("traceEvents")
    timed = [e for e in events if e.get("ph") in ("X", "s", "f") and isinstance(e.get("ts"), (int, float))]
    once = [e for e in events if not (e.get("ph") in ("X", "s", "f") and isinstance(e.get("ts"), (int, float)))]
    t_min = min(e["ts"] for e in timed)
    t_max = max(e["ts"] + e.get("dur", 0) for e in timed)
    shift = (t_max - t_min) + 1000.0
    max_corr = max(int((e.get("args") or {}).get("correlation", 0)) for e in timed)
    max_flow = max(int(e.get("id", 0)) for e in timed)
    max_ext = max(int((e.get("args") or {}).get("External id", 0)) for e in timed)
    opener = open if plain else (lambda p, m: gzip.open(p, m, compresslevel=1))
    n = 0
    with opener(out, "wb") as f:
        head = dumps(doc)
        f.write(head[:-1] + b',"traceEvents":[\n')
        first = True
        for k in range(copies):
            batch = [_shifted(e, k, shift, max_corr, max_flow, max_ext) for e in timed]
            if k == copies - 1:
                batch.extend(once)
            chunk = b",\n".join(dumps(e) for e in batch)
            f.write((b"" if first else b",\n") + chunk)
            first = False
            n += len(batch)
        f.write(b"\n]}\n")
    return n


def _shifted(e: dict, k: int, shift: float, max_corr: int, max_flow: int, max_ext: int) -> dict:
    e2 = dict(e)
    e2["ts"] = e["ts"] + k * shift
    if "id" in e2:
        e2["id"] = e["id"] + k * (max_flow + 1)
    a = e.get("args")
    if a and ("correlation" in a or "External id" in a):
        a2 = dict(a)
        if "correlation" in a2:
            a2["correlation"] = a["correlation"] + k * (max_corr + 1)
        if "External id" in a2:
            a2["External id"] = a["External id"] + k * (max_ext + 1)
        e2["args"] = a2
    return e2


def _child(code: str, path: Path, python: str = sys.executable) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([python, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def run_child(path: Path, repeat: int) -> dict:
    """Analyse `path` in `repeat` fresh subprocesses; median times, largest RSS."""
    runs = [_child(CHILD, path) for _ in range(repeat)]
    out = dict(runs[0])
    for k in ("analyze_s", "wall_s"):
        out[k] = statistics.median(r[k] for r in runs)
        out[k + "_min"] = min(r[k] for r in runs)
    out["maxrss_mb"] = max(r["maxrss_mb"] for r in runs)
    out["worker_maxrss_mb"] = max(r["worker_maxrss_mb"] for r in runs)
    return out


def floor(path: Path, repeat: int) -> dict:
    runs = [_child(FLOOR, path) for _ in range(repeat)]
    out = dict(runs[0])
    out["floor_s"] = statistics.median(r["floor_s"] for r in runs)
    return out


def hta(path: Path, python: str) -> dict | None:
    try:
        res = _child(HTA, path, python)
    except (SystemExit, OSError) as exc:
        print(f"       HTA failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}")
        return None
    return res if res.get("hta") is not None else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", default="5,10,20", help="comma-separated copy counts (ascending)")
    ap.add_argument("--keep", type=Path, help="write the traces here and keep them (reused if present)")
    ap.add_argument("--plain", action="store_true", help="write plain .json instead of .json.gz")
    ap.add_argument("--repeat", type=int, default=3, help="analysis runs per size (median reported)")
    ap.add_argument("--hta-python", default=sys.executable, help="interpreter to run HolisticTraceAnalysis with, if installed there")
    args = ap.parse_args()
    counts = sorted(int(c) for c in args.copies.split(","))
    tmp = tempfile.TemporaryDirectory(prefix="bench_trace_") if args.keep is None else None
    out_dir = args.keep or Path(tmp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"source: {SOURCE.name}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print(f"median of {args.repeat} fresh-process runs; wall_s includes interpreter start and imports; "
          f"rss_MB = peak RSS of the analysing process (+ each parse worker's peak, if any); "
          f"floor_s = decompression alone; x_floor = analyze_s / floor_s")
    print(f"{'copies':>6} {'events':>9} {'gz_MB':>6} {'json_MB':>7} {'floor_s':>7} {'analyze_s':>9} {'(min)':>6} "
          f"{'x_floor':>7} {'wall_s':>6} {'rss_MB':>7} {'workers':>7} {'us/event':>8}")
    try:
        for c in counts:
            path = out_dir / f"bench_{c}x.json{'' if args.plain else '.gz'}"
            n = _build_once(c, path, args.plain, reuse=args.keep is not None)
            r, fl = run_child(path, args.repeat), floor(path, args.repeat)
            _report(c, path, n, r, fl)
            h = hta(path, args.hta_python)
            if h:
                print(f"       HTA TraceAnalysis load: {h['hta']:.2f} s, {h['hta_rss_mb']:.0f} MB peak RSS; "
                      f"perfbench is {h['hta'] / r['analyze_s']:.1f}x faster")
    finally:
        if tmp is not None:
            tmp.cleanup()
    if not hta_available(args.hta_python):
        print("HolisticTraceAnalysis is not importable here (pip install HolisticTraceAnalysis, or --hta-python): not compared")


def _build_once(c: int, path: Path, plain: bool, reuse: bool) -> int:
    if reuse and path.exists():
        return -1  # count taken from the analysis
    n = build(c, path, plain)
    os.sync()  # let the written file's writeback finish before timing reads
    return n


def _report(c: int, path: Path, n: int, r: dict, fl: dict) -> None:
    rss = f"{r['maxrss_mb']:.0f}" + (f"+{r['workers']}x{r['worker_maxrss_mb']:.0f}" if r["workers"] else "")
    print(
        f"{c:>6} {r['events']:>9} {path.stat().st_size / 1e6:>6.1f} {fl['json_bytes'] / 1e6:>7.1f} {fl['floor_s']:>7.2f} "
        f"{r['analyze_s']:>9.2f} {r['analyze_s_min']:>6.2f} {r['analyze_s'] / fl['floor_s']:>7.1f} {r['wall_s']:>6.2f} "
        f"{rss:>7} {r['workers']:>7} {1e6 * r['analyze_s'] / r['events']:>8.2f}",
        flush=True,
    )
    assert n < 0 or r["events"] == n, (r["events"], n)
    f = r["figures"]
    print(f"       kernels={f['kernels']:.0f} launches={f['launches']:.0f} tklqt_us={f['tklqt_us']:.0f} "
          f"gpu_util={f['gpu_util']:.3f} inflater={fl['inflater']}")


def hta_available(python: str) -> bool:
    res = subprocess.run([python, "-c", "import hta.trace_analysis"], capture_output=True)
    return res.returncode == 0


if __name__ == "__main__":
    main()
