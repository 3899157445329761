#!/usr/bin/env python
"""Benchmark trace analysis on a big synthetic trace (target: ~900k events in < 5 s, < 1 GB RSS).

Builds a trace from N time-shifted copies of the real H100 `llama1b_generate8_b1.json.gz` fixture
(44k events each), with correlation ids, flow ids and External ids made unique per copy, writes it
gzipped to a temp dir, then runs `perfbench.trace.analyze` on it in a fresh subprocess and reports
wall time, peak RSS and event count. Runs for 5, 10 and 20 copies by default so linearity shows.

    .venv/bin/python scripts/bench_trace.py [--copies 5,10,20] [--keep DIR] [--plain]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
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

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from perfbench.trace import analyze
t1 = time.perf_counter()
a = analyze(sys.argv[1])
t2 = time.perf_counter()
import perfbench.trace.parse as P
workers = P._choose_workers(P.Path(sys.argv[1]), None)
print(json.dumps({"import_s": t1 - t0, "analyze_s": t2 - t1, "events": a.trace.n_events,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers": workers,
                  "worker_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "figures": a.as_full_dict()}))
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
            batch = []
            for e in timed:
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
                batch.append(e2)
            if k == copies - 1:
                batch.extend(once)
            chunk = b",\n".join(dumps(e) for e in batch)
            f.write((b"" if first else b",\n") + chunk)
            first = False
            n += len(batch)
        f.write(b"\n]}\n")
    return n


def run_child(path: Path, repeat: int) -> dict:
    """Analyse `path` in `repeat` fresh subprocesses; median times, largest RSS."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"analysis failed:\n{proc.stderr}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["wall_s"] = wall
        runs.append(out)
    out = dict(runs[0])
    for k in ("analyze_s", "wall_s"):
        out[k] = statistics.median(r[k] for r in runs)
        out[k + "_min"] = min(r[k] for r in runs)
    out["maxrss_mb"] = max(r["maxrss_mb"] for r in runs)
    out["worker_maxrss_mb"] = max(r["worker_maxrss_mb"] for r in runs)
    # the brief's measure: getrusage(RUSAGE_CHILDREN).ru_maxrss of this process = the largest child
    out["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", default="5,10,20", help="comma-separated copy counts (ascending)")
    ap.add_argument("--keep", type=Path, help="write the traces here and keep them")
    ap.add_argument("--plain", action="store_true", help="write plain .json instead of .json.gz")
    ap.add_argument("--repeat", type=int, default=3, help="analysis runs per size (median reported)")
    args = ap.parse_args()
    counts = [int(c) for c in args.copies.split(",")]
    tmp = tempfile.TemporaryDirectory(prefix="bench_trace_") if args.keep is None else None
    out_dir = args.keep or Path(tmp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"source: {SOURCE.name}; json: {'orjson' if orjson else 'json'}; python {sys.version.split()[0]}")
    print(f"median of {args.repeat} fresh-process runs; wall_s includes interpreter start and imports; "
          f"rss_MB = peak RSS of the analysing process (+ each parse worker's peak, if any)")
    print(f"{'copies':>6} {'events':>9} {'gz_MB':>7} {'analyze_s':>9} {'(min)':>6} {'wall_s':>7} {'rss_MB':>7} {'workers':>7} {'us/event':>8}")
    try:
        for c in sorted(counts):
            path = out_dir / f"bench_{c}x.json{'' if args.plain else '.gz'}"
            n = build(c, path, args.plain)
            os.sync()  # let the written file's writeback finish before timing reads
            r = run_child(path, args.repeat)
            rss = f"{r['maxrss_mb']:.0f}" + (f"+{r['workers']}x{r['worker_maxrss_mb']:.0f}" if r["workers"] else "")
            print(
                f"{c:>6} {r['events']:>9} {path.stat().st_size / 1e6:>7.1f} {r['analyze_s']:>9.2f} {r['analyze_s_min']:>6.2f} "
                f"{r['wall_s']:>7.2f} {rss:>7} {r['workers']:>7} {1e6 * r['analyze_s'] / r['events']:>8.2f}",
                flush=True,
            )
            assert r["events"] == n, (r["events"], n)
            f = r["figures"]
            print(f"       kernels={f['kernels']:.0f} launches={f['launches']:.0f} tklqt_us={f['tklqt_us']:.0f} gpu_util={f['gpu_util']:.3f} (children maxrss {r['children_maxrss_mb']:.0f} MB)")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
