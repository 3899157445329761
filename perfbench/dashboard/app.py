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


def create_app(store: str | Path, config: Any = None):
    """The dashboard over `store` (opened read-only), optionally scoped by a saved dashboard."""
    import dash
    from dash import Dash, dcc, html

    source.set_store(store)
    source.set_config(config)
    app = Dash(__name__, use_pages=True, pages_folder="", assets_folder=str(Path(__file__).with_name("assets")),
               title="perfbench", suppress_callback_exceptions=True, update_title=None)
    for name in PAGES:
        importlib.import_module(f"perfbench.dashboard.pages.{name}")
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
        dcc.Interval(id="refresh-tick", interval=REFRESH_S * 1000, n_intervals=0),
        html.Div(dash.page_container, className="pb-page"),
    ])

    @app.callback(dash.Output("refresh-tick", "disabled"), dash.Input("refresh-on", "value"))
    def _refresh(value):
        return "on" not in (value or [])

    return app
