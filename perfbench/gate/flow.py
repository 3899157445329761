"""`perfbench gate SUITE.yaml`: measure, compare with the baseline, confirm, decide.

Two ways to get a baseline:

* history (default): the last N completed runs of the same spec hash on the same hardware whose
  subject is on the baseline branch. A single candidate run is compared with them; the minimum
  effect widens to the history's own run-to-run spread (a 99% prediction interval), so the
  machine's day-to-day wobble is not called a regression;
* `--interleave BASE_CMD`: base and candidate alternate on this machine in a randomized order
  (perfbench.gate.interleave); the rounds are paired.

A suspected regression (verdict `slower`) is measured again, once, and fails the gate only if that
confirmation run on its own is `slower` too: single runs do not alert. Exit codes: 0 pass, 1
regression confirmed, 2 bad input, 3 store unusable, 4 could not measure. A confirmed regression
wins over a measurement error elsewhere (both are reported); nothing else ever exits 1.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from perfbench.gate import EXIT_NOT_MEASURED, NotMeasured
from perfbench.gate.suite import BLOCK, HUGEPAGES, PAIRS, PIN, ROUNDS, Suite, Workload

#: Roles of gate runs (subject.role). History baselines use candidate and confirm runs only.
HISTORY_ROLES = ("candidate", "confirm")


@dataclass
class GateOptions:
    suite: Suite
    store_path: Path
    subject: dict
    baseline_branch: str
    baseline_runs: int
    interleave: str | None = None
    rounds: int = ROUNDS
    block: int = BLOCK
    pairs: int = PAIRS
    pin: bool = PIN
    hugepages: bool = HUGEPAGES
    confirm: bool = True
    seed: int | None = None
    candidate_cmd: list[str] = field(default_factory=lambda: [sys.executable, "-m", "perfbench"])
    log: Callable[[str], None] = lambda msg: None


def floors_for(store, hardware_id: str, spec_hash: str, mode: str) -> dict[tuple[str, str], float]:
    """Calibrated noise floors of one spec on one machine, for one mode (separate | interleaved)."""
    return {(r["point_key"], r["metric"]): r["floor"]
            for r in store.noise_floors(hardware_id=hardware_id, spec_hash=spec_hash) if r["mode"] == mode}


def baseline_runs(store, run: dict, branch: str, n: int, exclude: set[str]) -> list[dict]:
    """The last `n` completed runs of this spec hash on this hardware from `branch`, oldest first."""
    hist = [r for r in store.find_runs(spec_hash=run["spec_hash"], hardware_id=run["hardware_id"])
            if r["run_id"] not in exclude and (r.get("subject") or {}).get("branch") == branch
            and (r.get("subject") or {}).get("role") in HISTORY_ROLES]
    return [store.get_run(r["run_id"]) for r in hist[-n:]]


def _measure(store, w: Workload, subject: dict, log) -> dict:
    """One in-process run of a workload, tagged with its subject; NotMeasured if it cannot run."""
    from perfbench.runner import run_spec

    try:
        res = run_spec(w.spec, store, spec_path=str(w.spec_path), subject=subject)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        from perfbench.errors import StoreError

        if isinstance(exc, StoreError):
            raise
        raise NotMeasured(f"{w.name}: {type(exc).__name__}: {exc}") from exc
    run = store.get_run(res.run_id)
    if not subject.get("engine_version") and (run.get("engine") or {}).get("version"):
        store.set_subject(res.run_id, {**subject, "engine_version": str(run["engine"]["version"])})
        run = store.get_run(res.run_id)
    log(f"{w.name}: run {res.run_id} ({subject.get('role')}) {res.status}")
    return run


def _errors_of(run: dict, w: Workload) -> list[str]:
    out = [f"{w.name} {p['batch_size']}x{p['seq_len']}: {p.get('error')}" for p in run["points"]
           if p["status"] != "ok"]
    if run["status"] != "completed":
        out.append(f"{w.name}: run {run['run_id']} {run['status']}: {run.get('reason')}")
    return out


def run_gate(opts: GateOptions) -> dict[str, Any]:
    """The whole gate over the suite; returns the result (exit_code included) for the reports."""
    from perfbench.store import ResultsStore

    s = opts.suite
    result: dict[str, Any] = {"suite": s.name, "suite_path": str(s.path), "subject": opts.subject,
                              "alpha": s.alpha, "thresholds": s.thresholds, "comparisons": [], "errors": [],
                              "notes": [], "runs": [], "mode": "interleaved" if opts.interleave else "history",
                              "baseline_desc": (f"interleaved with {opts.interleave}, {opts.pairs} worker pair(s) x {opts.rounds} rounds of {opts.block} step(s)"
                                                if opts.interleave else
                                                f"branch {opts.baseline_branch}, last {opts.baseline_runs} runs")}
    with ResultsStore(opts.store_path) as store:
        for w in s.workloads:
            try:
                if opts.interleave:
                    rows = _gate_interleaved(store, w, opts, result)
                else:
                    rows = _gate_history(store, w, opts, result)
            except NotMeasured as exc:
                result["errors"].append(str(exc))
                continue
            result["comparisons"].extend(rows)
    confirmed = any(r.get("confirmed") for r in result["comparisons"])
    result["exit_code"] = 1 if confirmed else (EXIT_NOT_MEASURED if result["errors"] else 0)
    return result


def _records(df, extra: dict) -> list[dict]:
    from perfbench.gate.report import records

    return [{**r, **extra} for r in records(df)]


def _gate_history(store, w: Workload, opts: GateOptions, result: dict) -> list[dict]:
    from perfbench.gate.compare import compare_runs

    s = opts.suite
    run = _measure(store, w, opts.subject, opts.log)
    result["runs"].append(run["run_id"])
    result["hardware_id"] = run["hardware_id"]
    result["errors"].extend(_errors_of(run, w))
    base = baseline_runs(store, run, opts.baseline_branch, opts.baseline_runs, set(result["runs"]))
    if not base:
        result["notes"].append(f"{w.name}: no baseline yet (no run of spec {run['spec_hash']} on this hardware "
                               f"from branch {opts.baseline_branch}); this run starts the history")
        return []
    kw = dict(metrics=list(s.thresholds), thresholds=s.thresholds, alpha=s.alpha, history_floor=True,
              floors=floors_for(store, run["hardware_id"], run["spec_hash"], "separate"))
    df = compare_runs(base, [run], **kw)
    rows = _records(df, {"confirmed": False})
    suspects = [r for r in rows if r["verdict"] == "slower"]
    if suspects and opts.confirm:
        again = _measure(store, w, {**opts.subject, "role": "confirm"}, opts.log)
        result["runs"].append(again["run_id"])
        _confirm(suspects, compare_runs(base, [again], **kw), again["run_id"])
    for r in rows:
        r["reproduce"] = (f"perfbench compare {','.join(b['run_id'] for b in base)} "
                          f"{','.join(x for x in [run['run_id'], r.get('confirm_run')] if x)} "
                          f"--metric {r['metric']} --threshold {r['min_effect_pct']:.1f}% --store {opts.store_path}")
    return rows


def _confirm(suspects: list[dict], df2, confirm_run: str) -> None:
    from perfbench.gate.report import records

    again = {(r["benchmark"], r["metric"]): r for r in records(df2)}
    for r in suspects:
        r2 = again.get((r["benchmark"], r["metric"]))
        r["confirm_run"] = confirm_run
        r["confirm_verdict"] = r2["verdict"] if r2 else "missing"
        r["confirm_change_pct"] = r2["change_pct"] if r2 else None
        r["confirmed"] = bool(r2 and r2["verdict"] == "slower")
        if not r["confirmed"]:
            r["reason"] += f"; not confirmed (re-measured: {r['confirm_verdict']})"


def _gate_interleaved(store, w: Workload, opts: GateOptions, result: dict) -> list[dict]:
    from perfbench.gate.compare import compare_runs

    s = opts.suite
    ids = _pair(store, w, opts, role="candidate")
    result["runs"].extend(ids.values())
    base, cand = store.get_run(ids["base"]), store.get_run(ids["candidate"])
    result["hardware_id"] = cand["hardware_id"]
    kw = dict(metrics=list(s.thresholds), thresholds=s.thresholds, alpha=s.alpha, paired=True,
              floors=floors_for(store, cand["hardware_id"], cand["spec_hash"], "interleaved"))
    rows = _records(compare_runs([base], [cand], **kw), {"confirmed": False})
    suspects = [r for r in rows if r["verdict"] == "slower"]
    if suspects and opts.confirm:
        ids2 = _pair(store, w, opts, role="confirm")
        result["runs"].extend(ids2.values())
        _confirm(suspects, compare_runs([store.get_run(ids2["base"])], [store.get_run(ids2["candidate"])], **kw),
                 ids2["candidate"])
    for r in rows:
        r["reproduce"] = (f"perfbench compare {ids['base']} {ids['candidate']} --paired --metric {r['metric']} "
                          f"--threshold {r['min_effect_pct']:.1f}% --store {opts.store_path}")
    return rows


def _pair(store, w: Workload, opts: GateOptions, role: str) -> dict[str, str]:
    """One interleaved measurement of a workload, stored as a base run and a candidate run."""
    import os
    import random

    from perfbench.gate.interleave import measure_pair, store_pair

    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(2**32)
    opts.log(f"{w.name}: interleaving base and candidate: {opts.pairs} worker pair(s) x {opts.rounds} rounds (seed {seed})")
    pair = measure_pair(shlex.split(opts.interleave), opts.candidate_cmd, w.spec_path, w.overrides,
                        rounds=opts.rounds, block=opts.block, pairs=opts.pairs, seed=seed, cand_env=dict(os.environ),
                        pin=opts.pin and w.spec.backend.get("threads") == 1, hugepages=opts.hugepages)
    base_subject = {"role": "base", "base_cmd": opts.interleave, "of": opts.subject.get("commit")}
    ids = store_pair(store, pair, {"base": base_subject, "candidate": {**opts.subject, "role": role}})
    opts.log(f"{w.name}: runs base {ids['base']}, candidate {ids['candidate']} ({role})")
    return ids


def calibrate(suite: Suite, store_path: Path, *, rounds: int, interleave: bool, subject: dict,
              candidate_cmd: list[str] | None = None, log=lambda m: None) -> list[dict]:
    """A/A on this machine: the suite measured twice per round with the same code. Each point's
    floor is the largest change an A/A comparison could not rule out (the far end of its
    confidence interval), over every round: the gate's minimum effect never goes below it."""
    from perfbench.gate.compare import compare_runs
    from perfbench.gate.stats import aa_far_end
    from perfbench.store import ResultsStore

    cmd = candidate_cmd or [sys.executable, "-m", "perfbench"]
    out: list[dict] = []
    with ResultsStore(store_path) as store:
        for w in suite.workloads:
            found: dict[tuple, list[float]] = {}
            hw = spec_hash = None
            for r in range(rounds):
                if interleave:
                    opts = GateOptions(suite, store_path, subject, "", 0, interleave=shlex.join(cmd), rounds=suite.rounds, block=suite.block, pairs=suite.pairs, pin=suite.pin,
                                       hugepages=suite.hugepages,
                                       candidate_cmd=cmd, log=log)
                    ids = _pair(store, w, opts, role="calibrate")
                    a, b = store.get_run(ids["base"]), store.get_run(ids["candidate"])
                else:
                    a = _measure(store, w, {**subject, "role": "calibrate"}, log)
                    b = _measure(store, w, {**subject, "role": "calibrate"}, log)
                hw, spec_hash = b["hardware_id"], b["spec_hash"]
                df = compare_runs([a], [b], metrics=list(suite.thresholds), thresholds={m: 0.0 for m in suite.thresholds},
                                  alpha=suite.alpha, paired=interleave)
                for row in df.to_dict("records"):
                    if row["ci_low"] is not None and row["ci_low"] == row["ci_low"]:
                        far = aa_far_end(row["ratio"], row["ci_low"], row["ci_high"])
                        found.setdefault((row["point"], row["metric"]), []).append(far)
            mode = "interleaved" if interleave else "separate"
            for (pk, metric), fars in found.items():
                out.append({"hardware_id": hw, "spec_hash": spec_hash, "point_key": pk, "metric": metric, "mode": mode,
                            "floor": max(fars), "pairs": len(fars), "detail": {"workload": w.name, "per_pair": fars}})
        store.put_noise_floors(out)
    return out
