"""History page (placeholder while it is being built)."""

from __future__ import annotations

from typing import Any

import dash
from dash import html

from perfbench.dashboard.components import page_layout

PAGE = "history"


@page_layout(PAGE)
def layout(**query: Any) -> Any:
    return html.Div("History: being built")


dash.register_page(__name__, path="/history", name="History", order=5, title="perfbench · history", layout=layout)


def report_figures(st: Any, run_ids: list[str], sweep_ids: list[str]) -> list[tuple[str, Any]]:
    return []
