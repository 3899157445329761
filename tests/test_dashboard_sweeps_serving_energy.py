"""The Sweeps, Serving and Energy pages: their callbacks called directly, their report figures, and
each page in a real headless Chromium (loads with data, no console errors, a selection changes a
figure, a URL with query parameters brings the view back)."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from tests.dashboard_store import build_store

HOSTILE = "<b>bold</b>&<img src=x onerror=alert(1)>"
INVALID_REASON = "send lag p99 25 ms above the 10 ms limit: the client was the bottleneck"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The shared dashboard store, plus an open-loop serving run with an invalid load point and a
    sweep whose parameter and workload names are markup."""
    info = build_store(tmp_path_factory.mktemp("dash-sse"))
    from perfbench.store import ResultsStore

    with ResultsStore(info["store"]) as st:
        info["open_loop_run"] = add_open_loop_run(st, info["serving_run"])
        info["hostile_sweep"] = add_hostile_sweep(st, info["sweeps"][0])
    return info


def add_open_loop_run(st, serving_run: str) -> str:
    """A second serving run, open loop at two rates, the faster one invalid."""
    src = st.get_run(serving_run)
    spec = {**src["spec"], "name": "open-loop"}
    spec["load"] = {**spec["load"], "concurrency": None, "rates_rps": [2.0, 50.0]}
    run_id = st.create_run(name="open-loop", spec=spec, spec_hash="openloop", fingerprint={"hardware_id": "srv-b"},
                           versions={}, commit=None, device="cpu")
    for rate, valid in ((2.0, True), (50.0, False)):
        st.add_point(run_id, {
            "batch_size": 0, "seq_len": 0, "new_tokens": 16, "load_point": f"r{rate:g}", "target_rate_rps": rate,
            "achieved_rate_rps": rate * (1 if valid else 0.6), "concurrency": None, "n_requests": 8,
            "ttft_p50_s": 0.01 * rate, "ttft_p90_s": 0.02 * rate, "ttft_p99_s": 0.03 * rate,
            "tpot_p50_s": 0.001, "tpot_p90_s": 0.002, "tpot_p99_s": 0.003, "itl_p50_s": 0.001, "itl_p90_s": 0.002,
            "itl_p99_s": 0.004, "e2e_p50_s": 0.1, "e2e_p90_s": 0.2, "e2e_p99_s": 0.3, "requests_per_s": rate * 0.9,
            "output_tokens_per_s": rate * 14, "goodput_rps": rate * 0.8, "latency_median_s": 0.1,
            "point_valid": valid, "invalid_reason": None if valid else INVALID_REASON})
    st.finish_run(run_id, "completed")
    return run_id


