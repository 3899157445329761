"""Sweep specs: validation before any trial runs (exit 2, naming the parameter), parameter paths,
trial identity, the default setting and the samplers."""

from __future__ import annotations

import pytest
import yaml

from perfbench.errors import SpecError
from perfbench.spec import parse_spec
from perfbench.sweep.search import GridSampler, RandomSampler
from perfbench.sweep.spec import load_sweep, parse_sweep
from tests.conftest import REPO, run_cli, tiny_spec


def sweep_dict(**overrides) -> dict:
    d = {
        "name": "t",
        "workload": tiny_spec(batch_sizes=[1]),
        "method": "grid",
        "parameters": {"batch_size": {"values": [1, 2]}, "seq_len": {"values": [8, 16]}},
    }
    d.update(overrides)
    return d


def problems(data: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as ei:
        parse_sweep(data, "s.yaml")
    return dict(ei.value.problems)


def test_shipped_sweeps_are_valid():
    tiny = load_sweep(REPO / "workloads/sweeps/tiny-grid.yaml")
    assert tiny.planned_trials() == 9 and tiny.base.name == "tiny-llama-cpu"
    assert tiny.default_params() == ({"batch_size": 1, "seq_len": 64}, None)
    h100 = load_sweep(REPO / "workloads/sweeps/llama-3.2-1b-batch-compile.yaml")
    assert h100.planned_trials() == 32
    assert h100.axes()["backend.compile"] == ["none", "default", "reduce-overhead", "max-autotune"]
    assert h100.spec.constraints == {"max_peak_memory_bytes": 7e10}
    quick = load_sweep(REPO / "workloads/sweeps/llama-3.2-1b-batch-compile-quick.yaml")
    assert quick.planned_trials() == 8 and quick.default_params()[0]["backend.compile"] == "none"


def test_workload_paths_resolve_from_the_sweep_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repo: found by walking up from the sweep file
    assert load_sweep(REPO / "workloads/sweeps/tiny-grid.yaml").base.name == "tiny-llama-cpu"
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(sweep_dict(workload="nope/missing.yaml")))
    with pytest.raises(SpecError) as ei:
        load_sweep(p)
    assert "workload" in dict(ei.value.problems)


@pytest.mark.parametrize("params,path,needle", [
    ({"batch_size": {"values": []}}, "parameters.batch_size", "must not be empty"),
    ({"backend.compiler": {"values": ["none"]}}, "parameters.backend.compiler",
     "unknown field 'compiler' of backend; allowed: attn_implementation, compile"),
    ({"foo": {"values": [1]}}, "parameters.foo", "unknown workload field 'foo'"),
    ({"measure.repeats.x": {"values": [1]}}, "parameters.measure.repeats.x", "two levels"),
    ({"seq_len": {"min": 1, "max": 8, "distribution": "weird"}}, "parameters.seq_len.distribution",
     "'int_uniform', 'uniform', 'log_uniform' or 'int_log_uniform'"),
    ({"seq_len": {"min": 8, "max": 8, "distribution": "int_uniform"}}, "parameters.seq_len", "less than max"),
    ({"measure.min_seconds": {"min": 0, "max": 1, "distribution": "log_uniform"}},
     "parameters.measure.min_seconds", "needs min > 0"),
    ({"seq_len": {"values": [8, 8]}}, "parameters.seq_len", "unique"),
    ({"seq_len": {"values": [8], "min": 1}}, "parameters.seq_len", "not both"),
    ({"seq_len": {"valuez": [8]}}, "parameters.seq_len.valuez", "allowed: values, min, max, distribution"),
    ({"name": {"values": ["x"]}}, "parameters.name", "unknown workload field 'name'"),
])
def test_bad_parameters_are_named(params, path, needle):
    got = problems(sweep_dict(parameters=params))
    assert path in got, got
    assert needle in got[path]


def test_method_must_fit_the_parameters():
    got = problems(sweep_dict(parameters={"seq_len": {"min": 8, "max": 32, "distribution": "int_uniform"}}))
    assert "grid needs `values`" in got["method"]
    got = problems(sweep_dict(method="random", parameters={"seq_len": {"min": 8, "max": 32,
                                                                      "distribution": "int_uniform"}}))
    assert "needs budget.trials" in got["budget.trials"]
    got = problems(sweep_dict(method="bayes", parameters={"batch_sizes": {"values": [[1, 2], [4]]}}))
    assert "scalar values" in got["parameters.batch_sizes.values"]
    got = problems(sweep_dict(method="annealing"))
    assert "method" in got
    got = problems(sweep_dict(parameters={"batch_size": {"values": [1]}, "batch_sizes": {"values": [[2]]}}))
    assert "overlaps" in got["parameters.batch_sizes"]


