"""Store migrations, tested on a store that the release at commit f74d606 really wrote
(tests/fixtures/stores/f74d606/README.md says how it was made and what it holds)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

import pytest

from perfbench.errors import StoreError
from perfbench.migrations import STORE_SCHEMA_VERSION
from perfbench.store import ResultsStore
from tests.conftest import FIXTURES, run_cli

OLD = FIXTURES / "stores" / "f74d606"
INVENTORY = json.loads((OLD / "inventory.json").read_text())


@pytest.fixture
def old_store(tmp_path):
    """A copy of the f74d606 store (opening upgrades it in place: never the fixture itself)."""
    dst = tmp_path / "perfbench.sqlite"
    shutil.copy(OLD / "perfbench.sqlite", dst)
    return dst


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fixture_is_what_the_inventory_says():
    assert _sha(OLD / "perfbench.sqlite") == INVENTORY["sqlite_sha256"]


def test_upgrade_keeps_every_run_point_sweep_and_calibration(old_store):
    with ResultsStore(old_store) as st:
        runs = st.list_runs()
        full = {r["run_id"]: st.get_run(r["run_id"]) for r in runs}
        cals = st.calibrations()
        version = st.query("SELECT value FROM meta WHERE key='schema_version'")[0][0]
    assert int(version) == STORE_SCHEMA_VERSION
    assert {r["run_id"] for r in runs} == {r["run_id"] for r in INVENTORY["runs"]}
    for inv in INVENTORY["runs"]:
        run = full[inv["run_id"]]
        assert len(run["points"]) == inv["points"], inv["run_id"]
        assert sum(p["status"] == "ok" for p in run["points"]) == inv["points_ok"]
        assert run["engine"]["name"] == "torch" and run["engine"]["version"]  # backfilled
    assert [c["calibration_id"] for c in cals] == [c["calibration_id"] for c in INVENTORY["calibrations"]]
    _check_points_moved_out_of_extra(full)


def _check_points_moved_out_of_extra(full: dict) -> None:
    """What release 1 kept in extra_json now sits in typed columns, and nothing else was lost."""
    points = {p["point_id"]: p for p in INVENTORY["points"]}
    seen = 0
    for run in full.values():
        for p in run["points"]:
            assert p["extra"] == {}, p
            if p["status"] == "ok":
                assert p["tokens_per_step"] > 0 and p["samples_s"]
            else:
                assert p["traceback"] and p["error"]
            seen += 1
    assert seen == len(points)
    (traced,) = INVENTORY["points_with_trace"]
    tp = [p for p in full[traced["run_id"]]["points"] if p["trace_path"]]
    assert tp[0]["trace_path"] == traced["trace_path"]
    assert tp[0]["trace_figures"]["has_gpu"] is False and tp[0]["profiler_overhead_ratio"] > 0
    decode = [p for r in full.values() for p in r["points"] if r["spec"]["phase"] == "decode"]
    assert decode and all(p["context_len"] == 16 and p["kv_cache"] == "dynamic" for p in decode)


def test_sweeps_survive_the_upgrade(old_store):
    from perfbench.sweep.db import SweepDB

    with ResultsStore(old_store) as st:
        db = SweepDB(st)
        for inv in INVENTORY["sweeps"]:
            trials = db.trials(inv["sweep_id"])
            assert len(trials) == inv["trials"], inv["sweep_id"]


def test_migrated_and_fresh_stores_have_the_same_columns(old_store, tmp_path):
    """A field added to the schema without its migration step fails here."""
    with ResultsStore(old_store):
        pass
    with ResultsStore(tmp_path / "fresh.sqlite"):
        pass

    def cols(path, table):
        with sqlite3.connect(path) as c:
            return {r[1] for r in c.execute(f"PRAGMA table_info({table})")}

    for table in ("runs", "points", "calibrations"):
        assert cols(old_store, table) == cols(tmp_path / "fresh.sqlite", table), table


def test_a_failed_migration_leaves_the_store_as_it_was(old_store, monkeypatch):
    import perfbench.migrations as mig


    def boom(c):
        c.execute("ALTER TABLE runs ADD COLUMN engine_json TEXT")
        raise RuntimeError("disk fell off")

    monkeypatch.setattr(mig, "MIGRATIONS", ((2, "broken", boom),))
    with pytest.raises(RuntimeError, match="disk fell off"):
        ResultsStore(old_store)
    with sqlite3.connect(old_store) as c:
        assert "engine_json" not in {r[1] for r in c.execute("PRAGMA table_info(runs)")}
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"


def test_a_newer_store_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "new.sqlite"
    with ResultsStore(path):
        pass
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(STORE_SCHEMA_VERSION + 1),))
    before = _sha(path)
    with pytest.raises(StoreError, match="newer perfbench"):
        ResultsStore(path)
    assert _sha(path) == before


def test_existing_commands_work_on_the_upgraded_store(old_store):
    store = str(old_store)
    out = run_cli("results", "list", "--store", store)
    assert out.returncode == 0, out.stderr
    for inv in INVENTORY["runs"]:
        for fmt in ("table", "json", "csv"):
            r = run_cli("results", "show", inv["run_id"], "--store", store, "--format", fmt)
            assert r.returncode == 0, (inv["run_id"], fmt, r.stderr)
    assert run_cli("sweep", "list", "--store", store).returncode == 0
    for inv in INVENTORY["sweeps"]:
        r = run_cli("sweep", "show", inv["sweep_id"], "--store", store, "--format", "json")
        assert r.returncode == 0, (inv["sweep_id"], r.stderr)
    traced = INVENTORY["points_with_trace"][0]
    r = run_cli("trace", "analyze", str(OLD / traced["fixture_relative_path"]), "--format", "json")
    assert r.returncode == 0, r.stderr
    prefill = next(r["run_id"] for r in INVENTORY["runs"] if r["phase"] == "prefill" and r["points_ok"])
    r = run_cli("roofline", "place", prefill, "--store", store, "--hardware", "generic-x86-64")
    assert r.returncode == 0, r.stderr
    r = run_cli("hw", "show", "generic-x86-64", "--store", store)  # its measured ceilings: the calibration
    assert r.returncode == 0 and "measured" in r.stdout, r.stderr
