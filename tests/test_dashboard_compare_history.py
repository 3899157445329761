"""Dashboard: the Compare page (the gate's statistics between two sets of runs) and the History page
(a metric over commits with its change points), through their callbacks and in a real browser."""

from __future__ import annotations

import time

import pytest

from tests.dashboard_store import component_text

pytest.importorskip("dash")
pytest.importorskip("scipy")
pytest.importorskip("ruptures")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.dashboard_store import build_store

    return build_store(tmp_path_factory.mktemp("dash-compare-history"))


@pytest.fixture(scope="module")
def pages(built):
    """The app over the shared store (pages register themselves once an app exists)."""
    from perfbench.dashboard.app import create_app

    app = create_app(built["store"])
    from perfbench.dashboard.pages import compare, history

    return app, compare, history


@pytest.fixture
def gate_store(tmp_path, pages):
    """A synthetic, deterministic history with gate roles: 10 runs on main, a 10% step at commit s00
    (8 runs), one `base` run of another binary, then a slower commit the gate suspected (candidate)
    and re-measured (confirm)."""
    from perfbench.dashboard import source
    from perfbench.store import ResultsStore
    from tests.gate_helpers import add_run

    path = tmp_path / "gate.sqlite"
    main = {"role": "candidate", "branch": "main"}
    with ResultsStore(path) as st:
        for i in range(18):
            add_run(st, level=1e-3 * (1.1 if i >= 10 else 1.0), seed=i, batches=(1,),
                    subject={**main, "commit": f"c{i:02d}" if i < 10 else f"s{i - 10:02d}"})
            time.sleep(0.002)
        add_run(st, level=1.5e-3, seed=50, batches=(1,), subject={"role": "base", "commit": "other"})
        slow = [add_run(st, level=1.4e-3, seed=60 + k, batches=(1,), subject={**main, "role": role, "commit": "c99"})
                for k, role in enumerate(("candidate", "confirm"))]
    old = source.store_path()
    source.set_store(path)
    yield {"path": path, "suspect": slow[0], "confirm": slow[1]}
    source.set_store(old)


_texts = component_text  # tests/dashboard_store.py


# -- Compare: callbacks -----------------------------------------------------------------------------


def test_compare_two_runs_gives_the_gates_verdicts_geomean_and_command(built, pages):
    _, compare, _ = pages
    base, cand = built["compare"]
    fig, summary, rows, query = compare.update([base], [cand], "latency_median_s", 5, [], 0)
    assert {r["point"] for r in rows} == {"b1-s64-n0", "b2-s64-n0", "b4-s64-n0"}
    assert all(r["verdict"] in ("same", "faster", "slower", "ambiguous") for r in rows)
    text = _texts(summary)
    assert "geomean ratio" in text and f"perfbench compare {base} {cand} --metric latency_median_s" in text
    assert query == f"?base={base}&cand={cand}"
    verdict_traces = [t for t in fig.data if t.name in ("same", "faster", "slower", "ambiguous")]
    assert verdict_traces and all(t.error_x.array is not None for t in verdict_traces)
    assert fig.data[-1].name == "geomean" and "(×)" in fig.layout.xaxis.title.text
    # another metric is another comparison, and the URL says so
    fig2, _, rows2, query2 = compare.update([base], [cand], "tokens_per_s", 10, ["paired"], 0)
    assert query2.endswith("&metric=tokens_per_s&threshold=10.0&paired=1")
    assert "higher is better" in fig2.layout.title.text and rows2[0]["min_effect"].startswith("10.0%")


def test_compare_across_hardware_is_a_plain_comparison_and_says_what_was_left_out(built, pages):
    _, compare, _ = pages
    fig, summary, rows, _ = compare.update([built["compare"][0]], [built["h100_run"]], "latency_median_s", 5, [], 0)
    text = _texts(summary)
    assert rows == [] and "plain comparison" in text and "left out (only in base)" in text
    assert "No point is measured on both sides" in fig.layout.annotations[0].text


def test_compare_bad_input_is_a_message_not_a_traceback(built, pages):
    _, compare, _ = pages
    fig, summary, rows, _ = compare.update([built["compare"][0]], ["no-such-run"], "latency_median_s", 5, [], 0)
    assert rows == [] and "no-such-run" in _texts(summary) and fig.layout.annotations
    fig, summary, rows, query = compare.update([], None, "latency_median_s", None, None, 0)
    assert rows == [] and "Pick base runs" in _texts(summary) and query == "?"
    # a hostile URL: bounded, unknown metric falls back, SQL never sees it but as a bound value
    layout = compare.layout(base="x' OR 1=1 --," * 30, metric="<script>", threshold="nan")
    assert "latency_median_s" in str(layout)


