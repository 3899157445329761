"""Landscape analysis on SYNTHETIC landscapes with known answers: peaks, best, default and gain,
importance, cross-hardware comparison; and the plots built from them."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from perfbench.errors import InputError
from perfbench.store import ResultsStore
from perfbench.sweep.db import SweepDB
from perfbench.sweep.landscape import (best_point, compare, default_point, find_peaks, gain, importance,
                                       trials_frame)
from perfbench.sweep.spec import parse_sweep
from tests.conftest import run_cli, tiny_spec

AXES = {"batch_size": [1, 2, 4, 8], "backend.compile": ["none", "default", "reduce-overhead"]}
# tokens/s on the grid: rows are compile modes, columns batch sizes. Local optima (strictly better
# than every +-1 neighbour along either axis): 50 (reduce-overhead, 1), 45 (default, 8),
# 40 (default, 2). The default setting (batch 1, eager) is 10.
TABLE = {
    "none":            [10, 20, 30, 25],
    "default":         [12, 40, 35, 45],
    "reduce-overhead": [50, 30, 20, 44],
}
PARAMS = list(AXES)


def frame(table=TABLE, failed=(), metric="tokens_per_s", invert=False) -> pd.DataFrame:
    rows = []
    for c, values in table.items():
        for b, v in zip(AXES["batch_size"], values):
            bad = (b, c) in failed
            rows.append({"trial_index": len(rows), "batch_size": b, "backend.compile": c,
                         "status": "failed" if bad else "completed",
                         metric: math.nan if bad else (1.0 / v if invert else float(v)),
                         "run_id": f"run-{b}-{c}"})
    return pd.DataFrame(rows)


def keyset(points):
    return [(p["params"]["batch_size"], p["params"]["backend.compile"], p["metric"]) for p in points]


def test_peaks_best_default_gain_on_a_known_landscape():
    df = frame()
    peaks = find_peaks(df, AXES, "tokens_per_s", "maximize")
    assert keyset(peaks) == [(1, "reduce-overhead", 50.0), (8, "default", 45.0), (2, "default", 40.0)]
    best = best_point(df, PARAMS, "tokens_per_s", "maximize")
    assert best["params"] == {"batch_size": 1, "backend.compile": "reduce-overhead"} and best["metric"] == 50
    assert best["run_id"] == "run-1-reduce-overhead"
    default, note = default_point(df, PARAMS, "tokens_per_s", {"batch_size": 1, "backend.compile": "none"}, AXES)
    assert note is None and default["metric"] == 10 and default["status"] == "completed"
    assert gain(best["metric"], default["metric"], "maximize") == pytest.approx(4.0)


def test_minimising_latency_finds_the_same_peaks():
    df = frame(metric="latency_median_s", invert=True)
    peaks = find_peaks(df, AXES, "latency_median_s", "minimize")
    assert [(b, c) for b, c, _ in keyset(peaks)] == [(1, "reduce-overhead"), (8, "default"), (2, "default")]
    best = best_point(df, PARAMS, "latency_median_s", "minimize")
    assert best["metric"] == pytest.approx(1 / 50)
    # gain is "how much better", mirrored for minimise: latency 0.1 -> 0.02 is +400%.
    assert gain(1 / 50, 1 / 10, "minimize") == pytest.approx(4.0)
    assert gain(None, 1.0, "maximize") is None


def test_failed_neighbours_count_as_worse_and_unmeasured_are_ignored():
    # (batch 8, default) = 45 fails: (8, reduce-overhead) = 44 now beats all its measured neighbours.
    df = frame(failed={(8, "default")})
    peaks = keyset(find_peaks(df, AXES, "tokens_per_s", "maximize"))
    assert (8, "reduce-overhead", 44.0) in peaks and all(p[:2] != (8, "default") for p in peaks)
    # Drop a row entirely (never measured): its neighbours are judged on the rest.
    sparse = frame()[lambda d: ~((d["batch_size"] == 2) & (d["backend.compile"] == "default"))]
    peaks = keyset(find_peaks(sparse, AXES, "tokens_per_s", "maximize"))
    assert (4, "default", 35.0) not in peaks  # 45 next to it still wins
    assert (1, "reduce-overhead", 50.0) in peaks
    # A single-point grid is its own peak; in a sparse grid an isolated point is not, unless it is
    # the best measured point (a few random trials scattered over the grid).
    one = find_peaks(frame().head(1), {"batch_size": [1], "backend.compile": ["none"]}, "tokens_per_s", "maximize")
    assert keyset(one) == [(1, "none", 10.0)]
    two = frame()[lambda d: d["run_id"].isin(["run-1-none", "run-8-reduce-overhead"])]
    assert keyset(find_peaks(two, AXES, "tokens_per_s", "maximize")) == [(8, "reduce-overhead", 44.0)]


def test_a_plateau_is_one_peak():
    """Equal neighbours no other neighbour beats are one local optimum, reported once (a strict rule
    would report none)."""
    axes = {"batch_size": [1, 2, 4]}
    df = pd.DataFrame({"batch_size": [1, 2, 4], "status": "completed", "tokens_per_s": [5.0, 9.0, 9.0],
                       "run_id": ["a", "b", "c"], "trial_index": [0, 1, 2]})
    assert [p["params"] for p in find_peaks(df, axes, "tokens_per_s", "maximize")] == [{"batch_size": 2}]
    df["tokens_per_s"] = [9.0, 5.0, 9.0]  # two separate optima of equal value
    assert [p["params"] for p in find_peaks(df, axes, "tokens_per_s", "maximize")] == [{"batch_size": 1}, {"batch_size": 4}]


def test_default_off_grid_or_unmeasured_gives_null_and_a_note():
    df = frame()
    d, note = default_point(df, PARAMS, "tokens_per_s", {"batch_size": 16, "backend.compile": "none"}, AXES)
    assert d is None and "batch_size=16" in note and "not on the sweep's grid" in note
    d, note = default_point(df.iloc[1:], PARAMS, "tokens_per_s", {"batch_size": 1, "backend.compile": "none"}, AXES)
    assert d is None and "was not measured" in note
    d, note = default_point(frame(failed={(1, "none")}), PARAMS, "tokens_per_s",
                            {"batch_size": 1, "backend.compile": "none"}, AXES)
    assert d["metric"] is None and d["status"] == "failed" and "failed" in note
    d, note = default_point(df, PARAMS, "tokens_per_s", None, AXES, "no single default batch size")
    assert d is None and note == "no single default batch size"


def test_importance_is_the_main_effect_variance_share():
    # Additive landscape f(batch) + g(compile): f = 0,2,4,6 (variance 5), g = 0,0,3 (variance 2),
    # so the shares are 5/7 and 2/7 and they sum to 1 (no interaction); a dead parameter gets 0.
    f = {1: 0, 2: 2, 4: 4, 8: 6}
    g = {"none": 0, "default": 0, "reduce-overhead": 3}
    table = {c: [100 + f[b] + g[c] for b in AXES["batch_size"]] for c in AXES["backend.compile"]}
    df = frame(table)
    df["dtype"] = "float32"
    imp = importance(df, [*PARAMS, "dtype"], "tokens_per_s")
    assert imp["batch_size"] == pytest.approx(5 / 7, abs=1e-6)
    assert imp["backend.compile"] == pytest.approx(2 / 7, abs=1e-6)
    assert imp["dtype"] == 0.0
    flat = frame({c: [7, 7, 7, 7] for c in AXES["backend.compile"]})
    assert importance(flat, PARAMS, "tokens_per_s") == {"batch_size": 0.0, "backend.compile": 0.0}
    # Ranged parameters are binned, >= 3 trials a bin: 12 trials, 4 bins of 3. x drives the metric,
    # the noise-like z (same mean in every bin) explains nothing.
    cont = pd.DataFrame({"x": [0.1 * i for i in range(1, 13)], "z": [1, 2, 3] * 4, "status": "completed",
                         "tokens_per_s": [10.0, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]})
    got = importance(cont, ["x", "z"], "tokens_per_s", ranged={"x", "z"})
    assert got["x"] == pytest.approx(1.0) and got["z"] == pytest.approx(0.0)
    # Four random trials: one per bin or value, so nothing is estimable (not "everything is 100%").
    few = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "c": ["a", "b", "c", "d"], "status": "completed",
                        "tokens_per_s": [1.0, 2, 3, 4]})
    assert importance(few, ["x", "c"], "tokens_per_s", ranged={"x"}) == {"x": None, "c": None}


def test_trials_frame_keeps_none_and_list_values():
    trials = [
        {"trial_index": 0, "params": {"weights": None, "batch_sizes": [1, 2]}, "status": "completed",
         "metric": 5.0, "wall_s": 1.5, "measure_s": 1.0, "run_id": "r0"},
        {"trial_index": 1, "params": {"weights": "/w", "batch_sizes": [4]}, "status": "failed",
         "metric": None, "reason": "boom"},
    ]
    df = trials_frame(trials, ["weights", "batch_sizes"], "tokens_per_s")
    assert list(df.columns[:5]) == ["trial_index", "status", "weights", "batch_sizes", "tokens_per_s"]
    assert df.loc[0, "overhead_s"] == pytest.approx(0.5) and math.isnan(df.loc[1, "tokens_per_s"])
    best = best_point(df, ["weights", "batch_sizes"], "tokens_per_s", "maximize")
    assert best["params"] == {"weights": None, "batch_sizes": [1, 2]}


def _summary(df, name, hw, spec_hash="h"):
    return {"sweep_id": f"{name}-{hw}", "name": name, "hardware_id": hw, "spec_hash": spec_hash,
            "metric": {"name": "tokens_per_s", "goal": "maximize"}, "parameters": PARAMS,
            "best": best_point(df, PARAMS, "tokens_per_s", "maximize")}


def test_compare_reports_the_gain_from_retuning_on_new_hardware():
    df_a = frame()  # best on A: (1, reduce-overhead) = 50
    table_b = {k: list(v) for k, v in TABLE.items()}
    table_b["reduce-overhead"][0] = 60  # A's best is worth 60 on B ...
    table_b["default"][3] = 66  # ... but B's own best is (8, default) = 66, worth 45 on A
    df_b = frame(table_b)
    out = compare(_summary(df_a, "s", "hwA"), _summary(df_b, "s", "hwB"), df_a, df_b)
    assert out["a"]["best"]["params"] == {"batch_size": 1, "backend.compile": "reduce-overhead"}
    assert out["b"]["best"]["params"] == {"batch_size": 8, "backend.compile": "default"}
    assert out["a_best_on_b"]["measured"] and out["a_best_on_b"]["metric"] == 60
    assert out["gain_from_retuning_on_b"] == pytest.approx(66 / 60 - 1)  # 10%
    assert out["gain_from_retuning_on_a"] == pytest.approx(50 / 45 - 1)
    assert out["same_best"] is False and out["notes"] == []
    # A's best never measured on B: say so, no gain.
    df_b2 = df_b[~((df_b["batch_size"] == 1) & (df_b["backend.compile"] == "reduce-overhead"))]
    out = compare(_summary(df_a, "s", "hwA"), _summary(df_b2, "s", "hwB"), df_a, df_b2)
    assert out["a_best_on_b"]["measured"] is False and out["gain_from_retuning_on_b"] is None
    assert any("was not measured on B" in n for n in out["notes"])
    # Same hardware twice is allowed, with a note; different parameters are refused.
    out = compare(_summary(df_a, "s", "hwA"), _summary(df_a, "s", "hwA", "h2"), df_a, df_a)
    assert out["gain_from_retuning_on_b"] == 0 and out["same_best"] and len(out["notes"]) == 2
    other = {**_summary(df_a, "s", "hwB"), "parameters": ["seq_len"]}
    with pytest.raises(InputError, match="different parameters"):
        compare(_summary(df_a, "s", "hwA"), other, df_a, df_a)


def test_static_plots_are_written(tmp_path):
    from perfbench.sweep.plots import plot_sweep, slice_frame

    df = frame(failed={(4, "none")})
    table, fixed = slice_frame(df, "batch_size", "backend.compile", PARAMS, "tokens_per_s", "maximize", AXES)
    assert list(table.columns) == ["1", "2", "4", "8"] and list(table.index) == ["none", "default", "reduce-overhead"]
    assert table.loc["default", "8"] == 45 and math.isnan(table.loc["none", "4"]) and fixed == {}
    files = plot_sweep(df, PARAMS, "tokens_per_s", "maximize", tmp_path, axes=AXES, title="synthetic")
    names = sorted(p.name for p in files)
    assert names == sorted(f"{stem}.{ext}" for stem in ("heatmap_batch_size__backend-compile",
                                                        "contour_batch_size__backend-compile",
                                                        "parallel_coordinates") for ext in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in files)
    one = plot_sweep(df[df["backend.compile"] == "none"], ["batch_size"], "tokens_per_s", "maximize",
                     tmp_path / "one", axes={"batch_size": AXES["batch_size"]})
    assert {p.name for p in one} >= {"line_batch_size.png", "line_batch_size.svg"}


def test_sparse_sweeps_get_a_scatter_and_no_empty_heatmap_or_contour(tmp_path):
    """Random/bayes trials rarely share the other parameters' values: the slice through the best
    trial holds one or two cells. Every trial goes on a scatter; empty plots are not written."""
    from perfbench.sweep.plots import plot_sweep

    diag = frame()[lambda d: d["run_id"].isin(["run-1-none", "run-2-default", "run-8-reduce-overhead"])]
    names = {p.name for p in plot_sweep(diag, PARAMS, "tokens_per_s", "maximize", tmp_path, axes=AXES)}
    assert "scatter_batch_size__backend-compile.png" in names
    assert not any(n.startswith("contour_") for n in names)  # no 2x2 block measured: nothing to contour
    one = frame()[lambda d: d["run_id"] == "run-1-none"]
    names = {p.name for p in plot_sweep(one, PARAMS, "tokens_per_s", "maximize", tmp_path / "one", axes=AXES)}
    assert not any(n.startswith(("heatmap_", "contour_")) for n in names)  # a one-cell slice says nothing


def test_plotly_figures_for_the_dashboard():
    pytest.importorskip("plotly", reason="plotly is the `dashboard` extra: pip install 'perfbench[dashboard]'")
    from perfbench.sweep.plots import plotly_figures

    figs = plotly_figures(frame(), PARAMS, "tokens_per_s", "maximize", axes=AXES)
    assert set(figs) == {"parallel_coordinates", "heatmap_batch_size__backend.compile",
                         "contour_batch_size__backend.compile"}
    heat = figs["heatmap_batch_size__backend.compile"].data[0]
    assert list(heat.x) == ["1", "2", "4", "8"] and heat.z[2][0] == 50
    par = figs["parallel_coordinates"].data[0]
    assert [d.label for d in par.dimensions] == [*PARAMS, "tokens_per_s"]
    assert list(par.dimensions[1].ticktext) == AXES["backend.compile"]


def _fake_sweep(st, sweep, hw: str, table: dict) -> str:
    """Record a sweep as if it had run on hardware `hw`, with the metric values of `table`."""
    db = SweepDB(st)
    sid = sweep.sweep_id(hw)
    db.begin_sweep(sweep_id=sid, sweep_json=sweep.to_json(), name=sweep.name, method="grid",
                   metric=sweep.metric, goal=sweep.goal, spec_hash=sweep.spec_hash(), hardware_id=hw,
                   spec_path=None, executor="local")
    for i, params in enumerate(sweep.grid_points()):
        key = sweep.trial_key(params)
        db.start_trial(sid, key, i, params)
        w = sweep.workload_for(params)
        run_id = st.create_run(name=w["name"], spec=w, spec_hash="x", fingerprint={"hardware_id": hw},
                               versions={}, commit=None, device="cuda", sweep_id=sid)
        st.finish_run(run_id, "completed")
        value = table[params["backend.compile"]][AXES["batch_size"].index(params["batch_size"])]
        db.finish_trial(sid, key, status="completed", run_id=run_id, metric=float(value), peak_memory_bytes=None,
                        reason=None, wall_s=1.0, measure_s=0.5, result=None)
    db.finish_sweep(sid, "completed")
    return sid


def test_compare_cli_on_two_machines(store_path):
    sweep = parse_sweep({"name": "cmp", "workload": tiny_spec(batch_sizes=[1]), "method": "grid",
                         "parameters": {"batch_size": {"values": AXES["batch_size"]},
                                        "backend.compile": {"values": AXES["backend.compile"]}}})
    table_b = {k: list(v) for k, v in TABLE.items()}
    table_b["reduce-overhead"][0], table_b["default"][3] = 60, 66
    with ResultsStore(store_path) as st:
        a = _fake_sweep(st, sweep, "hw-old", TABLE)
        b = _fake_sweep(st, sweep, "hw-new", table_b)
    assert a != b
    r = run_cli("sweep", "compare", a, b, "--store", str(store_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["a"]["hardware_id"] == "hw-old" and out["b"]["hardware_id"] == "hw-new"
    assert out["gain_from_retuning_on_b"] == pytest.approx(66 / 60 - 1)
    r = run_cli("sweep", "compare", a, b, "--store", str(store_path))
    assert r.returncode == 0 and "gain from re-tuning on B: +10.00%" in r.stdout
    r = run_cli("sweep", "show", b, "--store", str(store_path), "--format", "json")
    s = json.loads(r.stdout)
    assert s["default"]["params"] == {"batch_size": 1, "backend.compile": "none"}
    assert s["gain_over_default"] == pytest.approx(66 / 10 - 1)
    assert [p["metric"] for p in s["peaks"]] == [66.0, 60.0, 40.0]
    assert {x["hardware_id"] for x in s["results"]} == {"hw-new"}


def test_a_sweep_running_elsewhere_is_not_run_twice(store_path):
    """A second process on a running sweep would measure every remaining trial again: refused."""
    import subprocess

    from perfbench.errors import InputError

    sweep = parse_sweep({"name": "twice", "workload": tiny_spec(batch_sizes=[1]), "method": "grid",
                         "parameters": {"batch_size": {"values": [1, 2]}}})
    kw = dict(sweep_json=sweep.to_json(), name=sweep.name, method="grid", metric=sweep.metric, goal=sweep.goal,
              spec_hash=sweep.spec_hash(), hardware_id="hw", spec_path=None, executor="local")
    other = subprocess.Popen(["sleep", "30"])
    try:
        with ResultsStore(store_path) as st:
            db = SweepDB(st)
            sid = sweep.sweep_id("hw")
            assert db.begin_sweep(sweep_id=sid, **kw) is False
            from perfbench.store import process_identity

            st._conn.execute("UPDATE sweeps SET pid=?, proc_start=? WHERE sweep_id=?",
                             (other.pid, process_identity(other.pid), sid))
            with pytest.raises(InputError, match=f"already running in process {other.pid}"):
                db.begin_sweep(sweep_id=sid, **kw)
            listed = db.list_sweeps()[0]
            assert listed["status"] == "running" and listed["planned"] == 2 and listed["trials"] == 0
            other.kill()
            other.wait()
            assert db.begin_sweep(sweep_id=sid, **kw) is True  # its owner is gone: a resume
    finally:
        other.kill()
