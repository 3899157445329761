"""The runs page: filters, server-side paging, plots of selected runs, URL state; callbacks and browser."""

from __future__ import annotations

import urllib.parse

import pytest

pytest.importorskip("dash", reason="the dashboard extra: pip install 'perfbench[dashboard]' (scripts/setup.sh installs it)")

N_FILTERS = 6  # model backend hardware phase dtype status


@pytest.fixture
def app(dashboard_store):
    from perfbench.dashboard.app import create_app

    return create_app(dashboard_store["store"])


def _table(phase=(), text="", page=0, sort_by=None, selected=None):
    from perfbench.dashboard.pages import runs

    values = [[], [], [], list(phase), [], []]
    return runs.update_table(*values, "", "", text, page, sort_by or [], selected or [], 0)


def test_filters_page_and_sort_server_side(app, dashboard_store):
    from perfbench.dashboard.pages.runs import PAGE_SIZE

    data, pages, count, query, _ = _table()
    total = int(count.split()[0].replace(",", ""))
    assert total > PAGE_SIZE and pages == -(-total // PAGE_SIZE) and len(data) == PAGE_SIZE
    serve, _, count_serve, q, _ = _table(phase=["serve"])
    assert count_serve.startswith("1 runs") and serve[0]["id"] == dashboard_store["serving_run"]
    assert urllib.parse.parse_qs(q[1:])["phase"] == ["serve"]
    last, _, _, q, _ = _table(page=pages - 1)
    assert 0 < len(last) <= PAGE_SIZE and "page=" in q
    asc, *_ = _table(sort_by=[{"column_id": "created_at", "direction": "asc"}])
    assert asc[0]["created_at"] <= asc[1]["created_at"]
    evil, *_ = _table(sort_by=[{"column_id": "x; DROP TABLE runs", "direction": "asc"}])
    assert len(evil) == PAGE_SIZE  # an unknown column is ignored, never used
    assert _table(text="c0ffee")[2].startswith("0 runs")  # names and ids, not commits
    assert _table(text="llama-1b-prefill-h100")[0][0]["id"] == dashboard_store["h100_run"]
    rows, *_, ticked = _table(text="llama-1b-prefill-h100", selected=[dashboard_store["h100_run"]])
    assert ticked == [0]  # a selection from the URL shows ticked


def test_selection_survives_paging(app):
    from dash.exceptions import PreventUpdate

    from perfbench.dashboard.pages.runs import remember_selection

    page2 = [{"id": "c"}, {"id": "d"}]
    assert remember_selection(["d"], page2, ["a"]) == ["a", "d"]  # "a" was ticked on page 1
    assert remember_selection([], page2, ["a", "d"]) == ["a"]      # unticking "d" drops it
    with pytest.raises(PreventUpdate):
        remember_selection(["d"], page2, ["a", "d"])               # nothing changed: no loop


def test_selected_runs_plot_latency_tokens_and_samples(app, dashboard_store):
    from perfbench.dashboard.pages import runs

    empty = runs.plot_selected([], 0)
    assert all(len(f.data) == 0 for f in empty[:3]) and empty[3] is None
    lat, tok, box, ev = runs.plot_selected([dashboard_store["h100_run"]], 0)
    line = [t for t in lat.data if t.mode == "lines+markers"][0]
    assert list(line.x) == [1, 16, 64] and line.y[0] == pytest.approx(0.019, rel=0.3)
    assert lat.layout.xaxis.type == "log" and "(s)" in lat.layout.yaxis.title.text
    assert "tokens/s" in tok.layout.yaxis.title.text
    assert len(box.data) == 1 and sorted(set(box.data[0].x)) == ["b1", "b16", "b64"]  # one box trace per run
    assert "perfbench run" in str(ev.to_plotly_json())


def test_failed_points_are_marked(app, dashboard_store):
    from perfbench.dashboard import source
    from perfbench.dashboard.data import points_frame, scoped_runs
    from perfbench.dashboard.pages.runs import _POINT_FIELDS, batch_figure

    with source.open_store() as st:
        runs = scoped_runs(st)
        failed = runs[runs["points_failed"] > 0]
        pts = points_frame(st, list(failed["run_id"]), _POINT_FIELDS)
    fig = batch_figure(failed, pts)
    marks = [t for t in fig.data if t.marker is not None and t.marker.symbol == "x"]
    assert marks and all(t.text for t in marks)


def test_runs_page_in_a_browser(app, dashboard_store, dash_browser):
    dash_browser.start_server(app)
    dash_browser.wait_for_contains_text("#runs-count", "runs match", timeout=15)
    total = dash_browser.find_element("#runs-count").text
    # a filter narrows the table and lands in the URL
    dash_browser.select_dcc_dropdown("#runs-f-phase", value="serve")
    dash_browser.wait_for_contains_text("#runs-count", "1 runs match", timeout=10)
    dash_browser.wait_for_contains_text("#runs-table", "serving-llama-cpp-tiny", timeout=10)
    assert "phase=serve" in dash_browser.driver.current_url
    # selecting a run draws it
    dash_browser.find_element("#runs-table input[type=checkbox]").click()
    dash_browser.wait_for_element("#runs-batch .scatterlayer .trace", timeout=10)
    assert f"runs={dashboard_store['serving_run']}" in dash_browser.driver.current_url
    assert dash_browser.get_logs() == []
    # the URL restores the view
    h100 = dashboard_store["h100_run"]
    dash_browser.driver.get(dash_browser.server_url + f"/?phase=prefill&runs={h100}&q=h100")
    dash_browser.wait_for_contains_text("#runs-count", "1 runs match", timeout=15)
    dash_browser.wait_for_element("#runs-batch .scatterlayer .trace", timeout=10)
    assert "prefill" in dash_browser.find_element("#runs-f-phase").text
    assert dash_browser.find_element("#runs-table input[type=checkbox]").is_selected()
    assert dash_browser.find_element("#runs-count").text != total
    assert dash_browser.get_logs() == []


def test_a_clicked_point_shows_its_evidence(app, dashboard_store):
    from dash.exceptions import PreventUpdate

    from perfbench.dashboard.pages import runs

    lat, *_ = runs.plot_selected([dashboard_store["h100_run"]], 0)
    line = next(t for t in lat.data if t.mode == "lines+markers")
    click = {"points": [{"customdata": list(line.customdata[1])}]}
    text = str(runs.point_evidence(click).to_plotly_json())
    assert "batch 16" in text and "--set batch_size=16" in text
    for bad in (None, {"points": [{}]}, {"points": [{"customdata": [0, 5, "x"]}]}):
        with pytest.raises(PreventUpdate):
            runs.point_evidence(bad)
