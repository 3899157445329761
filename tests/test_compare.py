"""`perfbench compare`: runs or sets of runs, by id or filter; tables, Markdown, JSON; geomean."""

from __future__ import annotations

import json

import pytest

from perfbench.store import ResultsStore
from tests.conftest import run_cli
from tests.gate_helpers import add_run


@pytest.fixture
def store(tmp_path):
    return tmp_path / "r.sqlite"


def test_compare_two_runs_json_verdicts_and_geomean(store):
    with ResultsStore(store) as st:
        a = add_run(st, level=1e-3, seed=1)
        b = add_run(st, level=1.3e-3, seed=2)
    r = run_cli("compare", a, b, "--store", str(store), "--format", "json", "-m", "latency_median_s",
                "-m", "tokens_per_s")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = out["comparisons"]
    assert len(rows) == 4 and {x["verdict"] for x in rows} == {"slower"}
    lat = [x for x in rows if x["metric"] == "latency_median_s"]
    assert all(1.2 < x["ratio"] < 1.4 and x["ci_low"] > 1 and x["p_value"] < 1e-6 for x in lat)
    g = out["summary"]["metrics"]["latency_median_s"]
    assert 1.2 < g["geomean_ratio"] < 1.4 and g["points"] == 2


def test_sets_by_filter_and_what_was_left_out(store):
    with ResultsStore(store) as st:
        for i in range(3):
            add_run(st, seed=i, subject={"role": "candidate", "branch": "main"})
        add_run(st, seed=9, batches=(1, 8), subject={"role": "candidate", "branch": "pr"})
    r = run_cli("compare", "branch:main,last:2", "branch:pr", "--store", str(store), "--format", "json")
    out = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert [x["point"] for x in out["comparisons"]] == ["b1-s16-n0"]
    assert out["comparisons"][0]["groups_base"] == 2
    assert out["summary"]["only_base"] == ["synth b4-s16-n0"]
    assert out["summary"]["only_candidate"] == ["synth b8-s16-n0"]


def test_across_backends_is_a_plain_comparison_table(store):
    with ResultsStore(store) as st:
        a = add_run(st, name="llamafile-pi5", backend="llama-cpp", seed=1, level=2e-3)
        b = add_run(st, name="ollama-pi5", backend="torch", seed=2, level=1e-3)
    r = run_cli("compare", a, b, "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert "llamafile-pi5 vs ollama-pi5 b1-s16-n0" in r.stdout and "faster" in r.stdout
    assert "plain comparison" in r.stdout


def test_markdown_escapes_names(store):
    with ResultsStore(store) as st:
        a = add_run(st, name="a|b[red]`x`", seed=1)
        b = add_run(st, name="a|b[red]`x`", seed=2)
    r = run_cli("compare", a, b, "--store", str(store), "--format", "markdown")
    assert r.returncode == 0, r.stderr
    assert "a\\|b\\[red\\]\\`x\\`" in r.stdout and "| **same** |" in r.stdout


def test_bad_input_exits_2(store):
    with ResultsStore(store) as st:
        a = add_run(st)
    for args, needle in ((("--metric", "nope"), "unknown metric"), (("--threshold", "abc"), "--threshold"),
                         (("--format", "xml"), "--format")):
        r = run_cli("compare", a, a, "--store", str(store), *args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
    r = run_cli("compare", "bogus:1", a, "--store", str(store))
    assert r.returncode == 2 and "bad filter" in r.stderr
    r = run_cli("compare", a, a, "--store", str(store.parent / "missing.sqlite"))
    assert r.returncode == 3
