"""Run (or resume) a sweep: ask the sampler, hand trials to the executor, record each outcome.

Rules the rest relies on:

* a sweep is `name-<hash of normalised spec + hardware id>`: running the same file again on the
  same machine resumes it, skipping every trial already completed, failed or infeasible (a trial
  is its parameter assignment); `--retry-failed` runs failed ones again;
* each outcome is committed the moment it is known, so Ctrl-C or a kill loses no finished trial;
  on Ctrl-C running trials get SIGTERM (their runs close as interrupted) and go back to pending;
* a crash, OOM kill, hang (per-trial timeout) or constraint violation is a failed (or
  infeasible) trial with its reason, and the sweep goes on.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from perfbench.store import ResultsStore
from perfbench.sweep.db import FINAL, SweepDB
from perfbench.sweep.executors import LocalExecutor, RayExecutor, TrialOutcome, TrialTask, import_run
from perfbench.sweep.search import make_sampler
from perfbench.sweep.spec import Sweep, constraint_target

#: Consecutive suggestions of already-measured assignments before a sampler counts as exhausted.
MAX_REPEATS = 200


@dataclass
class SweepState:
    """Counts for progress displays; `skipped` trials were final before this invocation."""

    sweep_id: str
    total: int
    resumed: bool = False
    skipped: int = 0
    completed: int = 0
    failed: int = 0
    infeasible: int = 0
    running: int = 0
    best_metric: float | None = None
    best_params: dict[str, Any] | None = None
    metric: str = ""
    goal: str = "maximize"

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)


@dataclass
class SweepHooks:
    """Callbacks the CLI draws progress with; all optional so library use stays quiet."""

    on_start: Callable[[SweepState], None] = lambda s: None
    on_trial_start: Callable[[TrialTask, SweepState], None] = lambda t, s: None
    on_trial_end: Callable[[dict, SweepState], None] = lambda t, s: None


@dataclass
class SweepRunResult:
    sweep_id: str
    status: str
    state: SweepState
    reason: str | None = None
    ran: list[dict] = field(default_factory=list)


def better(a: float, b: float | None, goal: str) -> bool:
    return b is None or (a > b if goal == "maximize" else a < b)


def evaluate(points: list[dict], metric: str, goal: str, constraints: dict[str, float]) -> dict[str, Any]:
    """A trial's status and metric from its points: the best feasible point's metric (one point
    when batch_size is swept). Points over a constraint make the trial infeasible with the reason."""
    ok = [p for p in points if p.get("status") == "ok"]
    peaks = [p["peak_memory_bytes"] for p in ok if p.get("peak_memory_bytes") is not None]
    out: dict[str, Any] = {"peak_memory_bytes": max(peaks) if peaks else None}
    if not ok:
        errs = [f"batch {p.get('batch_size')}: {p.get('error')}" for p in points if p.get("status") != "ok"]
        return {**out, "status": "failed", "metric": None,
                "reason": "; ".join(errs) if errs else "the run measured no points"}
    feasible, violations = [], []
    for p in ok:
        bad = []
        for key, limit in constraints.items():
            kind, field_ = constraint_target(key)  # type: ignore[misc]
            v = p.get(field_)
            if v is None:
                continue
            if (kind == "max" and v > limit) or (kind == "min" and v < limit):
                bad.append(f"{field_} {v:.4g} {'>' if kind == 'max' else '<'} {key} {limit:.4g}")
        if bad:
            violations.append(f"batch {p['batch_size']}: " + ", ".join(bad))
        else:
            feasible.append(p)
    measured = [p for p in ok if p.get(metric) is not None]
    if measured:
        pick = max if goal == "maximize" else min
        out["measured_metric"] = pick(p[metric] for p in measured)
    if not feasible:
        return {**out, "status": "infeasible", "metric": None,
                "reason": "infeasible: " + "; ".join(violations)}
    cands = [p for p in feasible if p.get(metric) is not None]
    if not cands:
        return {**out, "status": "failed", "metric": None, "reason": f"no point reported {metric}"}
    best = cands[0]
    for p in cands[1:]:
        if better(p[metric], best[metric], goal):
            best = p
    failed = [p for p in points if p.get("status") != "ok"]
    reason = None
    if failed or violations:
        reason = "; ".join([*(f"batch {p.get('batch_size')}: {p.get('error')}" for p in failed),
                            *violations])
    return {**out, "status": "completed", "metric": best[metric], "best_batch_size": best["batch_size"],
            "reason": reason}


def make_executor(kind: str, *, address: str | None, timeout_s: float | None, device: str,
                  workdir: Path) -> LocalExecutor | RayExecutor:
    if kind == "local":
        return LocalExecutor(workdir=workdir, timeout_s=timeout_s)
    if kind == "ray":
        return RayExecutor(address=address, timeout_s=timeout_s, device=device)
    from perfbench.errors import InputError

    raise InputError(f"--executor must be local or ray, got {kind!r}")


def run_sweep(sweep: Sweep, store: ResultsStore, *, jobs: int = 1, executor: str = "local",
              address: str | None = None, trial_timeout_s: float | None = 3600.0,
              retry_failed: bool = False, hooks: SweepHooks | None = None) -> SweepRunResult:
    """Run the sweep's remaining trials. Re-raises KeyboardInterrupt after closing the sweep as
    interrupted (completed trials stay recorded)."""
    hooks = hooks or SweepHooks()
    db = SweepDB(store)
    from perfbench.runner import sigterm_as_interrupt

    # SIGTERM (timeout, Slurm, docker stop) ends a sweep as Ctrl-C does: closed as interrupted.
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="perfbench-sweep-") as tmp:
        ex = make_executor(executor, address=address, timeout_s=trial_timeout_s,
                           device=sweep.base.device, workdir=Path(tmp))
        try:
            ex.warm_up(sweep.base.device, sweep.backends)
            hardware_id = ex.hardware_id()
            return _run(sweep, store, db, ex, hardware_id, jobs=max(1, jobs),
                        retry_failed=retry_failed, hooks=hooks)
        finally:
            ex.close()


def _run(sweep: Sweep, store: ResultsStore, db: SweepDB, ex: Any, hardware_id: str, *, jobs: int,
         retry_failed: bool, hooks: SweepHooks) -> SweepRunResult:
    sweep_id = sweep.sweep_id(hardware_id)
    resumed = db.begin_sweep(
        sweep_id=sweep_id, sweep_json=sweep.to_json(), name=sweep.name, method=sweep.spec.method,
        metric=sweep.metric, goal=sweep.goal, spec_hash=sweep.spec_hash(), hardware_id=hardware_id,
        spec_path=_spec_path(sweep), executor=ex.name)
    existing = {t["trial_key"]: t for t in db.trials(sweep_id)}
    if resumed:
        _adopt_finished_runs(sweep, store, db, sweep_id, existing)
    keep = ("completed", "infeasible") if retry_failed else FINAL
    final = {k: t for k, t in existing.items() if t["status"] in keep}
    next_index = max((t["trial_index"] for t in existing.values()), default=-1) + 1

    state = SweepState(sweep_id=sweep_id, total=sweep.planned_trials(), resumed=resumed,
                       skipped=len(final), metric=sweep.metric, goal=sweep.goal)
    for t in final.values():
        _count(state, t)
    sampler = make_sampler(sweep, [(t["params"], t["metric"] if t["status"] == "completed" else None)
                                   for t in final.values()])
    hooks.on_start(state)

    budget_s = sweep.spec.budget.seconds
    t0 = time.monotonic()
    in_flight: set[str] = set()
    ran: list[dict] = []
    reason = None
    exhausted = False
    store_path = ex.trial_store(str(Path(store.path).resolve()))
    try:
        while True:
            repeats = 0
            while (not exhausted and ex.running() < jobs and len(final) + len(in_flight) < state.total):
                if budget_s is not None and time.monotonic() - t0 > budget_s:
                    reason = f"time budget of {budget_s:g} s reached"
                    exhausted = True
                    break
                params = sampler.ask()
                if params is None:
                    exhausted = True
                    break
                key = sweep.trial_key(params)
                if key in final or key in in_flight:
                    # Random/TPE may suggest a measured assignment again: answer from the store.
                    if key in final:
                        t = final[key]
                        sampler.tell(params, t["metric"] if t["status"] == "completed" else None)
                    repeats += sampler.may_repeat
                    if repeats > MAX_REPEATS:
                        exhausted = True
                    continue
                repeats = 0
                index = existing[key]["trial_index"] if key in existing else next_index
                next_index = max(next_index, index + 1)
                db.start_trial(sweep_id, key, index, params)
                payload = {"workload": sweep.workload_for(params), "sweep_id": sweep_id,
                           "store": store_path, "trial_key": key,
                           "spec_path": _spec_path(sweep)}
                task = TrialTask(index=index, key=key, params=params, payload=payload)
                ex.submit(task)
                in_flight.add(key)
                state.running = len(in_flight)
                hooks.on_trial_start(task, state)
            if ex.running() == 0:
                break
            for task, outcome in ex.wait(0.5):
                in_flight.discard(task.key)
                state.running = len(in_flight)
                trial = _record(sweep, store, db, sweep_id, task, outcome)
                final[task.key] = trial
                existing[task.key] = trial
                ran.append(trial)
                _count(state, trial)
                sampler.tell(task.params, trial["metric"] if trial["status"] == "completed" else None)
                hooks.on_trial_end(trial, state)
    except KeyboardInterrupt:
        ex.cancel_all()
        # Every trial still marked running goes back to pending: the cancelled ones, and one whose
        # outcome arrived but was not recorded yet when Ctrl-C came (its finished run, if any, is
        # adopted on resume instead of being measured again).
        for t in db.trials(sweep_id):
            if t["status"] == "running":
                db.finish_trial(sweep_id, t["trial_key"], status="pending", run_id=None, metric=None,
                                peak_memory_bytes=None, reason="interrupted (Ctrl-C); runs again on resume",
                                wall_s=None, measure_s=None, result=None)
        db.finish_sweep(sweep_id, "interrupted", "interrupted by the user (Ctrl-C)")
        raise
    except BaseException as exc:
        ex.cancel_all()
        db.finish_sweep(sweep_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    if reason is None and len(final) < state.total:
        reason = f"search space exhausted after {len(final)} trials"
    db.finish_sweep(sweep_id, "completed", reason)
    return SweepRunResult(sweep_id=sweep_id, status="completed", state=state, reason=reason, ran=ran)


def _adopt_finished_runs(sweep: Sweep, store: ResultsStore, db: SweepDB, sweep_id: str,
                         existing: dict[str, dict]) -> None:
    """A sweep killed between a trial's run completing and the trial being recorded left a
    completed run and a pending trial: record the trial from that run instead of measuring again."""
    from perfbench.spec import parse_spec
    from perfbench.sweep.trial import summarize_point

    open_trials = [t for t in existing.values() if t["status"] in ("pending", "running")]
    if not open_trials:
        return
    used = {t["run_id"] for t in existing.values() if t["run_id"]}
    runs = [r for r in store.list_runs(sweep_id=sweep_id) if r["status"] == "completed" and r["run_id"] not in used]
    for t in open_trials:
        try:
            h = parse_spec(sweep.workload_for(t["params"]), check_device=False).spec_hash()
        except Exception:  # noqa: BLE001 - an assignment no longer valid: it will fail when run
            continue
        match = next((r for r in runs if r["spec_hash"] == h), None)
        if match is None:
            continue
        runs.remove(match)
        run = store.get_run(match["run_id"])
        ev = evaluate([summarize_point(p) for p in run["points"]], sweep.metric, sweep.goal,
                      sweep.spec.constraints)
        info = {"executor_outcome": "adopted", **{k: ev[k] for k in ("best_batch_size", "measured_metric") if k in ev}}
        measure_s = sum(p["measure_s"] for p in map(summarize_point, run["points"]))
        db.finish_trial(sweep_id, t["trial_key"], status=ev["status"], run_id=run["run_id"],
                        metric=ev["metric"], peak_memory_bytes=ev["peak_memory_bytes"],
                        reason=ev["reason"], wall_s=None, measure_s=measure_s, result=info)
        existing[t["trial_key"]] = {**t, "status": ev["status"], "metric": ev["metric"], "run_id": run["run_id"]}


def _count(state: SweepState, t: dict) -> None:
    if t["status"] == "completed":
        state.completed += 1
        if t["metric"] is not None and better(t["metric"], state.best_metric, state.goal):
            state.best_metric, state.best_params = t["metric"], t["params"]
    elif t["status"] in ("failed", "infeasible"):
        state.failed += 1
        state.infeasible += t["status"] == "infeasible"


def _record(sweep: Sweep, store: ResultsStore, db: SweepDB, sweep_id: str, task: TrialTask,
            outcome: TrialOutcome) -> dict[str, Any]:
    """Turn an executor outcome into the trial's final row (committed at once)."""
    res = outcome.result
    run_id = res.get("run_id") if res else None
    if outcome.run is not None:  # Ray: the run lives in the worker's private store; copy it here
        run_id = import_run(store, outcome.run, sweep_id=sweep_id,
                            failure=(outcome.error or "trial process gave no result")[:2000] if res is None else None)
    info: dict[str, Any] = {"executor_outcome": outcome.kind}
    measure_s = None
    if res is None:
        status, metric, peak = "failed", None, None
        why = outcome.error or "trial process gave no result"
        if outcome.run is None and outcome.pid is not None:
            orphan = db.running_trial_run_id(sweep_id, outcome.pid)
            if orphan:  # close the run the dead process left open, with the same reason
                store.finish_run(orphan, "failed", why[:2000])
                run_id = orphan
    else:
        points = res.get("points") or []
        measure_s = sum(p.get("measure_s") or 0.0 for p in points) if points else None
        info["trial_process_s"] = res.get("trial_process_s")
        if not points and res.get("status") != "completed":
            status, metric, peak, why = "failed", None, None, res.get("reason") or "run failed"
        else:
            ev = evaluate(points, sweep.metric, sweep.goal, sweep.spec.constraints)
            status, metric, peak, why = ev["status"], ev["metric"], ev["peak_memory_bytes"], ev["reason"]
            info.update({k: ev[k] for k in ("best_batch_size", "measured_metric") if k in ev})
            # A run that failed after some points (a crash) fails the trial. One whose every point
            # failed already reads as failed above, with each batch's error: keep that reason.
            if res.get("status") not in (None, "completed") and status != "failed":
                status = "failed"
                why = f"run {res.get('status')}: {res.get('reason')}"
    db.finish_trial(sweep_id, task.key, status=status, run_id=run_id, metric=metric,
                    peak_memory_bytes=peak, reason=why, wall_s=outcome.wall_s, measure_s=measure_s,
                    result=info)
    return {"trial_index": task.index, "trial_key": task.key, "params": task.params, "status": status,
            "run_id": run_id, "metric": metric, "peak_memory_bytes": peak, "reason": why,
            "wall_s": outcome.wall_s, "measure_s": measure_s, "result": info}


def _spec_path(sweep: Sweep) -> str | None:
    """The sweep file as an absolute path (a relative one means nothing from another directory)."""
    return None if sweep.source.startswith("<") else str(Path(sweep.source).resolve())
