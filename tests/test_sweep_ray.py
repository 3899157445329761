"""The Ray executor against a real local Ray instance started by the test (2 CPUs, no dashboard),
driven through the CLI with --address; and the clear errors when an optional extra is missing."""

from __future__ import annotations

import json
import sys

import pytest

from perfbench.errors import InputError
from perfbench.store import ResultsStore
from perfbench.sweep.executors import RayExecutor, ray_gpus_per_trial
from tests.conftest import config_only_checkpoint, run_cli, tiny_spec


def test_missing_extras_give_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"perfbench\[ray\]"):
        RayExecutor(address=None, timeout_s=10, device="cpu")
    monkeypatch.setitem(sys.modules, "optuna", None)
    from perfbench.sweep.search import BayesSampler
    from perfbench.sweep.spec import parse_sweep

    sweep = parse_sweep({"name": "b", "workload": tiny_spec(batch_sizes=[1]), "method": "bayes",
                         "parameters": {"batch_size": {"values": [1, 2]}}})
    with pytest.raises(InputError, match=r"perfbench\[sweep\]"):
        BayesSampler(sweep, [])


def test_one_gpu_per_trial_where_the_workload_needs_one():
    class FakeRay:
        def __init__(self, gpus):
            self.gpus = gpus

        def cluster_resources(self):
            return {"CPU": 8.0, **({"GPU": self.gpus} if self.gpus else {})}

    assert ray_gpus_per_trial("cuda", FakeRay(0)) == 1
    assert ray_gpus_per_trial("auto", FakeRay(2)) == 1
    assert ray_gpus_per_trial("auto", FakeRay(0)) == 0
    assert ray_gpus_per_trial("cpu", FakeRay(2)) == 0


@pytest.mark.slow
def test_ray_executor_runs_a_small_sweep(write_spec, store_path, monkeypatch, tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray executor needs the `ray` extra: pip install 'perfbench[ray]'")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token files
    bad = config_only_checkpoint(tmp_path / "empty-ckpt")  # valid spec, fails loading: a crashing trial
    spec = write_spec({
        "name": "ray-grid",
        "workload": tiny_spec(batch_sizes=[1], seq_len=8, measure={"warmup": 1, "repeats": 2, "min_seconds": 0}),
        "method": "grid",
        "parameters": {"batch_size": {"values": [1, 2]}, "weights": {"values": [None, str(bad)]}},
    }, "ray.yaml")
    ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
                   log_to_driver=False, configure_logging=False)
    try:
        address = ctx.address_info["gcs_address"]
        r = run_cli("sweep", "run", str(spec), "--store", str(store_path), "--executor", "ray",
                    "--address", address, "--jobs", "2", "--trial-timeout", "120", "--format", "json",
                    env={"RAY_AUTH_MODE": "disabled"}, timeout=240)
    finally:
        ray.shutdown()
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["trials"], s["completed"], s["failed"]) == (4, 2, 2)
    by = {(t["params"]["batch_size"], t["params"]["weights"]): t for t in s["results"]}
    assert by[(2, None)]["status"] == "completed" and by[(2, None)]["metric"] > 0
    assert "empty-ckpt" in by[(1, str(bad))]["reason"]
    # The trials ran in the workers' private stores; their runs were copied into ours, points and all.
    with ResultsStore(store_path) as st:
        runs = {x["run_id"]: x for x in st.list_runs(sweep_id=s["sweep_id"])}
        assert set(runs) == {t["run_id"] for t in s["results"]}
        ok = st.get_run(by[(1, None)]["run_id"])
    assert ok["status"] == "completed" and ok["sweep_id"] == s["sweep_id"]
    assert ok["points"][0]["status"] == "ok" and len(ok["points"][0]["samples_s"]) == 2
    assert runs[by[(2, str(bad))]["run_id"]]["status"] == "failed"
    with ResultsStore(store_path) as st:
        from perfbench.sweep.db import SweepDB

        (sw,) = SweepDB(st).list_sweeps()
    assert sw["executor"] == "ray" and sw["status"] == "completed"


def test_a_remote_trial_that_timed_out_is_stored_failed_with_the_reason(store_path):
    """A worker killed at the trial timeout leaves its run open; the copy here is closed as failed
    with the executor's reason, as the local executor does (not 'interrupted (killed?)')."""
    from perfbench.sweep.executors import import_run

    run = {"run_id": "20261122-000000-abcdef", "name": "t", "spec": {"phase": "prefill"}, "spec_hash": "h",
           "fingerprint": {"hardware_id": "remote"}, "versions": {}, "device": "cpu", "points": [],
           "status": "interrupted", "reason": "process ended without closing the run (killed?)"}
    with ResultsStore(store_path) as st:
        rid = import_run(st, run, sweep_id=None, failure="trial timed out after 6 s")
        got = st.get_run(rid)
        assert got["status"] == "failed" and got["reason"] == "trial timed out after 6 s"
        ok = import_run(st, {**run, "run_id": "20261122-000000-abcde0", "status": "completed", "reason": None},
                        sweep_id=None)
        assert st.get_run(ok)["status"] == "completed"


def test_unreachable_ray_address_fails_fast_and_writes_nothing(tmp_path):
    store = tmp_path / "s.sqlite"
    r = run_cli("sweep", "run", "workloads/sweeps/tiny-grid.yaml", "--executor", "ray", "--address",
                "127.0.0.1:1", "--store", str(store), timeout=60)
    assert r.returncode == 2 and "cannot reach the Ray cluster" in r.stderr and not store.exists()
