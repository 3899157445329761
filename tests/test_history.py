"""`perfbench history`: a metric over commits, change points named by commit; spikes are not steps."""

from __future__ import annotations

import json
import time

import numpy as np

from perfbench.gate.changepoint import detect
from perfbench.store import ResultsStore
from tests.conftest import run_cli
from tests.gate_helpers import add_run


def test_a_step_is_found_at_its_commit_and_a_spike_is_not(tmp_path):
    store = tmp_path / "r.sqlite"
    rng = np.random.default_rng(3)
    with ResultsStore(store) as st:
        for i in range(30):
            level = 1e-3 * (1.10 if i >= 18 else 1.0) * np.exp(rng.normal(0, 0.01))
            if i == 8:
                level *= 1.6  # one slow run: a spike, not a step
            add_run(st, level=level, noise=0.002, seed=i, batches=(1,),
                    subject={"role": "candidate", "branch": "main", "commit": f"c{i:03d}"})
            time.sleep(0.002)  # history is ordered by creation time (milliseconds)
    r = run_cli("history", "synth", "--store", str(store), "--format", "json")
    assert r.returncode == 0, r.stderr
    steps = json.loads(r.stdout)["points"]["b1-s16-n0"]["steps"]
    assert [s["commit"] for s in steps] == ["c018"]
    assert 8 < steps[0]["change_pct"] < 12 and steps[0]["confidence"] > 0.999
    table = run_cli("history", "synth", "--store", str(store))
    assert "step at commit c018" in table.stdout


def test_detect_needs_enough_runs_and_ignores_flat_series():
    assert detect([1.0] * 6) == []
    rng = np.random.default_rng(0)
    assert detect((1 + rng.normal(0, 0.01, 60)).tolist()) == []


def test_history_refuses_mixed_hardware_and_unknown_names(tmp_path):
    store = tmp_path / "r.sqlite"
    with ResultsStore(store) as st:
        add_run(st, hardware_id="hw-a")
        add_run(st, hardware_id="hw-b")
    r = run_cli("history", "synth", "--store", str(store))
    assert r.returncode == 2 and "--hardware" in r.stderr and "hw-a" in r.stderr
    assert run_cli("history", "synth", "--store", str(store), "--hardware", "hw-a").returncode == 0
    assert run_cli("history", "nothing", "--store", str(store)).returncode == 2
    assert run_cli("history", "synth", "--store", str(store), "--hardware", "hw-a", "--metric", "x").returncode == 2
