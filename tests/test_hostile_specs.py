"""Classes 3 and 7 of the hostile-input issue: bounded resources on hostile YAML and grids, and no
value that reaches code unchecked. Every case exits 2, fast, with nothing written."""

from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from perfbench.errors import SpecError
from perfbench.spec import parse_spec
from perfbench.validation import load_yaml_text
from tests.conftest import run_cli, tiny_spec

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))


def test_an_anchor_bomb_is_refused_in_milliseconds():
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="aliases are expanded"):
        load_yaml_text(BOMB, "bomb.yaml")
    assert time.perf_counter() - t0 < 1.0


def test_deep_nesting_and_recursive_aliases_are_refused():
    with pytest.raises(SpecError, match="nested"):
        load_yaml_text("a: " + "[" * 5000 + "]" * 5000, "deep.yaml")
    with pytest.raises(SpecError, match="nested more than"):
        load_yaml_text("a: " + "[" * 40 + "]" * 40, "deep.yaml")
    with pytest.raises(SpecError, match="recursive"):
        load_yaml_text("a: &a [*a]", "loop.yaml")


def test_limits_can_be_raised(monkeypatch):
    monkeypatch.setenv("PERFBENCH_YAML_MAX_DEPTH", "64")
    assert load_yaml_text("a: " + "[" * 40 + "]" * 40, "deep.yaml")


@pytest.mark.parametrize("where", ["values", "base"])
def test_a_bomb_in_a_sweep_is_refused_like_anywhere_else(tmp_path, write_spec, where):
    """The bomb inside a sweep's `values` list once ran for minutes and grew without limit."""
    body = "\n".join("  " + line for line in BOMB.splitlines())
    sweep = tmp_path / "sweep.yaml"
    if where == "values":
        sweep.write_text(f"name: bomb\nworkload: {write_spec(tiny_spec())}\nbombs:\n{body}\n"
                         "parameters:\n  seq_len: {values: *i}\n")
    else:
        sweep.write_text(f"name: bomb\nworkload: {write_spec(tiny_spec())}\nparameters:\n"
                         "  seq_len: {values: [1, 2]}\nextra:\n" + body + "\n")
    t0 = time.perf_counter()
    r = run_cli("sweep", "run", str(sweep), "--store", str(tmp_path / "s.sqlite"))
    assert r.returncode == 2 and "expanded" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert time.perf_counter() - t0 < 20 and not (tmp_path / "s.sqlite").exists()


def test_a_deeply_nested_set_value_is_bad_input(write_spec, tmp_path):
    r = run_cli("run", str(write_spec(tiny_spec())), "--set", "model=" + "[" * 3000 + "]" * 3000,
                "--store", str(tmp_path / "s.sqlite"))
    assert r.returncode == 2 and "nested" in r.stderr and "Traceback" not in r.stderr


def test_sweep_values_must_be_scalars_and_grids_are_bounded(tmp_path, write_spec, monkeypatch):
    from perfbench.sweep.spec import parse_sweep

    base = tiny_spec()
    with pytest.raises(SpecError, match="scalar values"):
        parse_sweep({"name": "s", "workload": base, "parameters": {"seq_len": {"values": [[16], [32]]}}})
    big = {"name": "s", "workload": base, "method": "grid",
           "parameters": {"seq_len": {"values": list(range(1, 1001))},
                          "measure.repeats": {"values": list(range(1, 1001))},
                          "seed": {"values": list(range(3))}}}
    with pytest.raises(SpecError, match="3,000,000 points, over the limit"):
        parse_sweep(big, check_points=False)
    monkeypatch.setenv("PERFBENCH_MAX_GRID", "5000000")
    assert parse_sweep(big, check_points=False).planned_trials() == 3_000_000


