"""Sweeps end to end on the CPU with the tiny model: grid (via the CLI), random and bayes complete;
failing, crashing, hanging and infeasible trials are recorded while the sweep goes on; an
interrupted or killed sweep keeps every completed trial and a re-run measures nothing twice."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from perfbench.store import ResultsStore
from perfbench.sweep.db import SweepDB
from perfbench.sweep.engine import evaluate, run_sweep
from perfbench.sweep.landscape import load_sweep_data
from perfbench.sweep.spec import parse_sweep
from tests.conftest import REPO, as_if_in_a_terminal, config_only_checkpoint, run_cli, tiny_spec

#: Each trial: one batch size, 2 timed iterations, no minimum time.
FAST = {"warmup": 1, "repeats": 2, "min_seconds": 0.0}


def sweep_dict(name="t", **overrides) -> dict:
    d = {"name": name, "workload": tiny_spec(batch_sizes=[1], seq_len=16, measure=FAST), "method": "grid",
         "parameters": {"batch_size": {"values": [1, 2]}, "seq_len": {"values": [8, 16]}}}
    d.update(overrides)
    return d


def runs_by_sweep(store_path, sweep_id) -> list[dict]:
    with ResultsStore(store_path) as st:
        return st.list_runs(sweep_id=sweep_id)


def test_grid_via_cli_then_list_show_plot_and_resume(tmp_path, write_spec, store_path):
    spec = write_spec(sweep_dict("cli-grid"), "grid.yaml")
    r = run_cli("sweep", "run", str(spec), "--store", str(store_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["trials"], s["completed"], s["failed"], s["pending"]) == (4, 4, 0, 0)
    assert s["status"] == "completed" and s["method"] == "grid" and s["parameters"] == ["batch_size", "seq_len"]
    assert s["best"]["metric"] == max(t["metric"] for t in s["results"])
    # The base workload's own setting (batch 1, seq_len 16) is on the grid: default and gain exist.
    assert s["default"]["params"] == {"batch_size": 1, "seq_len": 16} and s["default_note"] is None
    assert s["gain_over_default"] == pytest.approx(s["best"]["metric"] / s["default"]["metric"] - 1)
    assert s["best"]["params"] in [p["params"] for p in s["peaks"]]  # the global best is a peak
    assert set(s["importance"]) == {"batch_size", "seq_len"} and "variance" in s["importance_method"]
    for t in s["results"]:
        assert t["status"] == "completed" and t["run_id"] and t["measure_s"] > 0
        assert t["wall_s"] >= t["measure_s"] and t["overhead_s"] == pytest.approx(t["wall_s"] - t["measure_s"])

    # Every trial is a normal run carrying the sweep id: other readers see it.
    runs = runs_by_sweep(store_path, s["sweep_id"])
    assert len(runs) == 4 and all(x["status"] == "completed" and x["points_ok"] == 1 for x in runs)
    r = run_cli("results", "list", "--store", str(store_path), "--format", "json")
    assert {x["sweep_id"] for x in json.loads(r.stdout)} == {s["sweep_id"]}

    r = run_cli("sweep", "list", "--store", str(store_path), "--format", "json")
    (row,) = json.loads(r.stdout)
    assert (row["sweep_id"], row["name"], row["trials"], row["completed"], row["failed"]) == (
        s["sweep_id"], "cli-grid", 4, 4, 0)
    r = run_cli("sweep", "show", s["sweep_id"][:12], "--store", str(store_path), "--format", "json")
    shown = json.loads(r.stdout)
    assert shown["best"] == s["best"] and shown["peaks"] == s["peaks"]
    r = run_cli("sweep", "show", s["sweep_id"], "--store", str(store_path))
    assert r.returncode == 0 and "best:" in r.stdout and "gain over default" in r.stdout
    r = run_cli("sweep", "plot", s["sweep_id"], "--store", str(store_path), "--out", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "plots" / "heatmap_batch_size__seq_len.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "parallel_coordinates.svg").exists()

    # Simulate a sweep killed after trial 0's run completed but before the trial was recorded.
    con = sqlite3.connect(store_path)
    con.execute("UPDATE sweep_trials SET status='running', run_id=NULL, metric=NULL WHERE trial_index=0")
    con.commit()
    con.close()
    # Same file again: the same sweep; the finished run is adopted, nothing is re-measured. (The
    # issue's short form, `perfbench sweep SPEC.yaml`, is `sweep run`.)
    r = run_cli("sweep", str(spec), "--store", str(store_path))
    assert r.returncode == 0, r.stderr
    assert "resumed (4 trials already done), ran 0 trials" in r.stdout
    assert len(runs_by_sweep(store_path, s["sweep_id"])) == 4
    with ResultsStore(store_path) as st:
        t0 = SweepDB(st).trials(s["sweep_id"])[0]
    assert t0["status"] == "completed" and t0["result"]["executor_outcome"] == "adopted"
    assert t0["run_id"] == next(x["run_id"] for x in s["results"] if x["trial_index"] == 0)
    r = run_cli("sweep", "show", "nope", "--store", str(store_path))
    assert r.returncode == 2 and "no sweep 'nope'" in r.stderr


def test_random_over_ranges_completes(store_path):
    sweep = parse_sweep(sweep_dict("rnd", method="random", budget={"trials": 3}, parameters={
        "batch_size": {"min": 1, "max": 4, "distribution": "int_uniform"},
        "backend.attn_implementation": {"values": ["sdpa", "eager"]}}))
    with ResultsStore(store_path) as st:
        res = run_sweep(sweep, st)
        summary, df, _ = load_sweep_data(st, res.sweep_id)
    assert res.status == "completed" and len(res.ran) == 3
    assert summary["completed"] == 3 and summary["method"] == "random"
    assert summary["peaks"] is None and "need a grid" in summary["peaks_note"]
    assert df["batch_size"].between(1, 4).all()
    assert len({json.dumps(t["params"], sort_keys=True) for t in summary["results"]}) == 3  # no repeats


def test_bayes_completes_resumes_and_continues_when_the_budget_grows(store_path):
    pytest.importorskip("optuna", reason="method: bayes needs the `sweep` extra (optuna)")
    d = sweep_dict("tpe", method="bayes", budget={"trials": 3}, parameters={
        "batch_size": {"values": [1, 2, 4]}, "seq_len": {"min": 8, "max": 16, "distribution": "int_uniform"}})
    with ResultsStore(store_path) as st:
        first = run_sweep(parse_sweep(d), st)
        assert first.status == "completed" and len(first.ran) == 3 and first.state.completed == 3
        again = run_sweep(parse_sweep(d), st)
        assert again.sweep_id == first.sweep_id and again.ran == [] and again.state.resumed
        more = run_sweep(parse_sweep({**d, "budget": {"trials": 4}}), st)  # the budget is not identity
        assert more.sweep_id == first.sweep_id and len(more.ran) == 1
        summary, _, _ = load_sweep_data(st, first.sweep_id)
    assert summary["trials"] == summary["completed"] == 4
    assert summary["best"]["metric"] == max(t["metric"] for t in summary["results"])


def test_evaluate_applies_constraints_per_point():
    pts = [{"batch_size": 1, "status": "ok", "tokens_per_s": 10.0, "peak_memory_bytes": 100},
           {"batch_size": 8, "status": "ok", "tokens_per_s": 50.0, "peak_memory_bytes": 900},
           {"batch_size": 64, "status": "failed", "error": "out of memory: boom"}]
    ev = evaluate(pts, "tokens_per_s", "maximize", {"max_peak_memory_bytes": 500})
    assert ev["status"] == "completed" and ev["metric"] == 10.0 and ev["best_batch_size"] == 1
    assert "peak_memory_bytes 900 > max_peak_memory_bytes 500" in ev["reason"] and "out of memory" in ev["reason"]
    ev = evaluate(pts[1:2], "tokens_per_s", "maximize", {"max_peak_memory_bytes": 500})
    assert ev["status"] == "infeasible" and ev["metric"] is None and ev["measured_metric"] == 50.0
    ev = evaluate(pts[2:], "tokens_per_s", "maximize", {})
    assert ev["status"] == "failed" and "out of memory" in ev["reason"]
    ev = evaluate(pts[:2], "latency_median_s", "minimize", {"min_tokens_per_s": 20})
    assert ev["status"] == "failed" and "no point reported latency_median_s" in ev["reason"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_crash_kill_hang_are_failed_trials_and_the_sweep_goes_on(store_path, monkeypatch, tmp_path):
    # seed 1: the trial process is SIGKILLed mid-run (as by the OOM killer); seed 2 with no weights
    # hangs (with a child process) until --trial-timeout kills its process group; an empty weights
    # folder (valid as a spec, no checkpoint in it) fails the run's load; seed 0 without weights is fine.
    bad = config_only_checkpoint(tmp_path / "empty-ckpt")
    monkeypatch.setenv("PERFBENCH_SWEEP_FAULT", 'kill:"seed":1;hang:"seed":2,"weights":null')
    sweep = parse_sweep(sweep_dict("faults", parameters={
        "seed": {"values": [0, 1, 2]}, "weights": {"values": [None, str(bad)]}}))
    with ResultsStore(store_path) as st:
        res = run_sweep(sweep, st, trial_timeout_s=4.0)
        trials = {(t["params"]["seed"], t["params"]["weights"]): t for t in SweepDB(st).trials(res.sweep_id)}
        runs = {r["run_id"]: r for r in st.list_runs(sweep_id=res.sweep_id)}
        summary, _, _ = load_sweep_data(st, res.sweep_id)
    assert res.status == "completed" and len(trials) == 6
    assert trials[(0, None)]["status"] == "completed" and trials[(0, None)]["metric"] > 0
    killed = trials[(1, None)]
    assert killed["status"] == "failed" and "killed by SIGKILL" in killed["reason"]
    assert "out of memory?" in killed["reason"]
    assert runs[killed["run_id"]]["status"] == "failed"  # the run the dead process left open is closed
    hang = trials[(2, None)]
    assert hang["status"] == "failed" and "timed out after 4 s" in hang["reason"]
    assert runs[hang["run_id"]]["status"] == "failed" and "timed out" in runs[hang["run_id"]]["reason"]
    grandchild = int(re.search(r"child pid (\d+)", hang["reason"]).group(1))
    for _ in range(50):  # the whole process group was killed, the `sleep` child included
        if not pid_alive(grandchild):
            break
        time.sleep(0.1)
    assert not pid_alive(grandchild)
    for seed in (0, 1, 2):  # these fail loading, before the first point (and its fault)
        t = trials[(seed, str(bad))]
        assert t["status"] == "failed" and "empty-ckpt" in t["reason"] and runs[t["run_id"]]["status"] == "failed"
    assert (summary["completed"], summary["failed"]) == (1, 5)


def test_memory_constraint_makes_a_large_batch_infeasible(store_path):
    # Peak memory on CPU is the process's RSS, whose baseline depends on the machine: measure both
    # batch sizes first, then constrain between them.
    d = sweep_dict("mem", parameters={"batch_size": {"values": [1, 512]}})
    with ResultsStore(store_path) as st:
        free = run_sweep(parse_sweep(d), st)
        peak = {t["params"]["batch_size"]: t["peak_memory_bytes"] for t in SweepDB(st).trials(free.sweep_id)}
        assert peak[512] > peak[1] + 50 * 2**20, peak  # 512 x 16 tokens of logits: ~130 MiB more
        limit = (peak[1] + peak[512]) / 2
        res = run_sweep(parse_sweep({**d, "constraints": {"max_peak_memory_bytes": limit}}), st)
        assert res.sweep_id != free.sweep_id  # constraints are part of the sweep's identity
        trials = {t["params"]["batch_size"]: t for t in SweepDB(st).trials(res.sweep_id)}
        summary, _, _ = load_sweep_data(st, res.sweep_id)
        run_512 = st.get_run(trials[512]["run_id"])
    assert trials[1]["status"] == "completed"
    assert trials[512]["status"] == "infeasible" and trials[512]["metric"] is None
    assert "peak_memory_bytes" in trials[512]["reason"] and "> max_peak_memory_bytes" in trials[512]["reason"]
    assert run_512["status"] == "completed" and run_512["points"][0]["status"] == "ok"  # measured, just over
    assert summary["best"]["params"] == {"batch_size": 1}
    assert (summary["failed"], summary["infeasible"]) == (1, 1)


def _count(store_path, sql: str) -> int:
    if not store_path.exists():
        return 0
    con = sqlite3.connect(store_path)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # tables not there yet
        return 0
    finally:
        con.close()


def _start(spec, store_path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "perfbench", "sweep", "run", str(spec), "--store",
                             str(store_path), "-q"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_if_in_a_terminal)


def _wait_completed(store_path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _count(store_path, "SELECT COUNT(*) FROM sweep_trials WHERE status='completed'") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{n} trials did not complete in {timeout} s")


def test_interrupted_and_killed_sweeps_lose_nothing_and_resume(write_spec, store_path):
    slow = {**FAST, "min_seconds": 0.4}  # each trial ~0.5 s: time to interrupt mid-sweep
    spec = write_spec(sweep_dict("resume", workload=tiny_spec(batch_sizes=[1], measure=slow),
                                 parameters={"seed": {"values": list(range(6))}}), "resume.yaml")
    done_sql = "SELECT COUNT(*) FROM sweep_trials WHERE status='completed'"

    # 1. Ctrl-C after the first trial: exit 130, the sweep closed as interrupted.
    proc = _start(spec, store_path)
    _wait_completed(store_path, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "completed trials are kept" in err
    with ResultsStore(store_path) as st:
        (sw,) = SweepDB(st).list_sweeps()
        assert sw["status"] == "interrupted"
        first = {t["trial_key"]: t["run_id"] for t in SweepDB(st).trials(sw["sweep_id"]) if t["status"] == "completed"}
        assert all(t["status"] in ("completed", "pending") for t in SweepDB(st).trials(sw["sweep_id"]))
    assert len(first) >= 1

    # 2. Resume, then SIGKILL the sweep process after one more trial (no chance to clean up).
    proc = _start(spec, store_path)
    _wait_completed(store_path, len(first) + 1, proc)
    proc.kill()
    proc.communicate(timeout=30)
    with ResultsStore(store_path) as st:
        (sw,) = SweepDB(st).list_sweeps()
        assert sw["status"] == "interrupted" and "killed" in sw["reason"]
        second = {t["trial_key"]: t["run_id"] for t in SweepDB(st).trials(sw["sweep_id"]) if t["status"] == "completed"}
    assert len(second) > len(first) and all(second[k] == v for k, v in first.items())

    # 3. Resume to the end: completed trials are never re-measured.
    r = run_cli("sweep", "run", str(spec), "--store", str(store_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["status"] == "completed" and s["completed"] == 6 and s["trials"] == 6
    final = {t["params"]["seed"]: t["run_id"] for t in s["results"]}
    assert set(second.values()) <= set(final.values())
    # One completed run per trial; other runs are the ones interrupted mid-trial.
    with ResultsStore(store_path) as st:
        runs = st.list_runs(sweep_id=s["sweep_id"])
    completed = [x for x in runs if x["status"] == "completed"]
    assert len(completed) == 6 and {x["run_id"] for x in completed} == set(final.values())
    assert all(x["status"] in ("completed", "interrupted") for x in runs)
    assert _count(store_path, done_sql) == 6


@pytest.mark.gpu
@pytest.mark.parametrize("start", ["spawn", "forkserver"])
def test_gpu_trials_start_cleanly(store_path, monkeypatch, start):
    """CUDA trials spawn cold by default; forcing the fork server must also work (nothing the fork
    server imports may initialise CUDA)."""
    monkeypatch.setenv("PERFBENCH_SWEEP_START", start)
    d = sweep_dict("gpu", workload=tiny_spec(batch_sizes=[1], device="cuda", measure=FAST),
                   parameters={"backend.compile": {"values": ["none", "reduce-overhead"]}})
    with ResultsStore(store_path) as st:
        res = run_sweep(parse_sweep(d), st)
        trials = SweepDB(st).trials(res.sweep_id)
    assert [t["status"] for t in trials] == ["completed", "completed"], [t["reason"] for t in trials]


def test_table_output_draws_progress_and_reports_failures(tmp_path, write_spec, store_path):
    """The default (table) output: the progress line, a line per failed trial, each new best, the
    summary; `sweep list` shows done/planned."""
    d = sweep_dict("bar", parameters={"batch_size": {"values": [1, 2]}, "seq_len": {"values": [8, 4096]}})
    r = run_cli("sweep", "run", str(write_spec(d, "bar.yaml")), "--store", str(store_path))
    assert r.returncode == 2 and "combination" not in r.stderr  # 4096 is over the model's positions
    d["parameters"]["seq_len"] = {"values": [8, 16]}
    d["constraints"] = {"max_latency_median_s": 1e-9}  # every trial infeasible: a failure line each
    r = run_cli("sweep", "run", str(write_spec(d, "bar.yaml")), "--store", str(store_path))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("infeasible") >= 4 and "4/4" in r.stderr and "ETA" in r.stderr
    assert "4 trials: 0 completed, 4 failed" in r.stdout
    d.pop("constraints")
    r = run_cli("sweep", "run", str(write_spec(d, "bar.yaml")), "--store", str(store_path))
    assert r.returncode == 0 and "best so far:" in r.stderr
    listed = run_cli("sweep", "list", "--store", str(store_path))
    assert "4/4 (4 failed)" in listed.stdout and "4/4" in listed.stdout