def add_hostile_sweep(st, sweep_id: str) -> str:
    """A copy of a stored sweep renamed to markup (its name and workload are data, not HTML)."""
    row = [dict(r) for r in st.query("SELECT * FROM sweeps WHERE sweep_id=?", (sweep_id,))][0]
    spec = json.loads(row["spec_json"])
    spec["workload"]["name"] = HOSTILE
    row.update(sweep_id="hostile-sweep", name=HOSTILE, spec_json=json.dumps(spec), status="completed")
    trials = [dict(r) for r in st.query("SELECT * FROM sweep_trials WHERE sweep_id=?", (sweep_id,))]
    with st.transaction("copy a sweep") as c:
        c.execute(f"INSERT INTO sweeps({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values()))
        for t in trials:
            t["sweep_id"] = "hostile-sweep"
            c.execute(f"INSERT INTO sweep_trials({','.join(t)}) VALUES ({','.join('?' * len(t))})", list(t.values()))
    return "hostile-sweep"


@pytest.fixture(scope="module")
def app(built):
    from perfbench.dashboard.app import create_app

    return create_app(built["store"])


def _json(fig) -> str:
    return fig.to_json()


# -- sweeps --------------------------------------------------------------------------------------


def test_sweeps_callbacks(built, app):
    from perfbench.dashboard.pages import sweeps
    from perfbench.dashboard.source import open_store

    grid, killed = built["sweeps"][0], built["sweeps"][2]
    with open_store() as st:
        version = sweeps.stamp(st, grid, killed)
    summary, land, par, imp, _evidence, query = sweeps.update(version, "seq_len", "batch_size", "contour", grid, killed)
    assert [t.type for t in land.data][0] == "contour" and "seq_len" in land.layout.xaxis.title.text
    assert "tokens/s" in land.data[0].colorbar.title.text
    assert any(t.name == "peak" for t in land.data)
    assert par.data[0].type == "parcoords" and par.data[0].dimensions[-1].label == "marked"
    assert imp.data[0].type == "bar" and "fraction" in imp.layout.yaxis.title.text
    assert "tiny-grid" in str(summary) and "peak" in str(summary)
    assert dict(urllib.parse.parse_qsl(query[1:])) == {"sweep": grid, "x": "seq_len", "y": "batch_size",
                                                       "view": "contour", "vs": killed}
    retune, notes = sweeps.update_retune(version, grid, killed)
    assert [t.type for t in retune.data] == ["bar", "bar"] and "re-tuning gain" in retune.layout.title.text
    assert "same hardware" in str(notes)
    # a heatmap of the same sweep; live refresh: an unchanged sweep gives no new stamp
    _, heat, *_ = sweeps.update(version, "batch_size", "seq_len", "heatmap", grid, None)
    assert heat.data[0].type == "heatmap"
    import dash

    assert sweeps.watch(grid, killed, 5, version) is dash.no_update


def test_sweeps_escape_stored_names(built, app):
    from perfbench.dashboard.pages import sweeps

    summary, land, par, imp, _e, _q = sweeps.update(None, "batch_size", "seq_len", "heatmap", built["hostile_sweep"], None)
    assert HOSTILE in str(summary)  # Dash components get plain strings: React escapes them
    for fig in (land, par, imp):
        assert "<b>" not in _json(fig) and "<img" not in _json(fig)


def test_sweeps_layout_empty_and_unknown(built, app, tmp_path):
    from perfbench.dashboard import source
    from perfbench.dashboard.pages import sweeps
    from perfbench.store import ResultsStore

    assert "pb-error" in str(sweeps.layout(sweep="no-such-sweep"))
    empty = tmp_path / "empty.sqlite"
    ResultsStore(empty).close()
    source.set_store(empty)
    try:
        out = str(sweeps.layout())
        assert "No sweeps" in out and "perfbench sweep run workloads/sweeps/tiny-grid.yaml" in out
    finally:
        source.set_store(built["store"])


def test_sweeps_report_figures(built, app):
    from perfbench.dashboard.pages import sweeps
    from perfbench.dashboard.source import open_store

    with open_store() as st:
        figs = sweeps.report_figures(st, [], [built["sweeps"][0], built["sweeps"][2]])
    titles = [t for t, _ in figs]
    assert len(titles) == 7 and titles[-1].startswith("Re-tuning gain")


# -- serving -------------------------------------------------------------------------------------


def test_serving_callbacks(built, app):
    from perfbench.dashboard.pages import serving

    runs = [built["serving_run"], built["open_loop_run"]]
    lat, thr, invalid, _evidence, query = serving.update(runs, "tpot", "concurrency", None)
    assert "TPOT" in lat.layout.title.text and lat.layout.yaxis.title.text.endswith("(s)")
    assert "requests" in lat.layout.xaxis.title.text
    assert INVALID_REASON in str(invalid)
    assert any(t.name == "invalid load point" for t in lat.data + thr.data)
    assert dict(urllib.parse.parse_qsl(query[1:])) == {"runs": ",".join(runs), "metric": "tpot", "load": "concurrency"}
    # the SLO from the spec (load.slo.tpot_ms) is drawn; open loop plots against the achieved rate
    assert lat.layout.shapes and lat.layout.shapes[0].y0 == pytest.approx(0.1)
    lat2, *_ = serving.update([built["open_loop_run"]], "ttft", "auto", None)
    assert "requests/s" in lat2.layout.xaxis.title.text
    assert [v for t in lat2.data if t.name == "invalid load point" for v in t.x] == [30.0]


def test_serving_report_and_empty(built, app):
    from perfbench.dashboard.pages import serving
    from perfbench.dashboard.source import open_store

    with open_store() as st:
        assert len(serving.report_figures(st, [built["serving_run"]], [])) == 3
        assert serving.report_figures(st, built["cpu_runs"], []) == []
    msg, *_ = serving.update([], "ttft", "auto", None)
    assert "Pick serving runs" in msg.layout.annotations[0].text


# -- energy --------------------------------------------------------------------------------------


def test_energy_callbacks(built, app):
    from perfbench.dashboard.pages import energy

    lead, per_token, power, best, rows, query = energy.update([], "hardware", None, None, ["v1"], None, None)
    assert "J/token" in lead.layout.yaxis.title.text and "(s)" in lead.layout.xaxis.title.text
    assert "J/token" in per_token.layout.yaxis.title.text and "(W)" in power.layout.yaxis.title.text
    assert rows[0]["rank"] == 1 and query == "?"
    assert str(rows[0]["hardware_name"]) in str(best)  # the best is the table's first row
    names = {t.name for t in lead.data}
    # the sliders are log10: a 1 ns deadline leaves nothing; the budget's slider at its top is no limit
    lead2, _, _, best2, rows2, query2 = energy.update([], "backend", -9, 20, ["v1"], 0, 20)
    assert "No configuration meets" in str(best2) and rows2 == [] and "deadline_s=1e-09" in query2
    assert {t.name for t in lead2.data} != names and "colour=backend" in query2 and "budget_j" not in query2
    # a deadline between the H100's batches picks a smaller batch
    from perfbench.store import ResultsStore

    with ResultsStore(built["store"], create=False) as st:  # not from the top-10 table: CPU runs may fill it
        h100 = sorted(p["latency_median_s"] for p in st.get_run(built["h100_run"])["points"])
    mid = (h100[0] * h100[1]) ** 0.5
    *_, best3, rows3, _ = energy.update([], "hardware", __import__("math").log10(mid), 20, ["v1"], 0, 20)
    assert rows3 and all(r["latency_median_s"] <= mid * 1.01 for r in rows3) and "Best under latency ≤" in str(best3)


def test_energy_missing_notes_and_report(built, app):
    from perfbench.dashboard.pages import energy
    from perfbench.dashboard.source import open_store

    page = str(energy.layout())
    assert "energy: unavailable" in page and "measure.energy" in page
    with open_store() as st:
        figs = energy.report_figures(st, built["energy_runs"] + [built["h100_run"]], [])
        assert [t for t, _ in figs][0] == "Energy per token against latency"
        assert energy.report_figures(st, [built["serving_run"]], []) == []


def test_energy_limits_from_sliders():
    from perfbench.dashboard.pages import energy

    rng = energy.slider_range(__import__("pandas").Series([0.001, 0.1]))
    assert energy.limit_of(rng[1], rng[1]) is None
    assert energy.limit_of(-2, rng[1]) == 0.01
    assert energy.slider_value(0.01, rng) == pytest.approx(-2)
    assert energy.slider_value(1e9, rng) == rng[1]


# -- in a browser --------------------------------------------------------------------------------


def _traces(duo, graph_id: str) -> list[dict]:
    return duo.driver.execute_script(
        f"var g = document.querySelector('#{graph_id} .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => ({type: t.type, name: t.name || ''})) : [];")


def _layout_title(duo, graph_id: str) -> str:
    return duo.driver.execute_script(
        f"var g = document.querySelector('#{graph_id} .js-plotly-plot');"
        "return g && g.layout && g.layout.title ? (g.layout.title.text || '') : '';")


def _wait(cond, timeout: float = 10.0):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def test_sweeps_page_in_browser(built, app, dash_browser):
    grid, killed = built["sweeps"][0], built["sweeps"][2]
    dash_browser.start_server(app)
    dash_browser.driver.get(f"{dash_browser.server_url}/sweeps?sweep={grid}&x=seq_len&y=batch_size&view=contour&vs={killed}")
    _wait(lambda: [t["type"] for t in _traces(dash_browser, "sweeps-landscape")][:1] == ["contour"])
    assert "seq_len" in _layout_title(dash_browser, "sweeps-landscape")
    _wait(lambda: _traces(dash_browser, "sweeps-parallel"))
    _wait(lambda: "re-tuning gain" in _layout_title(dash_browser, "sweeps-retune"))
    dash_browser.find_element("#sweeps-view input[value='heatmap']").click()
    _wait(lambda: [t["type"] for t in _traces(dash_browser, "sweeps-landscape")][:1] == ["heatmap"])
    _wait(lambda: "view=" not in dash_browser.driver.current_url and "x=seq_len" in dash_browser.driver.current_url)
    assert dash_browser.get_logs() == []


def test_serving_page_in_browser(built, app, dash_browser):
    runs = f"{built['serving_run']},{built['open_loop_run']}"
    dash_browser.start_server(app)
    dash_browser.driver.get(f"{dash_browser.server_url}/serving?runs={runs}&metric=tpot")
    _wait(lambda: "TPOT" in _layout_title(dash_browser, "serving-latency"))
    dash_browser.wait_for_contains_text("#serving-invalid", INVALID_REASON)
    assert any(t["name"] == "invalid load point" for t in _traces(dash_browser, "serving-latency"))
    dash_browser.find_element("#serving-metric input[value='e2e']").click()
    _wait(lambda: "E2E" in _layout_title(dash_browser, "serving-latency"))
    _wait(lambda: "metric=e2e" in dash_browser.driver.current_url)
    assert dash_browser.get_logs() == []


def test_energy_page_in_browser(built, app, dash_browser):
    dash_browser.start_server(app)
    dash_browser.driver.get(f"{dash_browser.server_url}/energy?deadline_s=0.02&budget_j=0.01")
    dash_browser.wait_for_contains_text("#energy-best", "latency ≤ 0.02 s")
    dash_browser.wait_for_contains_text("#energy-missing", "energy: unavailable")
    before = {t["name"] for t in _traces(dash_browser, "energy-leaderboard")}
    dash_browser.find_element("#energy-colour input[value='backend']").click()
    _wait(lambda: {t["name"] for t in _traces(dash_browser, "energy-leaderboard")} - before)
    _wait(lambda: "colour=backend" in dash_browser.driver.current_url and "deadline_s=0.02" in dash_browser.driver.current_url)
    assert dash_browser.get_logs() == []
