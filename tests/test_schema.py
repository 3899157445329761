"""The result schema is the one list every output derives from."""

from __future__ import annotations

import csv
import io
import sqlite3

import pytest

from perfbench.schema import FIELDS, POINT_FIELDS, SCALAR_FIELDS, SchemaError, check_point, metrics
from perfbench.store import ResultsStore
from tests.conftest import run_cli, tiny_spec


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(SchemaError, match="not_a_field"):
        check_point({"batch_size": 1, "not_a_field": 2})
    with pytest.raises(SchemaError, match="batch_size: expected an integer"):
        check_point({"batch_size": "8"})
    with pytest.raises(SchemaError, match="64 bits"):
        check_point({"batch_size": 10**20})
    with pytest.raises(SchemaError, match="expected a number"):
        check_point({"tokens_per_s": "fast"})
    assert check_point({"tokens_per_s": float("nan")}) == {"tokens_per_s": None}


def test_names_carry_units_and_metrics_say_their_direction():
    for f in POINT_FIELDS:
        if f.unit == "s":
            assert f.name.endswith("_s"), f.name
        if f.unit == "bytes":
            assert f.name.endswith("_bytes"), f.name
    m = metrics()
    assert m["tokens_per_s"] == "maximize" and m["latency_median_s"] == "minimize"
    assert m["tg_tokens_per_s"] == "maximize" and m["energy_per_token_j"] == "minimize"
    assert "batch_size" not in m and "energy_note" not in m


def test_store_sweeps_and_csv_derive_from_the_list(tmp_path):
    from perfbench.sweep.spec import METRICS
    from perfbench.sweep.trial import SUMMARY_FIELDS

    with ResultsStore(tmp_path / "s.sqlite"):
        pass
    with sqlite3.connect(tmp_path / "s.sqlite") as c:
        cols = {r[1] for r in c.execute("PRAGMA table_info(points)")}
    assert {f.column for f in POINT_FIELDS} <= cols
    assert METRICS == metrics() and set(metrics()) <= set(SUMMARY_FIELDS)


def test_a_real_run_fills_the_schema_and_every_output_shows_it(write_spec, tmp_path):
    """Energy fields are in every point; here (no RAPL, no NVML) they say why energy is missing."""
    spec = write_spec(tiny_spec(batch_sizes=[1], measure={"idle_seconds": 0}))
    store = str(tmp_path / "r.sqlite")
    r = run_cli("run", str(spec), "--store", store, "--format", "json")
    assert r.returncode == 0, r.stderr
    with ResultsStore(store) as st:
        (run,) = st.list_runs()
        (p,) = st.get_run(run["run_id"])["points"]
    assert set(FIELDS) <= set(p)
    assert p["tokens_source"] == "requested" and p["tokens_per_step"] == 16
    assert p["energy_note"] and (p["energy_j"] is None) == (p["energy_method"] is None)
    out = run_cli("results", "show", run["run_id"], "--store", store, "--format", "csv")
    header = next(csv.reader(io.StringIO(out.stdout)))
    assert set(SCALAR_FIELDS) <= set(header)
    table = run_cli("results", "show", run["run_id"], "--store", store)
    assert "engine: torch" in table.stdout and "energy" in table.stdout
