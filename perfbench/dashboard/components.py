"""Widgets every page shares: error and empty states, the URL mirror, run pickers, evidence.

All text from the store is passed to Dash as plain strings (React escapes them): names from specs
are never markup. Nothing here uses `dangerously_allow_html` or Markdown on stored text.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

import dash
from dash import Input, Output, State, callback, dcc, html

from perfbench.dashboard import source
from perfbench.dashboard.data import repro_command, store_version
from perfbench.dashboard.source import open_store
from perfbench.errors import PerfbenchError
from perfbench.textsafe import plain


def error_panel(message: str, title: str = "The results store cannot be read") -> html.Div:
    """A clear page in place of a traceback: what is wrong and what to do."""
    return html.Div([html.H3(title), html.P(plain(message), className="pb-error-text"),
                     html.P(f"Store: {plain(source.store_path())}", className="pb-muted")],
                    className="pb-error", role="alert")


def empty_state(what: str, command: str | None = None) -> html.Div:
    """`No sweeps in this store yet.` plus the command that produces them."""
    children: list[Any] = [html.P(plain(what))]
    if command:
        children.append(html.P(["Produce them with ", html.Code(command)]))
    return html.Div(children, className="pb-empty")


def page_layout(page: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a page's `layout(**query)`: the saved dashboard's settings for `page` fill in what
    the URL leaves out, and a store that cannot be read (missing, locked, corrupt, newer) or a URL
    naming something absent shows `error_panel`, never a traceback."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**query: Any) -> Any:
            try:
                return fn(**source.page_query(page, query))
            except PerfbenchError as exc:
                return error_panel(str(exc))

        return wrapper

    return decorate


def url_mirror(page: str) -> list[Any]:
    """The store a page's callbacks write their query string into, and its hidden sink.
    Register the client-side mirror once per page module with `urlstate.sync_url(f"{page}-query")`."""
    return [dcc.Store(id=f"{page}-query"), html.Div(id=f"{page}-query-sink", hidden=True)]


def controls(*items: Any) -> html.Div:
    """A row of labelled controls."""
    return html.Div(list(items), className="pb-controls")


def labelled(text: str, control: Any) -> html.Label:
    return html.Label([html.Span(text, className="pb-label"), control], className="pb-field")


def evidence(run: dict[str, Any], point: dict[str, Any] | None = None) -> html.Details:
    """What a number rests on: the run's spec, provenance (hardware, versions, commit, engine) and
    the exact command that measures it again."""
    prov = {"run_id": run.get("run_id"), "hardware_id": run.get("hardware_id"), "device": run.get("device"),
            "commit": run.get("commit"), "created_at": run.get("created_at"), "status": run.get("status"),
            "versions": run.get("versions"), "engine": run.get("engine"), "subject": run.get("subject")}
    cmd = repro_command(run, point, store_flag=str(source.store_path()))
    what = f"run {plain(run.get('run_id'))}" + (f", batch {point['batch_size']}" if point else "")
    return html.Details([
        html.Summary(f"Evidence: {what}"),
        html.P(["Reproduce: ", html.Code(cmd, className="pb-repro")]),
        html.P(["Full record: ", html.Code(f"perfbench results show {run.get('run_id')} --format json "
                                           f"--store {source.store_path()}")]),
        html.H5("Spec"), html.Pre(plain(json.dumps(run.get("spec"), indent=2, default=str))),
        html.H5("Provenance"), html.Pre(plain(json.dumps(prov, indent=2, default=str))),
    ], className="pb-evidence")


def watch_version(page: str) -> None:
    """Register the callback that turns the global refresh tick into `{page}-version` changes."""

    @callback(Output(f"{page}-version", "data"), Input("refresh-tick", "n_intervals"), State(f"{page}-version", "data"))
    def watch(_tick: int | None, current: Any):
        try:
            with open_store() as st:
                new = store_version(st)
        except PerfbenchError as exc:
            new = [str(exc)]
        return dash.no_update if new == current else new
