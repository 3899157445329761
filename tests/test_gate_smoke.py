"""The CI smoke gate: `perfbench gate` end to end on the tiny CPU suite.

Structurally robust against this machine's noise (shared 2 cores, medians moving by tens of
percent between runs): unchanged code is gated interleaved (both sides share each round's
machine state) or against a 300% threshold, and the planted slowdowns are large
(PERFBENCH_TEST_SLOWDOWN, a test-only knob of the runner: every step made F times as long).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import yaml

from perfbench.store import ResultsStore
from tests.conftest import REPO, run_cli

SUITE = REPO / "workloads" / "suites" / "tiny-cpu.yaml"
BASE_CMD = f"env PERFBENCH_TEST_SLOWDOWN= {sys.executable} -m perfbench"


def test_history_gate_passes_unchanged_code_and_fails_a_planted_slowdown(tmp_path):
    suite = yaml.safe_load(SUITE.read_text())
    suite["workloads"][0]["spec"] = str(REPO / "workloads" / "tiny-llama-cpu.yaml")
    suite["thresholds"] = {"latency_median_s": "300%", "tokens_per_s": "75%"}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    store = str(tmp_path / "s.sqlite")
    r = run_cli("gate", str(path), "--store", store, "--branch", "main", "--commit", "main0")
    assert r.returncode == 0 and "no baseline yet" in r.stdout, r.stdout + r.stderr
    r = run_cli("gate", str(path), "--store", store, "--branch", "pr", "--commit", "same")
    assert r.returncode == 0, r.stdout + r.stderr
    out = {k: tmp_path / f"gate.{k}" for k in ("md", "xml", "json")}
    r = run_cli("gate", str(path), "--store", store, "--branch", "pr", "--commit", "slow", "--markdown", str(out["md"]),
                "--junit", str(out["xml"]), "--json", str(out["json"]), env={"PERFBENCH_TEST_SLOWDOWN": "10"})
    assert r.returncode == 1, r.stdout + r.stderr
    result = json.loads(out["json"].read_text())
    confirmed = [c for c in result["comparisons"] if c["confirmed"]]
    assert {c["point"] for c in confirmed} == {"b1-s32-n0", "b4-s32-n0"}
    assert all(c["confirm_run"] and c["groups_base"] == 1 for c in confirmed)  # main0 only: pr is not main
    root = ET.parse(out["xml"]).getroot()
    assert len(root.findall(".//testcase")) == 2 and len(root.findall(".//failure")) >= 2
    md = out["md"].read_text()
    assert "FAIL" in md and "perfbench compare" in md and "branch `pr`" in md
    with ResultsStore(store, create=False) as st:
        subj = st.get_run(result["runs"][0])["subject"]
    assert subj["commit"] == "slow" and subj["role"] == "candidate" and subj["planted_slowdown"] == "10"


def test_interleaved_gate_on_the_tiny_suite(tmp_path):
    store = str(tmp_path / "s.sqlite")
    r = run_cli("gate", str(SUITE), "--store", store, "--interleave", BASE_CMD, "--branch", "pr", "--seed", "1",
                "--pairs", "1", "--rounds", "20", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    same = json.loads(r.stdout)
    assert same["mode"] == "interleaved" and not any(c["confirmed"] for c in same["comparisons"])
    assert all(c["groups_base"] == c["groups_cand"] == 20 for c in same["comparisons"])
    r = run_cli("gate", str(SUITE), "--store", store, "--interleave", BASE_CMD, "--branch", "pr", "--seed", "2",
                "--pairs", "1", "--rounds", "20", "--format", "json", env={"PERFBENCH_TEST_SLOWDOWN": "10"})
    assert r.returncode == 1, r.stdout + r.stderr
    slow = json.loads(r.stdout)
    lat = [c for c in slow["comparisons"] if c["metric"] == "latency_median_s"]
    assert any(c["confirmed"] for c in lat) and all(c["ratio"] > 2 for c in lat)


def test_calibrate_stores_a_floor_per_point_and_metric(tmp_path):
    store = tmp_path / "s.sqlite"
    r = run_cli("gate", "calibrate", str(SUITE), "--store", str(store), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {(x["point_key"], x["metric"]) for x in rows} == {
        (p, m) for p in ("b1-s32-n0", "b4-s32-n0") for m in ("latency_median_s", "tokens_per_s")}
    with ResultsStore(store) as st:
        floors = st.noise_floors(hardware_id=rows[0]["hardware_id"])
    assert len(floors) == 4 and all(f["floor"] > 0 and f["mode"] == "separate" for f in floors)