def test_metric_constraints_default_and_name():
    got = problems(sweep_dict(name="has space", metric={"name": "tokens"}, budget={"trials": 0}))
    assert set(got) == {"name", "metric.name", "budget.trials"}
    assert "tokens_per_s" in got["metric.name"]
    got = problems(sweep_dict(constraints={"max_foo": 1}, default={"dtype": "float32"}))
    assert set(got) == {"constraints.max_foo", "default.dtype"}
    assert "max_peak_memory_bytes" in got["constraints.max_foo"]
    s = parse_sweep(sweep_dict(metric={"name": "latency_median_s"}))
    assert s.goal == "minimize"
    s = parse_sweep(sweep_dict(constraints={"max_peak_memory_bytes": "2.0e9"}))  # YAML 1.1 reads 2.0e9 as text
    assert s.spec.constraints == {"max_peak_memory_bytes": 2e9}


def test_every_grid_point_is_checked_and_names_the_parameter():
    got = problems(sweep_dict(parameters={"batch_size": {"values": [1, 0]},
                                          "seq_len": {"values": [16, 5000]},
                                          "backend.compile": {"values": ["none", "fast"]}}))
    assert "value 0 gives an invalid workload" in got["parameters.batch_size"]
    assert "max_position_embeddings" in got["parameters.seq_len"]
    assert "'fast'" in got["parameters.backend.compile"]
    # Each value alone is fine, the combination is not (seq_len + new_tokens > 1024).
    got = problems(sweep_dict(workload=tiny_spec(phase="generate", new_tokens=4, batch_sizes=[1]),
                              parameters={"seq_len": {"values": [16, 1000]},
                                          "new_tokens": {"values": [4, 100]}}))
    assert "combination seq_len=1000, new_tokens=100" in got["parameters"]
    # A float range on an integer field is caught by its probe values, with a hint.
    got = problems(sweep_dict(method="random", budget={"trials": 3},
                              parameters={"batch_size": {"min": 1, "max": 8, "distribution": "uniform"}}))
    assert "int_uniform" in got["parameters.batch_size"]


def test_invalid_sweep_exits_2_before_any_trial(tmp_path, write_spec, store_path):
    bad = write_spec(sweep_dict(parameters={"batch_size": {"values": [1, -1]}}), "bad.yaml")
    r = run_cli("sweep", "run", str(bad), "--store", str(store_path))
    assert r.returncode == 2, r.stderr
    assert "parameters.batch_size" in r.stderr and "value -1" in r.stderr
    assert not store_path.exists()  # nothing ran, nothing was written
    r = run_cli("sweep", "run", str(write_spec(sweep_dict(), "ok.yaml")), "--store", str(store_path),
                "--executor", "kubernetes")
    assert r.returncode == 2 and "--executor must be local or ray" in r.stderr


def test_workload_for_sets_dotted_paths_and_batch_size():
    s = parse_sweep(sweep_dict(parameters={
        "batch_size": {"values": [4]}, "backend.threads": {"values": [1]},
        "measure.repeats": {"values": [2]}, "model.num_hidden_layers": {"values": [1]},
        "dtype": {"values": ["float32"]}, "backend.attn_implementation": {"values": ["eager"]}}))
    params = s.grid_points()[0]
    w = s.workload_for(params)
    assert w["batch_sizes"] == [4] and w["backend"]["threads"] == 1 and w["measure"]["repeats"] == 2
    assert w["backend"]["attn_implementation"] == "eager"
    assert w["model"] == {"preset": "tiny-llama", "num_hidden_layers": 1}  # a preset, one field overridden
    spec = parse_spec(w)
    assert spec.arch.num_hidden_layers == 1 and spec.arch.hidden_size == 128
    assert s.default_params() == ({"batch_size": 1, "backend.threads": None, "measure.repeats": 3,
                                   "model.num_hidden_layers": 2, "dtype": "float32",
                                   "backend.attn_implementation": "sdpa"}, None)


def test_identity_trial_keys_and_budget():
    a, b = parse_sweep(sweep_dict()), parse_sweep(sweep_dict(budget={"trials": 3}))
    assert a.spec_hash() == b.spec_hash()  # raising the budget continues the same sweep
    assert a.sweep_id("hw1") == b.sweep_id("hw1") != a.sweep_id("hw2")  # other hardware: other sweep
    assert a.sweep_id("hw1").startswith("t-")
    c = parse_sweep(sweep_dict(parameters={"batch_size": {"values": [1, 2]}, "seq_len": {"values": [8, 32]}}))
    assert c.spec_hash() != a.spec_hash()
    assert a.trial_key({"seq_len": 8, "batch_size": 1}) == a.trial_key({"batch_size": 1, "seq_len": 8})
    assert b.planned_trials() == 3 and a.planned_trials() == 4
    several = parse_sweep(sweep_dict(workload=tiny_spec(batch_sizes=[1, 2])))
    d, note = several.default_params()
    assert d is None and "no single default batch size" in note
    several = parse_sweep(sweep_dict(workload=tiny_spec(batch_sizes=[1, 2]), default={"batch_size": 2}))
    assert several.default_params() == ({"batch_size": 2, "seq_len": 16}, None)


