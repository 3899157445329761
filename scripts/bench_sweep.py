#!/usr/bin/env python
"""Sweep overhead per trial on the CPU: wall time per trial minus the time spent inside the
workload measurement itself (warm-up + timed iterations). Target: under 2 s.

Runs a small grid of the tiny Llama (seq_len 16, 3 repeats, no minimum time) into a throwaway
store, exactly as `perfbench sweep run` does, and reports per trial:

  wall_s      from the sweep handing the trial to the executor to its outcome being committed
  measure_s   warm-up + measured iterations, summed from the run's own points
  overhead_s  wall_s - measure_s: process start, model build, run bookkeeping, result hand-back

plus the amortised figure: (whole sweep wall time - all measure_s) / trials, which also charges
the once-per-sweep costs (fork server start-up with its torch+transformers import, hardware
fingerprint, store set-up).

    .venv/bin/python scripts/bench_sweep.py                 # 10 trials, fork server (default)
    .venv/bin/python scripts/bench_sweep.py --start spawn   # a cold `python -m` process per trial
    .venv/bin/python scripts/bench_sweep.py --trials 20 --json --check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="grid size (seeds x batch 1, 2)")
    ap.add_argument("--start", choices=("auto", "forkserver", "spawn"), default="auto",
                    help="how trial processes start (PERFBENCH_SWEEP_START)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    ap.add_argument("--check", action="store_true", help=f"exit 1 if the mean overhead is >= {TARGET_S} s")
    args = ap.parse_args()
    os.environ["PERFBENCH_SWEEP_START"] = args.start

    t_import = time.perf_counter()
    from perfbench.store import ResultsStore
    from perfbench.sweep.engine import run_sweep
    from perfbench.sweep.landscape import load_sweep_data
    from perfbench.sweep.spec import parse_sweep

    seeds = max(1, (args.trials + 1) // 2)
    sweep = parse_sweep({
        "name": "bench-sweep",
        "workload": {"name": "bench", "model": "tiny-llama", "phase": "prefill", "batch_sizes": [1],
                     "seq_len": 16, "dtype": "float32", "device": "cpu",
                     "measure": {"warmup": 1, "repeats": 3, "min_seconds": 0.0}},
        "method": "grid",
        "parameters": {"seed": {"values": list(range(seeds))}, "batch_size": {"values": [1, 2]}},
        "budget": {"trials": args.trials},
    })
    with tempfile.TemporaryDirectory(prefix="perfbench-bench-sweep-") as d:
        with ResultsStore(Path(d) / "bench.sqlite") as st:
            t0 = time.perf_counter()
            res = run_sweep(sweep, st)
            sweep_wall = time.perf_counter() - t0
            summary, df, _ = load_sweep_data(st, res.sweep_id)
    ok = df[df["status"] == "completed"]
    if ok.empty:
        print("no trial completed:", summary["results"][:1], file=sys.stderr)
        return 1
    over = ok["overhead_s"].astype(float)
    out = {
        "start": args.start, "trials": int(len(df)), "completed": int(len(ok)),
        "sweep_wall_s": round(sweep_wall, 3), "import_s": round(t0 - t_import, 3),
        "wall_s_mean": round(float(ok["wall_s"].mean()), 4),
        "measure_s_mean": round(float(ok["measure_s"].mean()), 4),
        "overhead_s_mean": round(float(over.mean()), 4),
        "overhead_s_median": round(float(over.median()), 4),
        "overhead_s_max": round(float(over.max()), 4),
        "overhead_s_amortised": round((sweep_wall - float(ok["measure_s"].sum())) / len(ok), 4),
        "target_s": TARGET_S,
    }
    out["pass"] = out["overhead_s_mean"] < TARGET_S
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['completed']}/{out['trials']} trials, start={args.start}, sweep wall {sweep_wall:.2f} s")
        print(f"{'trial':>5} {'wall_s':>8} {'measure_s':>10} {'overhead_s':>11}")
        for _, r in ok.iterrows():
            print(f"{int(r['trial_index']):>5} {r['wall_s']:>8.3f} {r['measure_s']:>10.3f} {r['overhead_s']:>11.3f}")
        print(f"overhead per trial: mean {out['overhead_s_mean']:.3f} s, median {out['overhead_s_median']:.3f} s, "
              f"max {out['overhead_s_max']:.3f} s; amortised with sweep start-up "
              f"{out['overhead_s_amortised']:.3f} s  (target < {TARGET_S:g} s: "
              f"{'PASS' if out['pass'] else 'FAIL'})")
        print(f"  (whole sweep: {statistics.fmean(ok['measure_s']):.3f} s measuring per trial on average)")
    return 0 if out["pass"] or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