def test_compare_evidence_and_search(built, pages):
    _, compare, _ = pages
    base, cand = built["compare"]
    _, _, rows, _ = compare.update([base], [cand], "latency_median_s", 5, [], 0)
    ev = compare.show_evidence({"row": 0, "column": 0}, rows)
    text = str(ev)
    assert f"Evidence: run {base}" in text and f"Evidence: run {cand}" in text and "perfbench run" in text
    from dash.exceptions import PreventUpdate

    with pytest.raises(PreventUpdate):
        compare.show_evidence(None, rows)
    from perfbench.dashboard.data import scoped_runs
    from perfbench.dashboard.source import open_store

    with open_store() as st:
        opts = compare.run_options(scoped_runs(st), [base], "h100")
    assert opts[0]["value"] == base and any(o["value"] == built["h100_run"] for o in opts)


def test_compare_report_figures(built, pages):
    _, compare, _ = pages
    from perfbench.store import ResultsStore

    with ResultsStore(built["store"], create=False) as st:
        figs = compare.report_figures(st, list(built["compare"]), [])
        assert len(figs) == 1 and figs[0][1].data
        assert compare.report_figures(st, [built["compare"][0]], []) == []
        assert compare.report_figures(st, built["cpu_runs"] + [built["h100_run"]], []) == []
        assert len(compare.report_figures(st, built["history"]["runs"], [])) == 1  # newest commit vs the rest


# -- History: callbacks -----------------------------------------------------------------------------


def test_history_draws_the_series_of_one_benchmark_on_one_machine(built, pages):
    _, _, history = pages
    h = built["history"]
    fig, summary, query = history.update(h["name"], h["hardware_id"], h["spec_hash"], "main", "latency_median_s",
                                         "b1-s64-n0", 4, 0)
    assert f"{len(built['history']['runs'])} run(s) drawn" in _texts(summary)
    names = [t.name for t in fig.data]
    assert any("rolling median" in n for n in names) and "run" in names
    assert "(s)" in fig.layout.yaxis.title.text and "commit" in fig.layout.xaxis.title.text
    assert list(fig.layout.xaxis.ticktext)[8] == h["step_commit"][:7]
    assert query == (f"?name={h['name']}&hardware={h['hardware_id']}&spec={h['spec_hash']}&branch=main"
                     "&point=b1-s64-n0&minseg=4")


def test_history_finds_the_step_at_its_commit(gate_store, pages):
    _, _, history = pages
    fig, summary, _ = history.update("synth", "hw-test", None, "main", "latency_median_s", "b1-s16-n0", 5, 0)
    text = _texts(summary)
    assert "step at commit s00" in text and "+10.0%" in text
    assert any(a.text.startswith("step at s00: +10.0%") for a in fig.layout.annotations)
    assert "level between steps" in {t.name for t in fig.data}


def test_history_click_compares_a_run_with_the_runs_before_it(built, pages):
    _, _, history = pages
    h = built["history"]
    out = history.compare_clicked({"points": [{"customdata": ["shown", "x", "", "", "", h["runs"][8]]}]}, "latency_median_s", "b1-s64-n0")
    text = _texts(out)
    assert "against the 5 run(s) before it" in text and f"perfbench compare {','.join(h['runs'][3:8])}" in text
    from dash.exceptions import PreventUpdate

    with pytest.raises(PreventUpdate):
        history.compare_clicked({"points": [{}]}, "latency_median_s", "b1-s64-n0")


def test_history_pickers_narrow_to_what_was_measured(built, pages):
    _, _, history = pages
    h = built["history"]
    hw_opts, hw, spec_opts, spec, branch_opts, branch = history.narrow(h["name"], "nonsense", "nonsense", "x")
    assert hw == h["hardware_id"] and spec == h["spec_hash"] and branch is None
    assert {"label": "main", "value": "main"} in branch_opts and spec_opts[0]["value"] == history.ALL_SPECS
    opts, point = history.points_of(h["hardware_id"], h["spec_hash"], "main", h["name"], "b4-s64-n0")
    assert point == "b4-s64-n0" and [o["value"] for o in opts] == ["b1-s64-n0", "b2-s64-n0", "b4-s64-n0"]


