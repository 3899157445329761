"""scripts/bench_dashboard.py: a small store, one pass over every page, a report and its JSON.

Only that it runs and that every page renders without an error is checked here, not the timings
(those depend on the machine; the full-size run is `.venv/bin/python scripts/bench_dashboard.py`)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("dash")

PAGES = {"runs", "compare", "roofline", "trace", "sweeps", "history", "serving", "energy"}


def test_small_run_reports_every_page(tmp_path):
    store, out = tmp_path / "bench.sqlite", tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "scripts/bench_dashboard.py", "--runs", "80", "--points", "1000",
                        "--sweeps", "2", "--trials", "40", "--repeat", "1", "--store", str(store), "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: some target missed on this machine
    assert "first render" in r.stdout or "render ms" in r.stdout
    report = json.loads(out.read_text())
    assert report["store"]["runs"] == 80 and report["store"]["points"] == 1000
    assert report["store"]["sweeps"] == 2 and report["store"]["trials"] == 80
    renders = {row["page"] for row in report["rows"] if row["kind"] == "render"}
    assert PAGES <= renders
    errors = [f"{row['page']} {row['label']}: {e}" for row in report["rows"] for e in row["errors"]]
    assert not errors, errors
    # every page past its bare render fired callbacks of its own
    fired = {row["page"] for row in report["rows"] if row["kind"] != "render"}
    assert PAGES <= fired

    # the store is a real one: sweeps parse back, trials link to runs
    from perfbench.store import ResultsStore
    from perfbench.sweep.db import SweepDB

    with ResultsStore(store, create=False) as st:
        sweeps = SweepDB(st).list_sweeps()
        assert len(sweeps) == 2 and all(s["planned"] == 40 for s in sweeps)
    con = sqlite3.connect(store)
    orphans = con.execute("SELECT COUNT(*) FROM sweep_trials t LEFT JOIN runs r USING (run_id)"
                          " WHERE t.run_id IS NOT NULL AND r.run_id IS NULL").fetchone()[0]
    assert orphans == 0
    con.close()
