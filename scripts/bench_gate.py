"""The CI gate's three figures, measured on this machine (a benchmark, not a timed test).

1. A/A false-positive rate: the tiny suite gated against itself, over >= 200 point comparisons,
   interleaved (the gate's `--interleave` workers) and from separate runs (history mode).
2. Detection power: a real slowdown made by a spec change that costs time (a longer prompt:
   batch 2, seq_len 98 -> 102, or batch 4, 48 -> 51), its true size the median ratio over the
   interleaved trials; for each size, the share of trials in which the gate (initial verdict +
   confirmation) fails.
3. Change points: simulated histories of 60 runs with a 5% step, spikes and Gaussian noise; how
   often the step's run is named within +-1, and false steps per 100 runs.

Every verdict goes through the gate's own code (perfbench.gate.stats / compare / changepoint) and
every interleaved measurement through its workers (perfbench.gate.interleave), at the suite's
interleaving defaults (gate.suite: pairs, rounds, block, pin, hugepages). The figures in
docs/ci.md (times on 2 cores; the A/A figure and the first power row ran side by side under
`taskset -c 1` / `-c 0`, the other power rows alone on a quiet machine):

    .venv/bin/python scripts/bench_gate.py --figure aa --aa-batches 1,2,3,4,5,6,7,8 --verbose  # 66 min
    .venv/bin/python scripts/bench_gate.py --figure power --base-seq-len 48 --seq-lens 51 \
        --trials 20 --no-separate --verbose                                           # 54 min
    .venv/bin/python scripts/bench_gate.py --figure power --base-seq-len 49 --seq-lens 51 \
        --trials 20 --no-separate --verbose                                           # 49 min
    .venv/bin/python scripts/bench_gate.py --figure power --power-batch 2 --base-seq-len 98 \
        --seq-lens 102 --trials 20 --no-separate --verbose                            # 53 min
    .venv/bin/python scripts/bench_gate.py --figure power --seq-lens 34,40,48,64 --no-interleaved \
        --trials-separate 15                                                          # ~3 min
    .venv/bin/python scripts/bench_gate.py --figure changepoints                      # ~1 min

`--verbose` prints every worker pair's ratio (the outlier pairs the statistics set aside); the
figures' JSON and summary count pairs more than 4% and 8% from their measurement's median pair
(`--no-hugepages` for the 4 KiB-page comparison in docs/ci.md).
Results: results/bench_gate/<figure>.json and a Markdown summary on stdout.
scripts/gate_power_model.py derives the power model and A/A interval far ends docs/ci.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfbench.gate.changepoint import detect  # noqa: E402
from perfbench.gate.interleave import pick_cpu, start_workers, worker_env  # noqa: E402
from perfbench.gate.stats import compare_groups, prediction_floor  # noqa: E402
from perfbench.gate.suite import BLOCK, HUGEPAGES, PAIRS, ROUNDS, load_suite  # noqa: E402

SUITE = REPO / "workloads" / "suites" / "tiny-cpu.yaml"
OUT = REPO / "results" / "bench_gate"
CMD = [sys.executable, "-m", "perfbench"]
#: Every worker pair's ratio relative to its measurement's median pair (--verbose, figure JSON).
PAIR_SPREAD: list[float] = []


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- interleaved trials through the gate's workers ------------------------------------------------

class Pair:
    """A base worker and one candidate worker per candidate spec, each with its model loaded
    once: the power figure measures all its variants against one base in the same fresh set of
    processes (a process start costs seconds here, a round milliseconds)."""

    def __init__(self, wl, base_set: list[str], cand_sets: list[list[str]], rng, block: int = 1, cpus=None,
                 env: dict | None = None):
        specs = [(CMD, wl.spec_path, wl.overrides + base_set, "base", env)]
        specs += [(CMD, wl.spec_path, wl.overrides + c, f"candidate {n}", env) for n, c in enumerate(cand_sets)]
        self.base, *self.cands = start_workers(specs, rng, cpus)  # as the gate starts them
        self.repeats = block

    def trial(self, index: int, rounds: int, rng: random.Random, cand: int = 0) -> tuple[list, list]:
        """One interleaved measurement of point `index`: per-round samples of each side."""
        sides = {"b": self.base, "c": self.cands[cand]}
        for k in rng.sample("bc", 2):
            sides[k].ask({"op": "prepare", "index": index})
        got: dict[str, list] = {"b": [], "c": []}
        for _ in range(rounds):
            for k in rng.sample("bc", 2):
                got[k].append(sides[k].ask({"op": "measure", "repeats": self.repeats})["samples_s"])
        for w in sides.values():
            w.ask({"op": "finish"})
        return got["b"], got["c"]

    def close(self) -> None:
        for w in (self.base, *self.cands):
            w.close()


def interleaved_once(wl, base_set, cand_sets, todo, args, rng) -> dict:
    """One gate measurement as `perfbench gate --interleave` makes it: `args.pairs` fresh sets of
    workers in turn (new processes: memory layout and placement drawn anew), each (candidate,
    point) in `todo` interleaved `args.rounds` rounds in each set, in a random order; rounds
    clustered by worker set in the statistics."""
    rounds: dict[tuple, tuple[list, list]] = {t: ([], []) for t in todo}
    env = worker_env({**os.environ, **dict(args.worker_env)}, args.hugepages)
    for _ in range(args.pairs if todo else 0):
        pair = Pair(wl, base_set, cand_sets, rng, args.block, pick_cpu(rng) if args.pin else None, env)
        try:
            for cand, i in rng.sample(list(todo), len(todo)):
                b, c = pair.trial(i, args.rounds, rng, cand)
                rounds[(cand, i)][0].extend(b)
                rounds[(cand, i)][1].extend(c)
        finally:
            pair.close()
    out = {t: compare_groups(b, c, min_effect=args.min_effect, alpha=args.alpha, paired=True, clusters=args.pairs)
           for t, (b, c) in rounds.items()}
    for t, c in sorted(out.items()):
        med = statistics.median(c.pair_ratios)
        PAIR_SPREAD.extend(r / med for r in c.pair_ratios)
        if args.verbose:
            print(f"    candidate {t[0]} point {t[1]}: per-pair ratios " + " ".join(f"{r:.3f}" for r in c.pair_ratios),
                  file=sys.stderr, flush=True)
    return out


def pair_spread_summary() -> dict:
    """How far worker pairs sat from their measurement's median pair: the slow-for-life processes
    that huge pages removed (docs/ci.md, Interleaved mode)."""
    xs = PAIR_SPREAD
    return {"pairs": len(xs), "off_by_more_than_4pct": sum(abs(x - 1) > 0.04 for x in xs),
            "off_by_more_than_8pct": sum(abs(x - 1) > 0.08 for x in xs),
            "sd": statistics.pstdev(xs) if len(xs) > 1 else None,
            "range": [min(xs), max(xs)] if xs else None}


def gate_verdicts(wl, base_set, cand_sets, todo, args, rng) -> list[dict]:
    """The gate's decision per (candidate, point): a paired comparison, and for a suspected
    regression a confirmation measured by another fresh set of workers."""
    first = interleaved_once(wl, base_set, cand_sets, todo, args, rng)
    suspects = [t for t, c in first.items() if c.verdict == "slower"]
    again = interleaved_once(wl, base_set, cand_sets, suspects, args, rng) if suspects else {}
    return [{"candidate": t[0], "point": t[1], "ratio": c.ratio, "verdict": c.verdict, "ci": [c.ci_low, c.ci_high],
             "pair_ratios": c.pair_ratios, "confirm_ratio": again[t].ratio if t in again else None,
             "confirmed": t in again and again[t].verdict == "slower"} for t, c in first.items()]


def figure_aa_interleaved(args, wl) -> dict:
    rng = random.Random(args.seed)
    npts = len(wl.spec.batch_sizes)
    rows = []
    t0 = time.time()
    while len(rows) < args.comparisons:
        rows += gate_verdicts(wl, [], [[]], [(0, i) for i in range(npts)], args, rng)
        if len(rows) % 20 == 0:
            print(f"  A/A interleaved: {len(rows)} comparisons, {sum(r['confirmed'] for r in rows)} confirmed "
                  f"(load {load_avg()})", file=sys.stderr, flush=True)
    return _aa_summary(rows, "interleaved", t0, args)


def _aa_summary(rows, mode, t0, args) -> dict:
    n = len(rows)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("same", "faster", "slower", "ambiguous")}
    conf = sum(r["confirmed"] for r in rows)
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    return {"mode": mode, "comparisons": n, "verdicts": counts, "confirmed_regressions": conf,
            "false_positive_rate": conf / n, "slower_before_confirmation_rate": counts["slower"] / n,
            "aa_ratio_min": min(ratios), "aa_ratio_max": max(ratios),
            "aa_ratio_p05_p95": [statistics.quantiles(ratios, n=20)[0], statistics.quantiles(ratios, n=20)[-1]],
            "min_effect": args.min_effect, "alpha": args.alpha, "rounds": args.rounds, "pairs": args.pairs,
            "block": args.block,
            "seconds": round(time.time() - t0), "load_avg_end": load_avg(), "rows": rows}


# -- separate runs (history mode) ---------------------------------------------------------------

def separate_runs(spec, n: int, store_path: Path) -> list[dict]:
    """`n` runs of `spec`, each a fresh backend load in this process (as `perfbench run` would)."""
    from perfbench.runner import run_spec
    from perfbench.store import ResultsStore

    runs = []
    with ResultsStore(store_path) as st:
        for _ in range(n):
            runs.append(st.get_run(run_spec(spec, st).run_id))
    return runs


def _samples(run: dict, index: int) -> list[float]:
    return run["points"][index]["samples_s"]


def history_verdict(base_runs: list[dict], cand: dict, confirm: dict | None, index: int, args) -> dict:
    """History mode: last runs as baseline, minimum effect widened by their spread, confirmation."""
    meds = [statistics.median(_samples(r, index)) for r in base_runs]
    floor = prediction_floor(meds)
    effect = max(args.threshold_history, floor or 0)
    groups = [_samples(r, index) for r in base_runs]
    first = compare_groups(groups, [_samples(cand, index)], min_effect=effect, alpha=args.alpha)
    out = {"ratio": first.ratio, "verdict": first.verdict, "min_effect": effect, "confirmed": False}
    if first.verdict == "slower" and confirm is not None:
        again = compare_groups(groups, [_samples(confirm, index)], min_effect=effect, alpha=args.alpha)
        out["confirmed"] = again.verdict == "slower"
    return out


def figure_aa_history(args, wl) -> dict:
    t0 = time.time()
    npts = len(wl.spec.batch_sizes)
    need = args.comparisons // npts + args.baseline_runs + 1
    with tempfile.TemporaryDirectory() as tmp:
        runs = separate_runs(wl.spec, need, Path(tmp) / "s.sqlite")
    rows = []
    for i in range(args.baseline_runs, len(runs) - 1):
        for p in range(npts):
            rows.append({"point": p, **history_verdict(runs[i - args.baseline_runs:i], runs[i], runs[i + 1], p, args)})
    out = _aa_summary(rows, "history", t0, args)
    meds = [statistics.median(_samples(r, 0)) for r in runs]
    out["run_to_run_cv_b1"] = statistics.stdev(meds) / statistics.mean(meds)
    out["threshold"] = args.threshold_history
    return out


# -- detection power -----------------------------------------------------------------------------

def figure_power(args, wl) -> dict:
    """Per seq_len variant: the detection rate of the interleaved gate (fresh workers per trial,
    confirmation included) and from separate runs; the true slowdown is the median ratio over the
    interleaved trials (each a fresh set of processes). All variants of a trial share its worker
    sets (one base worker, one worker per variant), each variant interleaved with the base."""
    rng = random.Random(args.seed + 1)
    base_seq = args.base_seq_len or wl.spec.seq_len
    base_set = [f"batch_sizes=[{args.power_batch}]", f"seq_len={base_seq}"]
    out = {"base_seq_len": base_seq, "batch": args.power_batch, "variants": [], "min_effect": args.min_effect,
           "alpha": args.alpha, "rounds": args.rounds, "block": args.block, "pairs": args.pairs, "trials": args.trials,
           "threshold_history": args.threshold_history}
    t0 = time.time()
    rows = [{"seq_len": seq} for seq in args.seq_lens]
    if args.interleaved:
        cand_sets = [base_set + [f"seq_len={seq}"] for seq in args.seq_lens]
        trials = []
        for n in range(args.trials):
            trials.append(gate_verdicts(wl, base_set, cand_sets, [(v, 0) for v in range(len(cand_sets))], args, rng))
            print(f"  trial {n + 1}/{args.trials}: " + ", ".join(
                f"{args.seq_lens[t['candidate']]}: {t['ratio']:.3f} {t['verdict']}{' confirmed' if t['confirmed'] else ''}"
                for t in sorted(trials[-1], key=lambda t: t["candidate"])) + f" (load {load_avg()})",
                file=sys.stderr, flush=True)
        for v, row in enumerate(rows):
            mine = [t for trial in trials for t in trial if t["candidate"] == v]
            ratios = sorted(t["ratio"] for t in mine)
            row.update(true_slowdown_pct=(statistics.median(ratios) - 1) * 100, trial_ratio_range=[ratios[0], ratios[-1]],
                       detected_interleaved=sum(t["confirmed"] for t in mine) / len(mine),
                       trials=[{k: t[k] for k in ("ratio", "verdict", "ci", "pair_ratios", "confirm_ratio", "confirmed")} for t in mine])
    for row in rows:
        if args.separate:
            row["detected_separate"], row["separate_median_ratio"] = _power_separate(wl, base_seq, row["seq_len"], args)
        print(f"  seq_len {row['seq_len']}: { {k: v for k, v in row.items() if k != 'trials'} } (load {load_avg()})",
              file=sys.stderr, flush=True)
    out["variants"] = rows
    if args.interleaved:
        out["smallest_detected_95_interleaved_pct"] = _smallest(out["variants"], "detected_interleaved")
    if args.separate:
        out["smallest_detected_95_separate_pct"] = _smallest(out["variants"], "detected_separate")
    out["seconds"] = round(time.time() - t0)
    out["load_avg_end"] = load_avg()
    return out


def _power_separate(wl, base_seq: int, seq: int, args) -> tuple[float, float]:
    """Separate runs: baseline runs and candidate runs alternate in time (as CI runs would come)."""
    base_spec = wl.spec.model_copy(update={"batch_sizes": [args.power_batch], "seq_len": base_seq})
    cand_spec = base_spec.model_copy(update={"seq_len": seq})
    hits, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = separate_runs(base_spec, args.baseline_runs, Path(tmp) / "s.sqlite")
        for _ in range(args.trials_separate):
            cand = separate_runs(cand_spec, 2, Path(tmp) / "s.sqlite")
            hits.append(history_verdict(base[-args.baseline_runs:], cand[0], cand[1], 0, args)["confirmed"])
            ratios.append(statistics.median(_samples(cand[0], 0)) / statistics.median(_samples(base[-1], 0)))
            base += separate_runs(base_spec, 1, Path(tmp) / "s.sqlite")
    return sum(hits) / len(hits), statistics.median(ratios)


def _smallest(variants: list[dict], key: str) -> float | None:
    ok = sorted(v.get("true_slowdown_pct", (v.get("separate_median_ratio", 1) - 1) * 100)
                for v in variants if v.get(key, 0) >= 0.95)
    return ok[0] if ok else None


# -- change points on simulated histories -----------------------------------------------------------

def figure_changepoints(args) -> dict:
    import numpy as np

    rng = np.random.default_rng(args.seed)
    out = {"runs": 60, "step_pct": 5.0, "spike_probability": 0.03, "spike_size": "+15% .. +50%", "noise": []}
    for sigma in args.sigmas:
        located = false = aa_false = 0
        for _ in range(args.cp_trials):
            k = int(rng.integers(10, 51))
            x = _history(rng, sigma, k, 0.05)
            steps = detect(x)
            near = [s for s in steps if abs(s.index - k) <= 1]
            located += bool(near)
            false += len(steps) - min(1, len(near))
            aa_false += len(detect(_history(rng, sigma, k, 0.0)))
        n = args.cp_trials
        out["noise"].append({"sigma_pct": sigma * 100, "located_within_1": located / n,
                             "false_steps_per_100_runs": false / (n * 60) * 100,
                             "false_steps_per_100_runs_no_step": aa_false / (n * 60) * 100})
    return out


def _history(rng, sigma: float, k: int, step: float):
    import numpy as np

    x = np.ones(60)
    x[k:] *= 1 + step
    x *= np.exp(rng.normal(0, sigma, 60))
    spikes = rng.random(60) < 0.03
    x[spikes] *= 1 + rng.uniform(0.15, 0.5, spikes.sum())
    return x.tolist()


# -- main ------------------------------------------------------------------------------------------

def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or "\0" in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figure", choices=("all", "aa", "power", "changepoints"), default="all")
    ap.add_argument("--comparisons", type=int, default=200, help="A/A point comparisons per mode")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds per worker pair (suite default)")
    ap.add_argument("--block", type=int, default=BLOCK, help="steps per side per round (suite default)")
    ap.add_argument("--pairs", type=int, default=PAIRS, help="fresh worker pairs per measurement (suite default)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="leave workers free to move between CPUs "
                    "(interleave.pin: false)")
    ap.add_argument("--aa-batches", default="1,2,3,4", help="batch sizes of the A/A figure's points")
    ap.add_argument("--power-batch", type=int, default=4, help="batch size of the power figure's point")
    ap.add_argument("--base-seq-len", type=int, default=None, help="power figure's base seq_len (suite's by default)")
    ap.add_argument("--min-effect", type=float, default=0.03, help="interleaved minimum effect (fraction)")
    ap.add_argument("--threshold-history", type=float, default=0.05, help="history-mode threshold (fraction)")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--baseline-runs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=20, help="interleaved power trials per variant")
    ap.add_argument("--trials-separate", type=int, default=20, help="separate-run power trials per variant")
    ap.add_argument("--seq-lens", type=lambda s: [int(x) for x in s.split(",")], default=[33, 34, 35, 36, 38, 40, 48])
    ap.add_argument("--no-separate", dest="separate", action="store_false", help="skip separate-run power")
    ap.add_argument("--no-interleaved", dest="interleaved", action="store_false", help="skip interleaved power")
    ap.add_argument("--sigmas", type=lambda s: [float(x) for x in s.split(",")], default=[0.005, 0.01, 0.015, 0.02, 0.025])
    ap.add_argument("--cp-trials", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="print every worker pair's ratio")
    ap.add_argument("--no-hugepages", dest="hugepages", action="store_false", default=HUGEPAGES,
                    help="workers on 4 KiB pages (interleave.hugepages: false)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                    help="extra environment variable for every worker (repeatable)")
    args = ap.parse_args()
    wl = load_suite(SUITE).workloads[0]
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load_avg()} ({os.cpu_count()} cores)", file=sys.stderr, flush=True)
    todo = ["aa", "power", "changepoints"] if args.figure == "all" else [args.figure]
    results = {}
    batches = [int(x) for x in args.aa_batches.split(",")]
    if batches != wl.spec.batch_sizes:  # more points per measurement: the tiny suite's workload, more batch sizes
        wl.overrides = wl.overrides + [f"batch_sizes={batches}"]
        wl.spec = wl.spec.model_copy(update={"batch_sizes": batches})
    if "aa" in todo:
        results["aa"] = {"interleaved": figure_aa_interleaved(args, wl), "history": figure_aa_history(args, wl)}
        results["aa"]["interleaved"]["worker_pairs"] = pair_spread_summary()
        PAIR_SPREAD.clear()
    if "power" in todo:
        results["power"] = figure_power(args, wl)
        if args.interleaved:
            results["power"]["worker_pairs"] = pair_spread_summary()
    if "changepoints" in todo:
        results["changepoints"] = figure_changepoints(args)
    for name, res in results.items():
        (OUT / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
        (OUT / f"{name}.md").write_text(markdown({name: res}) + "\n")
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = []
    if "aa" in results:
        lines.append("A/A false positives (confirmed regressions / point comparisons):")
        for mode, r in results["aa"].items():
            lines.append(f"- {mode}: {r['confirmed_regressions']}/{r['comparisons']} = {r['false_positive_rate']:.2%} "
                         f"(slower before confirmation {r['slower_before_confirmation_rate']:.1%}; verdicts "
                         f"{r['verdicts']}; A/A ratios {r['aa_ratio_min']:.2f}..{r['aa_ratio_max']:.2f}, "
                         f"5-95% {r['aa_ratio_p05_p95'][0]:.3f}..{r['aa_ratio_p05_p95'][1]:.3f}; "
                         f"{r['seconds']} s, load {r['load_avg_end']})")
    if "power" in results:
        p = results["power"]
        lines.append(f"Detection power (seq_len {p['base_seq_len']} -> N, gate = verdict + confirmation):")
        lines.append("| seq_len | slowdown (interleaved median) | detected interleaved | slowdown (separate runs median) | detected separate |")
        lines.append("|---:|---:|---:|---:|---:|")
        for v in p["variants"]:
            sep = f"{v['detected_separate']:.0%}" if "detected_separate" in v else "-"
            sep_r = f"{(v['separate_median_ratio'] - 1) * 100:+.1f}%" if "separate_median_ratio" in v else "-"
            tru = f"{v['true_slowdown_pct']:+.1f}%" if "true_slowdown_pct" in v else "-"
            det = f"{v['detected_interleaved']:.0%}" if "detected_interleaved" in v else "-"
            lines.append(f"| {v['seq_len']} | {tru} | {det} | {sep_r} | {sep} |")
        lines.append(f"smallest slowdown detected in >= 95% of trials: interleaved "
                     f"{p.get('smallest_detected_95_interleaved_pct')}%, separate {p.get('smallest_detected_95_separate_pct')}%")
    for name in ("aa", "power"):
        wp = (results.get(name, {}).get("interleaved") if name == "aa" else results.get(name, {})) or {}
        if wp.get("worker_pairs", {}).get("pairs"):
            w = wp["worker_pairs"]
            lines.append(f"{name}: worker pairs more than 8% from their measurement's median pair: "
                         f"{w['off_by_more_than_8pct']} of {w['pairs']} (more than 4%: {w['off_by_more_than_4pct']}; "
                         f"SD {w['sd']:.3f})")
    if "changepoints" in results:
        lines.append("Change points (60 runs, 5% step, 3% spikes):")
        for r in results["changepoints"]["noise"]:
            lines.append(f"- noise {r['sigma_pct']:.1f}%: step within +-1 in {r['located_within_1']:.1%}, "
                         f"false steps {r['false_steps_per_100_runs']:.2f}/100 runs "
                         f"({r['false_steps_per_100_runs_no_step']:.2f} without a step)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
