"""The Dash app: a shell (navigation, store banner, live-refresh toggle) around Dash's pages.

Pages live one per module in `perfbench.dashboard.pages`; each registers itself with
`dash.register_page` when imported, which Dash allows only once an app with `use_pages=True` exists,
so `create_app` imports them after creating it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from perfbench.dashboard import source

#: Page modules in navigation order (module name under perfbench.dashboard.pages).
PAGES = ("runs", "compare", "roofline", "trace", "sweeps", "history", "serving", "energy")
#: Seconds between live refreshes while refresh is on.
REFRESH_S = 5


_PAGE_CALLBACKS: dict[str, Any] = {}


def _import_pages() -> None:
    """Import the page modules, handing their `dash.callback`s to the app being created.

    Why: Dash moves callbacks declared with `dash.callback` into the first app that serves a
    request and empties its global lists, so a second app in the same process (tests, `perfbench
    report` after a server) would have pages without callbacks. The declarations are kept from the
    first import and put back for every new app."""
    from dash import _callback

    if not _PAGE_CALLBACKS:
        for name in PAGES:
            importlib.import_module(f"perfbench.dashboard.pages.{name}")
        _PAGE_CALLBACKS.update(map=dict(_callback.GLOBAL_CALLBACK_MAP), list=list(_callback.GLOBAL_CALLBACK_LIST),
                               scripts=list(_callback.GLOBAL_INLINE_SCRIPTS))
    _callback.GLOBAL_CALLBACK_MAP.clear()
    _callback.GLOBAL_CALLBACK_MAP.update(_PAGE_CALLBACKS["map"])
    _callback.GLOBAL_CALLBACK_LIST[:] = _PAGE_CALLBACKS["list"]
    _callback.GLOBAL_INLINE_SCRIPTS[:] = _PAGE_CALLBACKS["scripts"]


def create_app(store: str | Path, config: Any = None, refresh_s: float = REFRESH_S):
    """The dashboard over `store` (opened read-only), optionally scoped by a saved dashboard;
    with live refresh on, pages re-read the store every `refresh_s` seconds."""
    import dash
    from dash import Dash, dcc, html

    import plotly.io as pio

    from perfbench.dashboard import style

    source.set_store(store)
    source.set_config(config)
    pio.templates[style.TEMPLATE]  # plotly loads a template lazily (~0.5 s): once here, not in a callback
    app = Dash(__name__, use_pages=True, pages_folder="", assets_folder=str(Path(__file__).with_name("assets")),
               title="perfbench", suppress_callback_exceptions=True, update_title=None)
    _import_pages()
    shown = source.visible_pages(PAGES)
    nav = [dcc.Link(page["name"], href=page["relative_path"], id=f"nav-{page['module'].rsplit('.', 1)[-1]}")
           for page in dash.page_registry.values() if page["module"].rsplit(".", 1)[-1] in shown]
    header = html.Div([
        html.Span("perfbench", className="pb-brand"), *nav,
        dcc.Checklist(id="refresh-on", options=[{"label": " live refresh", "value": "on"}], value=["on"],
                      inline=True, style={"marginLeft": "1rem"}),
        html.Span(f"store: {source.store_path()}", className="pb-store"),
    ], className="pb-header")
    app.layout = html.Div([
        header,
        # refresh-poll fires every refresh_s; refresh-tick (what pages listen to) moves only when
        # the store's files changed, so an idle store costs no page work and a slow page is never
        # starved by a tick arriving before its last answer.
        dcc.Interval(id="refresh-poll", interval=int(refresh_s * 1000), n_intervals=0),
        dcc.Interval(id="refresh-tick", disabled=True, n_intervals=0),
        dcc.Store(id="store-signature"),
        html.Div(dash.page_container, className="pb-page"),
    ])

    @app.callback(dash.Output("refresh-poll", "disabled"), dash.Input("refresh-on", "value"))
    def _refresh(value):
        return "on" not in (value or [])

    @app.callback(dash.Output("refresh-tick", "n_intervals"), dash.Output("store-signature", "data"),
                  dash.Input("refresh-poll", "n_intervals"), dash.State("refresh-tick", "n_intervals"),
                  dash.State("store-signature", "data"), prevent_initial_call=True)
    def _poll(_n, tick, seen):
        now = source.signature()
        if now == seen:
            raise dash.exceptions.PreventUpdate
        return (tick or 0) + (seen is not None), now

    return app
