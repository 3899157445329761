"""`perfbench gate`: bad input (2), store (3), could not measure (4) never look like a regression
(1); subjects from CI variables; reports; noise floors in the minimum effect."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from perfbench.gate.compare import compare_runs
from perfbench.gate.interleave import worker_env
from perfbench.gate.report import gate_markdown, junit_xml
from perfbench.gate.subject import subject
from perfbench.gate.suite import load_suite
from perfbench.store import ResultsStore
from tests.conftest import config_only_checkpoint, run_cli, tiny_spec
from tests.gate_helpers import add_run


def _suite(tmp_path, **over) -> str:
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(batch_sizes=[1], measure={"energy": "off", "idle_seconds": 0})))
    suite = {"name": "t", "workloads": [{"spec": "w.yaml"}], "thresholds": {"latency_median_s": "300%"}, **over}
    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump(suite))
    return str(p)


def test_bad_suite_fields_exit_2_name_the_field_and_write_nothing(tmp_path):
    store = tmp_path / "s.sqlite"
    cases = [({"thresholds": {"bogus": "5%"}}, "thresholds.bogus", "tokens_per_s"),
             ({"thresholds": {"tokens_per_s": "lots"}}, "thresholds.tokens_per_s", "percentage"),
             ({"workloads": [{"spec": "missing.yaml"}]}, "workloads[0].spec", "no such workload spec"),
             ({"workloads": [{"spec": "w.yaml", "set": {"seq_len": -1}}]}, "workloads[0]", "seq_len"),
             ({"baseline": {"runs": "five"}}, "baseline.runs", "whole number"),
             ({"interleave": {"hugepages": "sometimes"}}, "interleave.hugepages", "true or false"),
             ({"colour": 1}, "colour", "allowed")]
    for over, field, allowed in cases:
        r = run_cli("gate", _suite(tmp_path, **over), "--store", str(store))
        assert r.returncode == 2, (over, r.stderr)
        assert "suite.yaml" in r.stderr and field in r.stderr and allowed in r.stderr, (over, r.stderr)
    assert not store.exists()
    r = run_cli("gate", _suite(tmp_path), "--store", str(store), "--workload", "nope")
    assert r.returncode == 2 and "allowed: tiny-test" in r.stderr


def test_suite_interleave_hugepages_default_and_worker_env(tmp_path):
    """Workers get glibc's huge-page malloc by default (docs/ci.md: slow-for-life processes),
    added to tunables the user set, and a suite can turn it off."""
    assert load_suite(Path(_suite(tmp_path))).hugepages is True
    assert load_suite(Path(_suite(tmp_path, interleave={"hugepages": False}))).hugepages is False
    env = worker_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"}, True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1" and env["X"] == "1"
    assert worker_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, True)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
    assert worker_env(None, False) is None


def test_unusable_store_exits_3(tmp_path):
    r = run_cli("gate", _suite(tmp_path), "--store", str(tmp_path))
    assert r.returncode == 3, r.stderr


def test_a_crashing_workload_exits_4_with_an_error_not_a_failure(tmp_path):
    ckpt = config_only_checkpoint(tmp_path / "ckpt")
    spec = tiny_spec(model={"path": str(ckpt)}, batch_sizes=[1], measure={"energy": "off", "idle_seconds": 0})
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(spec))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"workloads": ["w.yaml"], "thresholds": {"latency_median_s": "5%"}}))
    junit = tmp_path / "j.xml"
    r = run_cli("gate", str(suite), "--store", str(tmp_path / "s.sqlite"), "--junit", str(junit), "--branch", "x")
    assert r.returncode == 4, r.stderr
    root = ET.parse(junit).getroot()
    assert root.find(".//failure") is None and root.find(".//error") is not None


def test_an_interleave_base_that_cannot_start_exits_4(tmp_path):
    r = run_cli("gate", _suite(tmp_path), "--store", str(tmp_path / "s.sqlite"), "--interleave", "false", "--branch", "x")
    assert r.returncode == 4 and "base" in r.stderr, r.stderr


def test_subject_from_github_variables_and_flags():
    env = {"GITHUB_SHA": "abc123", "GITHUB_HEAD_REF": "feature", "GITHUB_REF_NAME": "12/merge", "GITHUB_RUN_ID": "99"}
    s = subject({}, env)
    assert s == {"role": "candidate", "commit": "abc123", "branch": "feature", "ci_run_id": "99", "ci": "github"}
    s = subject({"commit": "def", "engine_version": "1.2"}, env)
    assert s["commit"] == "def" and s["engine_version"] == "1.2"


def test_noise_floor_raises_the_minimum_effect_and_says_so(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite") as st:
        a, b = st.get_run(add_run(st, seed=1)), st.get_run(add_run(st, seed=2, level=1.1e-3))
    df = compare_runs([a], [b], thresholds={"latency_median_s": 0.05},
                      floors={("b1-s16-n0", "latency_median_s"): 0.2})
    rows = {r["point"]: r for r in df.to_dict("records")}
    assert rows["b1-s16-n0"]["min_effect_source"] == "noise floor" and rows["b1-s16-n0"]["verdict"] == "ambiguous"
    assert rows["b4-s16-n0"]["min_effect_source"] == "threshold" and rows["b4-s16-n0"]["verdict"] == "slower"


def test_reports_fail_only_confirmed_regressions_and_escape_names():
    row = {"benchmark": "w|x b1-s16-n0", "workload": "w|x", "metric": "latency_median_s", "unit": "s",
           "median_base": 1e-3, "median_cand": 2e-3, "ratio": 2.0, "ci_low": 1.9, "ci_high": 2.1, "change_pct": 100.0,
           "p_value": 1e-9, "min_effect_pct": 5.0, "min_effect_source": "threshold", "verdict": "slower",
           "reason": "x", "confirmed": True, "confirm_change_pct": 98.0, "reproduce": "perfbench compare A B"}
    unconfirmed = {**row, "benchmark": "w|x b2-s16-n0", "confirmed": False}
    result = {"suite": "s<&>", "exit_code": 1, "comparisons": [row, unconfirmed], "errors": [], "notes": [],
              "subject": {"branch": "pr", "commit": "abc"}, "baseline_desc": "main", "hardware_id": "hw"}
    root = ET.fromstring(junit_xml(result))
    cases = root.findall(".//testcase")
    assert len(cases) == 2 and len(root.findall(".//failure")) == 1
    md = gate_markdown(result)
    assert "FAIL" in md and "w\\|x b1-s16-n0" in md and "perfbench compare A B" in md and "+100.0%" in md
    assert "b2-s16-n0" not in md.split("Reproduce")[0]


def test_gate_help_lists_calibrate():
    r = run_cli("gate", "--help")
    assert r.returncode == 0 and "calibrate" in r.stdout