def test_samplers_are_deterministic_and_do_not_repeat():
    s = parse_sweep(sweep_dict(method="random", budget={"trials": 4}))
    grid = [s.trial_key(p) for p in GridSampler(s)._points]
    r1 = [s.trial_key(RandomSampler(s).ask()) for _ in range(1)]
    seq = RandomSampler(s)
    keys = [s.trial_key(seq.ask()) for _ in range(4)]
    assert sorted(keys) == sorted(grid) and seq.ask() is None  # a permutation of the grid
    assert keys[0] == r1[0]  # same seed, same order: resume regenerates the same sequence
    ranged = parse_sweep(sweep_dict(method="random", budget={"trials": 5}, parameters={
        "batch_size": {"min": 1, "max": 64, "distribution": "int_log_uniform"},
        "measure.min_seconds": {"min": 0.001, "max": 0.01, "distribution": "log_uniform"}}))
    pts = [RandomSampler(ranged).ask() for _ in range(2)]
    assert pts[0] == pts[1]
    seq = RandomSampler(ranged)
    for _ in range(20):
        p = seq.ask()
        assert isinstance(p["batch_size"], int) and 1 <= p["batch_size"] <= 64
        assert 0.001 <= p["measure.min_seconds"] <= 0.01


def test_a_grid_value_that_breaks_the_workload_fails_before_any_trial():
    p = problems(sweep_dict(parameters={"weights": {"values": [None, "/nonexistent/ckpt"]}}))
    assert "/nonexistent/ckpt" in p["parameters.weights"] and "not a directory" in p["parameters.weights"]


def test_dependent_fields_are_judged_in_combination(tmp_path):
    """phase generate needs new_tokens >= 1 and prefill needs 0: swept together, every combination
    is valid although each value alone is not valid on the prefill base."""
    from perfbench.sweep.spec import parse_sweep

    base = str(REPO / "workloads" / "tiny-llama-cpu.yaml")
    ok = parse_sweep({"name": "dep", "workload": base, "method": "grid",
                      "parameters": {"phase": {"values": ["generate", "decode"]}, "new_tokens": {"values": [2, 4]}}},
                     "dep.yaml", sweep_path=tmp_path / "dep.yaml")
    assert len(ok.axes()["new_tokens"]) == 2
    with pytest.raises(SpecError) as exc:  # a value no combination can use is named by its parameter
        parse_sweep({"name": "dep", "workload": base, "method": "grid",
                     "parameters": {"phase": {"values": ["generate"]}, "new_tokens": {"values": [0, 4]}}},
                    "dep.yaml", sweep_path=tmp_path / "dep.yaml")
    assert [p for p, _ in exc.value.problems] == ["parameters.new_tokens"] and "value 0" in str(exc.value)
    with pytest.raises(SpecError) as exc:  # each value works somewhere, this pairing does not
        parse_sweep({"name": "dep", "workload": base, "method": "grid",
                     "parameters": {"phase": {"values": ["prefill", "generate"]}, "new_tokens": {"values": [0, 4]}}},
                    "dep.yaml", sweep_path=tmp_path / "dep.yaml")
    assert "combination phase=prefill, new_tokens=4" in str(exc.value)


def test_bayes_tells_every_repeat_of_an_assignment():
    """TPE may suggest an assignment that is still being measured; once its result arrives, every
    asked copy is told, so none stays RUNNING in the study."""
    pytest.importorskip("optuna", reason="method: bayes needs the `sweep` extra (optuna)")
    from perfbench.sweep.search import BayesSampler

    sweep = parse_sweep({"name": "b", "workload": tiny_spec(batch_sizes=[1]), "method": "bayes",
                         "parameters": {"batch_size": {"values": [1]}}})
    s = BayesSampler(sweep, [])
    a, b = s.ask(), s.ask()  # one value only: the second ask repeats the first
    assert a == b == {"batch_size": 1}
    s.tell(a, 5.0)
    states = {t.state.name for t in s.study.trials}
    assert states == {"COMPLETE"} and len(s.study.trials) == 2
