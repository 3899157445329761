"""Classes 4-6 of the hostile-input issue: a store that is not ours is never touched, one damaged
row never breaks the store, and a killed run or sweep is told apart from a live one for sure."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from perfbench.errors import StoreError
from perfbench.store import ResultsStore, process_identity
from tests.conftest import FIXTURES, REPO, as_if_in_a_terminal, run_cli, tiny_spec


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def foreign(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("INSERT INTO customers(name) VALUES ('ada')")
    return path


@pytest.mark.parametrize("args", [("results", "list"), ("results", "show", "x"), ("sweep", "list")])
def test_a_foreign_database_is_refused_by_readers_and_left_byte_identical(foreign, args):
    before = _sha(foreign)
    r = run_cli(*args, "--store", str(foreign))
    assert r.returncode == 3 and "not a perfbench results store" in r.stderr, r.stderr
    assert _sha(foreign) == before
    assert not foreign.with_name(foreign.name + "-wal").exists()


def test_a_foreign_database_is_refused_by_writers_too(foreign, write_spec):
    before = _sha(foreign)
    r = run_cli("run", str(write_spec(tiny_spec())), "--store", str(foreign))
    assert r.returncode == 3 and _sha(foreign) == before


def test_readers_never_write(tmp_path):
    """Reading an older store shows it as it is: no upgrade, no journal switch, not a byte changed."""
    store = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "stores" / "f74d606" / "perfbench.sqlite", store)
    before = _sha(store)
    for args in (("results", "list"), ("results", "show", "20261202-173402"), ("sweep", "list")):
        r = run_cli(*args, "--store", str(store))
        assert r.returncode == 0, (args, r.stderr)
    assert _sha(store) == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite"]
    with ResultsStore(store, create=False) as st:
        run = st.get_run("20261202-173402")
    assert run["points"][0]["tokens_per_step"] and run["points"][0]["trace_figures"]  # read from extra_json


def test_a_read_only_open_refuses_to_write(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite"):
        pass
    with ResultsStore(tmp_path / "s.sqlite", create=False) as st:
        with pytest.raises(StoreError, match="readonly|read-only"):
            st.add_calibration(fingerprint={}, versions={}, commit=None, device="cpu", results={})


@pytest.fixture
def two_runs(write_spec, tmp_path):
    store = tmp_path / "s.sqlite"
    for name in ("good", "bad"):
        r = run_cli("run", str(write_spec(tiny_spec(name=name, batch_sizes=[1]))), "--store", str(store))
        assert r.returncode == 0, r.stderr
    with sqlite3.connect(store) as c:
        ids = dict(c.execute("SELECT name, run_id FROM runs"))
    return store, ids


def test_one_damaged_run_does_not_break_the_listing(two_runs):
    store, ids = two_runs
    with sqlite3.connect(store) as c:
        c.execute("UPDATE runs SET spec_json='{not json' WHERE run_id=?", (ids["bad"],))
    r = run_cli("results", "list", "--store", str(store))
    assert r.returncode == 0 and ids["good"] in r.stdout and "damaged" in r.stdout, r.stderr
    r = run_cli("results", "show", ids["bad"], "--store", str(store))
    assert r.returncode == 3 and ids["bad"] in r.stderr and "spec_json" in r.stderr
    assert run_cli("results", "show", ids["good"], "--store", str(store)).returncode == 0


def test_text_in_a_number_column_and_bad_samples_are_named_not_fatal(two_runs):
    store, ids = two_runs
    with sqlite3.connect(store) as c:
        c.execute("UPDATE points SET latency_median_s='fast', samples_json='[1, \"x\"' WHERE run_id=?",
                  (ids["bad"],))
    for fmt in ("table", "json", "csv"):
        r = run_cli("results", "show", ids["bad"], "--store", str(store), "--format", fmt)
        assert r.returncode == 0, (fmt, r.stderr)
    r = run_cli("results", "show", ids["bad"], "--store", str(store))
    assert "damaged" in r.stdout and "latency_median_s" in r.stdout and "samples_s" in r.stdout


def test_a_reused_pid_does_not_keep_a_dead_run_running(tmp_path):
    """The run's process died and its pid now belongs to another process (here: this one)."""
    with ResultsStore(tmp_path / "s.sqlite") as st:
        run_id = st.create_run(name="r", spec={}, spec_hash="h", fingerprint={}, versions={}, commit=None,
                               device="cpu")
        assert st.get_run(run_id)["status"] == "running"  # its writer (us) is alive
        with sqlite3.connect(tmp_path / "s.sqlite") as c:
            c.execute("UPDATE runs SET proc_start='some-earlier-boot:12345' WHERE run_id=?", (run_id,))
        assert st.get_run(run_id)["status"] == "interrupted"
    assert process_identity() and process_identity() == process_identity(os.getpid())


def test_bad_db_timeout_is_bad_input(tmp_path):
    for bad in ("abc", "nan", "-1", "inf"):
        r = run_cli("results", "list", "--store", str(tmp_path / "x.sqlite"), env={"PERFBENCH_DB_TIMEOUT": bad})
        assert r.returncode == 2 and "PERFBENCH_DB_TIMEOUT" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_closes_a_sweep_as_interrupted(tmp_path, write_spec):
    """What `timeout`, Slurm and `docker stop` send: exit 130 and the sweep closed, like Ctrl-C."""
    store = tmp_path / "s.sqlite"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "name: term-test\nworkload: " + str(write_spec(tiny_spec(measure={"warmup": 0, "repeats": 200,
                                                                    "min_seconds": 2.0}))) +
        "\nparameters:\n  batch_size: {values: [1, 2, 3, 4]}\n")
    p = subprocess.Popen([sys.executable, "-m", "perfbench", "sweep", "run", str(sweep), "--store", str(store),
                          "-q"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_if_in_a_terminal)
    deadline = time.time() + 120
    while time.time() < deadline and not _trial_started(store):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    with sqlite3.connect(store) as c:
        assert c.execute("SELECT status FROM sweeps").fetchone()[0] == "interrupted"


def _trial_started(store) -> bool:
    try:
        with sqlite3.connect(store) as c:
            return c.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False