def test_history_gate_roles_mark_suspects_and_confirmations(gate_store, pages):
    _, _, history = pages
    fig, summary, _ = history.update("synth", "hw-test", None, None, "latency_median_s", "b1-s16-n0", 5, 0)
    names = {t.name for t in fig.data}
    assert "gate suspected slower" in names and "confirm run: slower" in names
    text = _texts(summary)
    assert "20 run(s) drawn" in text  # 18 + suspect + confirm; the base run of another binary is not history
    assert f"gate confirmation run {gate_store['confirm']}: slower" in text
    out = history.compare_clicked({"points": [{"customdata": [gate_store["suspect"]]}]}, "latency_median_s",
                                  "b1-s16-n0")
    assert "slower" in _texts(out)


def test_history_without_subjects_shows_the_command_that_makes_one(tmp_path, pages):
    _, _, history = pages
    from perfbench.dashboard import source
    from perfbench.store import ResultsStore
    from tests.gate_helpers import add_run

    path = tmp_path / "plain.sqlite"
    with ResultsStore(path) as st:
        add_run(st)
    old = source.store_path()
    source.set_store(path)
    try:
        text = _texts(history.layout())
    finally:
        source.set_store(old)
    assert "No runs with a subject" in text and "perfbench gate" in text


def test_history_report_figures(built, pages):
    _, _, history = pages
    from perfbench.store import ResultsStore

    with ResultsStore(built["store"], create=False) as st:
        figs = history.report_figures(st, built["history"]["runs"][-1:], [])
        assert [t for t, _ in figs][0].startswith(f"History: {built['history']['name']} b1-s64-n0")
        assert history.report_figures(st, ["no-such-run"], []) == []


# -- in a browser -----------------------------------------------------------------------------------


def _graph_title(duo, graph_id: str, expect: str = "", timeout: float = 10) -> str:
    """The plotted figure's title, once it holds `expect` (plotly draws after Dash's callback)."""
    title, end = "", time.monotonic() + timeout
    while time.monotonic() < end:
        title = duo.driver.execute_script(
            f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
            "return g && g.layout && g.layout.title ? g.layout.title.text : '';")
        if expect in (title or "") and title:
            break
        time.sleep(0.1)
    return title or ""


def _choose(duo, selector: str, value: str) -> None:
    """Pick a dropdown option, again if the menu was not ready (it re-renders as callbacks land)."""
    for _ in range(5):
        duo.select_dcc_dropdown(selector, value=value)
        time.sleep(0.3)
        if value in duo.find_element(selector).text:
            return
    raise AssertionError(f"could not pick {value} in {selector}: shows {duo.find_element(selector).text!r}")


def test_compare_page_in_a_browser(built, pages, dash_browser):
    app, _, _ = pages
    base, cand = built["compare"]
    dash_browser.start_server(app)
    dash_browser.wait_for_page(f"{dash_browser.server_url}/compare?base={base}&cand={cand}")
    dash_browser.wait_for_contains_text("#compare-summary", "geomean ratio", timeout=20)
    dash_browser.wait_for_contains_text("#compare-table", "b1-s64-n0", timeout=10)
    assert "latency_median_s" in _graph_title(dash_browser, "compare-forest", "latency_median_s")
    # another metric changes the figure, and the address bar follows
    _choose(dash_browser, "#compare-metric", "tokens_per_s")
    dash_browser.wait_for_contains_text("#compare-summary", "--metric tokens_per_s", timeout=20)
    assert "tokens_per_s" in _graph_title(dash_browser, "compare-forest", "tokens_per_s")
    assert "metric=tokens_per_s" in dash_browser.driver.current_url
    # a row's evidence
    dash_browser.find_element("#compare-table td[data-dash-column='verdict']").click()
    dash_browser.wait_for_contains_text("#compare-evidence", f"Evidence: run {cand}", timeout=10)
    assert dash_browser.get_logs() == []


def test_history_page_in_a_browser(built, pages, dash_browser):
    app, _, _ = pages
    h = built["history"]
    dash_browser.start_server(app)
    dash_browser.wait_for_page(f"{dash_browser.server_url}/history?name={h['name']}&hardware={h['hardware_id']}"
                               f"&branch=main&point=b2-s64-n0&minseg=4")
    dash_browser.wait_for_contains_text("#history-summary", f"{len(built['history']['runs'])} run(s) drawn", timeout=20)
    assert "b2-s64-n0" in _graph_title(dash_browser, "history-series", "b2-s64-n0")
    _choose(dash_browser, "#history-point", "b4-s64-n0")
    assert "b4-s64-n0" in _graph_title(dash_browser, "history-series", "b4-s64-n0")
    assert "point=b4-s64-n0" in dash_browser.driver.current_url
    assert dash_browser.get_logs() == []