def test_every_value_of_every_axis_is_checked_before_a_large_grid_starts():
    """A bad value on the slowest axis of a grid larger than the pre-check cap was never seen."""
    from perfbench.sweep.spec import MAX_PRECHECK, parse_sweep

    n = int(MAX_PRECHECK ** 0.5) + 2
    sweep = {"name": "s", "workload": tiny_spec(), "method": "grid", "budget": {"trials": 1},
             "parameters": {"measure.repeats": {"values": list(range(1, n + 1))},
                            "seed": {"values": list(range(n - 1)) + [-1]}}}
    with pytest.raises(SpecError) as err:
        parse_sweep(sweep)
    assert any(f == "parameters.seed" and "-1" in m for f, m in err.value.problems)


@pytest.mark.parametrize("spec,field", [
    (tiny_spec(batch_sizes=[10**20]), "batch_sizes"),
    (tiny_spec(batch_sizes=list(range(1, 2000))), "batch_sizes"),
    (tiny_spec(seq_len=10**12), "seq_len"),
    (tiny_spec(measure={"repeats": 10**12}), "measure.repeats"),
])
def test_numbers_are_range_checked_before_anything_is_written(write_spec, tmp_path, spec, field):
    store = tmp_path / "s.sqlite"
    r = run_cli("run", str(write_spec(spec)), "--store", str(store))
    assert r.returncode == 2 and f"{field}" in r.stderr, r.stderr
    assert not store.exists()


def test_roofline_analyze_shares_the_spec_validator():
    r = run_cli("roofline", "analyze", "--model", "llama-3.2-1b", "--phase", "decode", "--batch", "1",
                "--seq", "200000", "--hardware", "h100-sxm")
    assert r.returncode == 2 and "--seq" in r.stderr and "max_position_embeddings" in r.stderr


def test_plot_out_pointing_at_a_file_is_bad_input(tmp_path):
    f = tmp_path / "file.png"
    f.write_text("x")
    for args in (("roofline", "plot", "r"), ("sweep", "plot", "s")):
        r = run_cli(*args, "--out", str(f), "--store", str(tmp_path / "none.sqlite"))
        assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr


def test_a_huge_declared_grid_plots_only_what_was_measured(tmp_path):
    """`sweep plot` of a 4-million-cell grid with 10 measured trials died with MemoryError."""
    import pandas as pd

    from perfbench.sweep.plots import plot_sweep

    df = pd.DataFrame({"a": range(10), "b": range(10), "tokens_per_s": [float(i) for i in range(10)],
                       "status": ["completed"] * 10, "run_id": [f"r{i}" for i in range(10)]})
    axes = {"a": list(range(2000)), "b": list(range(2000))}
    files = plot_sweep(df, ["a", "b"], "tokens_per_s", "maximize", tmp_path, axes=axes)
    assert files


def test_an_exact_sweep_name_wins_over_a_longer_one(tmp_path):
    from perfbench.store import ResultsStore
    from perfbench.sweep.db import SweepDB

    with ResultsStore(tmp_path / "s.sqlite") as st:
        db = SweepDB(st)
        for name in ("grid", "grid-big"):
            db.begin_sweep(sweep_id=f"{name}-0123456789", sweep_json={}, name=name, method="grid",
                           metric="tokens_per_s", goal="maximize", spec_hash="h", hardware_id="hw",
                           spec_path=None, executor="local")
        assert db.resolve_sweep_id("grid") == "grid-0123456789"
        assert db.resolve_sweep_id("grid-b") == "grid-big-0123456789"


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=30))
def test_the_spec_loader_never_raises_anything_but_a_spec_error(data):
    """Property: whatever YAML holds, validation answers with SpecError (exit 2) or a valid spec."""
    text = yaml.safe_dump({**tiny_spec(), "model": data} if isinstance(data, dict) else data)
    try:
        value = load_yaml_text(text, "fuzz.yaml")
        parse_spec(value if isinstance(value, dict) else {"x": value}, "fuzz.yaml", check_device=False)
    except SpecError:
        pass
