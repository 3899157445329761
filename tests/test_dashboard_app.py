"""The dashboard's shell, CLI, saved dashboards and HTML report: read-only, safe, clear errors."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytest.importorskip("dash", reason="the dashboard extra: pip install 'perfbench[dashboard]' (scripts/setup.sh installs it)")

HOSTILE = "<img src=x onerror=alert(1)>[red]x[/red]\x1b[2J"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_store(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / "perfbench.sqlite"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- saved dashboards ---------------------------------------------------------------------------

def test_shipped_dashboards_load():
    from perfbench.dashboard.config import load_dashboard

    skip = load_dashboard(REPO / "dashboards" / "skip-study.yaml")
    assert skip.page_names[0] == "trace" and skip.settings_for("trace") == {"split": "hardware"}
    assert load_dashboard(REPO / "dashboards" / "overview.yaml").page_names[0] == "runs"


def test_bad_dashboard_file_names_every_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npages: [runz]\nrunz: 1\nruns: {since: 2026-13-45x, phase: [warp]}\n")
    r = run_cli("dashboard", str(bad), "--store", str(tmp_path / "none.sqlite"))
    assert r.returncode == 2, r.stderr
    for field in ("pages.0", "runz", "runs.since", "runs.phase.0"):
        assert field in r.stderr
    assert "Traceback" not in r.stderr


def test_saved_dashboard_scopes_runs_and_pages(dashboard_store, tmp_path):
    from perfbench.dashboard import source
    from perfbench.dashboard.app import PAGES, create_app
    from perfbench.dashboard.config import Dashboard
    from perfbench.dashboard.data import scoped_runs

    cfg = Dashboard.model_validate({"name": "t", "runs": {"hardware": [dashboard_store["history"]["hardware_id"]],
                                                          "phase": ["prefill"]},
                                    "pages": ["trace", "runs"], "settings": {"trace": {"split": "hardware"}}})
    try:
        create_app(dashboard_store["store"], cfg)
        assert source.visible_pages(PAGES) == ("runs", "trace")
        with source.open_store() as st:
            runs = scoped_runs(st)
        assert set(runs["hardware_id"]) == {dashboard_store["history"]["hardware_id"]}
        assert set(runs["phase"]) == {"prefill"}
        assert source.page_query("trace", {"runs": "x"}) == {"split": "hardware", "runs": "x"}
        assert source.page_query("trace", {"split": "none"})["split"] == "none"  # the URL wins
    finally:
        source.set_config(None)


# -- the shell: read-only, and a clear page for a store it cannot read ------------------------------

def test_pages_render_without_writing_the_store(dashboard_store, tmp_path):
    import dash

    from perfbench.dashboard.app import PAGES, create_app

    store = _copy_store(dashboard_store["store"], tmp_path / "ro")
    before = _sha(store)
    create_app(store)
    for page in dash.page_registry.values():
        if page["module"].rsplit(".", 1)[-1] in PAGES:
            page["layout"](runs=",".join(dashboard_store["cpu_runs"]))
    assert _sha(store) == before


def test_url_values_are_bound_parameters(dashboard_store):
    from perfbench.dashboard import source
    from perfbench.dashboard.app import create_app
    from perfbench.dashboard.data import RunFilter, points_frame, scoped_runs

    create_app(dashboard_store["store"])
    evil = "x' OR '1'='1"
    with source.open_store() as st:
        assert points_frame(st, [evil, "'; DROP TABLE runs; --"]).empty
        assert RunFilter(values={"model": [evil]}).apply(scoped_runs(st)).empty
        assert len(scoped_runs(st)) > 0  # still there


@pytest.mark.parametrize("kind", ["missing", "corrupt", "newer", "foreign"])
def test_unreadable_store_gives_a_clear_page(kind, tmp_path, dashboard_store, dash_browser):
    from perfbench.dashboard.app import create_app

    path = tmp_path / "perfbench.sqlite"
    expect = {"missing": "no results store", "corrupt": "corrupt", "newer": "newer perfbench",
              "foreign": "not a perfbench results store"}[kind]
    if kind == "corrupt":
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    elif kind == "newer":
        path = _copy_store(dashboard_store["store"], tmp_path / "newer")
        with sqlite3.connect(path) as c:
            c.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    elif kind == "foreign":
        with sqlite3.connect(path) as c:
            c.execute("CREATE TABLE notes (x TEXT)")
    before = path.read_bytes() if path.exists() else None
    dash_browser.start_server(create_app(path))
    dash_browser.wait_for_element(".pb-error", timeout=10)
    assert expect in dash_browser.find_element(".pb-error").text
    assert dash_browser.get_logs() == []
    assert (path.read_bytes() if path.exists() else None) == before


def test_hostile_names_are_text_in_the_browser(dashboard_store, tmp_path, dash_browser):
    """A run name holding HTML and markup shows as written and runs nothing."""
    from perfbench.dashboard.app import create_app

    store = _copy_store(dashboard_store["store"], tmp_path / "hostile")
    run = dashboard_store["compare"][0]
    with sqlite3.connect(store) as c:
        c.execute("UPDATE runs SET name=? WHERE run_id=?", (HOSTILE, run))
    dash_browser.start_server(create_app(store))
    dash_browser.wait_for_element("#runs-table", timeout=10)
    dash_browser.wait_for_contains_text("#runs-table", "<img src=x", timeout=10)
    assert dash_browser.driver.find_elements("css selector", "#runs-table img") == []
    assert dash_browser.get_logs() == []


# -- perfbench report ----------------------------------------------------------------------------------

def test_report_is_one_self_contained_file(dashboard_store, tmp_path):
    store = _copy_store(dashboard_store["store"], tmp_path / "rep")
    with sqlite3.connect(store) as c:
        c.execute("UPDATE runs SET name=? WHERE run_id=?", (HOSTILE, dashboard_store["h100_run"]))
    out = tmp_path / "report.html"
    r = run_cli("report", dashboard_store["h100_run"], dashboard_store["compare"][0], "tiny-grid",
                "--store", str(store), "--out", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert html.count("Plotly.newPlot") >= 3
    assert "<script src=" not in html and "src=\"http" not in html  # nothing fetched from the network
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "perfbench run" in html  # the command that reproduces each run
    again = run_cli("report", dashboard_store["h100_run"], "--store", str(store), "--out", str(out))
    assert again.returncode == 0, again.stderr  # our own report may be replaced


def test_report_refuses_what_is_not_ours_and_unknown_names(dashboard_store, tmp_path):
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    r = run_cli("report", dashboard_store["h100_run"], "--store", str(dashboard_store["store"]), "--out", str(foreign))
    assert r.returncode == 2 and "not a perfbench report" in r.stderr
    assert foreign.read_text() == "<html>my notes</html>"
    r = run_cli("report", "no-such-run", "--store", str(dashboard_store["store"]), "--out", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "neither a run nor a sweep" in r.stderr
    assert not (tmp_path / "x.html").exists()


# -- perfbench dashboard: a real server ----------------------------------------------------------------

def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "perfbench", "dashboard", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _get(url: str, deadline_s: float = 60) -> tuple[int, str]:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def test_dashboard_command_serves_on_loopback(dashboard_store):
    port = _free_port()
    proc = _serve("--store", str(dashboard_store["store"]), "--port", str(port))
    try:
        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "perfbench" in body
        status, layout = _get(f"http://127.0.0.1:{port}/_dash-layout")
        assert status == 200 and "refresh-tick" in layout
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in err and "warning" not in err


def test_dashboard_warns_when_exposed_and_checks_port(dashboard_store):
    r = run_cli("dashboard", "--store", str(dashboard_store["store"]), "--port", "70000")
    assert r.returncode == 2 and "--port" in r.stderr
    proc = _serve("--store", str(dashboard_store["store"]), "--host", "0.0.0.0", "--port", str(_free_port()))
    try:
        time.sleep(4)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "anyone who can reach this machine" in err


def test_dashboard_on_a_missing_store_still_serves_and_warns(tmp_path):
    port = _free_port()
    proc = _serve("--store", str(tmp_path / "none.sqlite"), "--port", str(port))
    try:
        status, _ = _get(f"http://127.0.0.1:{port}/")
        assert status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "no results store" in err
    assert not (tmp_path / "none.sqlite").exists()  # read-only: never created


def test_help_stays_light():
    """`perfbench --help` does not import Dash (or torch)."""
    code = ("import sys; from perfbench.cli import app; "
            "print('dash' in sys.modules, 'torch' in sys.modules, 'plotly' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


@pytest.fixture(autouse=True)
def _no_leftover_config():
    yield
    from perfbench.dashboard import source

    source.set_config(None)



def _add_run(store: Path, source_run: str, name: str) -> None:
    from perfbench.store import ResultsStore

    with ResultsStore(store) as st:
        src = st.get_run(source_run)
        rid = st.create_run(name=name, spec=src["spec"], spec_hash=src["spec_hash"], fingerprint=src["fingerprint"],
                            versions=src["versions"], commit=None, device=src["device"])
        p = next(p for p in src["points"] if p["status"] == "ok")
        st.add_point(rid, {k: p[k] for k in ("batch_size", "seq_len", "new_tokens", "latency_median_s", "samples_s")})


@pytest.mark.parametrize("live", [True, False])
def test_runs_written_while_open_appear_with_live_refresh(live, dashboard_store, tmp_path, dash_browser):
    """The app keeps reading while a run writes to the store; refresh off freezes the view."""
    from perfbench.dashboard.app import create_app

    store = _copy_store(dashboard_store["store"], tmp_path / "live")
    dash_browser.start_server(create_app(store, refresh_s=1))
    dash_browser.wait_for_contains_text("#runs-count", "runs match", timeout=10)
    n = int(dash_browser.find_element("#runs-count").text.split()[0].replace(",", ""))
    if not live:
        dash_browser.find_element("#refresh-on input").click()
        time.sleep(1.5)
    _add_run(store, dashboard_store["compare"][0], "written-while-open")
    if live:
        dash_browser.wait_for_contains_text("#runs-count", f"{n + 1:,} runs match", timeout=15)
        dash_browser.wait_for_contains_text("#runs-table", "written-while-open", timeout=15)
    else:
        time.sleep(4)
        assert dash_browser.find_element("#runs-count").text.startswith(f"{n:,} runs")
    assert dash_browser.get_logs() == []


def test_without_the_dashboard_extra_the_command_says_what_to_install(tmp_path):
    code = ("import importlib.abc, sys\n"
            "class Absent(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('dash', 'plotly'):\n"
            "            raise ModuleNotFoundError(name, name=name)\n"
            "sys.meta_path.insert(0, Absent())\n"
            f"sys.argv = ['perfbench', 'dashboard', '--store', {str(tmp_path / 'x.sqlite')!r}]\n"
            "from perfbench.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "perfbench[dashboard]" in r.stderr and "Traceback" not in r.stderr
