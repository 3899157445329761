"""One look for every figure: a stable colour per hardware and per backend, units on every axis,
log axes where values span decades, WebGL above a few thousand points.

Why stable colours: the same H100 is the same colour on every page and in every report, so a reader
never re-learns a legend. A value's colour comes from a hash of the value, not from its position.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

from perfbench.textsafe import label

#: Colour-blind-friendly palette (Okabe-Ito without its yellow, unreadable on white; then Tableau's).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#8C564B",
           "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD")
#: Fixed colours for the backends perfbench ships, so they never collide with each other.
BACKEND_COLOURS = {"torch": "#0072B2", "hf-pipeline": "#E69F00", "llama-cpp": "#009E73", "vllm": "#D55E00",
                   "openai-http": "#CC79A7"}
#: Above this many points a scatter uses WebGL (scattergl): SVG slows down past a few thousand.
WEBGL_ABOVE = 5000
VERDICT_COLOURS = {"slower": "#D55E00", "faster": "#009E73", "same": "#7F7F7F", "ambiguous": "#E69F00"}
TEMPLATE = "plotly_white"


def colour(value: Any, kind: str = "hardware") -> str:
    """The colour of a hardware id, backend or any other category: the same everywhere."""
    text = str(value)
    if kind == "backend" and text in BACKEND_COLOURS:
        return BACKEND_COLOURS[text]
    digest = hashlib.sha256(f"{kind}:{text}".encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def colour_map(values: Iterable[Any], kind: str = "hardware") -> dict[str, str]:
    return {str(v): colour(v, kind) for v in values}


def scatter_kind(n_points: int) -> str:
    """`scattergl` above WEBGL_ABOVE points, else `scatter`."""
    return "scattergl" if n_points > WEBGL_ABOVE else "scatter"


def spans_decades(values: Iterable[Any], decades: float = 1.5) -> bool:
    """Whether positive values span more than `decades` powers of ten (then use a log axis)."""
    import numpy as np

    xs = pd_numeric(values)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    return len(xs) >= 2 and float(np.log10(xs.max() / xs.min())) > decades


def pd_numeric(values: Iterable[Any]):
    """Values as a float array, anything that is not a number as NaN (vectorised: 50,000 points)."""
    import numpy as np
    import pandas as pd

    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)


def axis(title: str, unit: str | None, values: Iterable[Any] = (), log: bool | None = None) -> dict[str, Any]:
    """An axis with its unit in the title, log where the values span decades (or when asked)."""
    values = list(values)
    use_log = spans_decades(values) if log is None else log
    out: dict[str, Any] = {"title": {"text": f"{title} ({unit})" if unit else title}}
    if use_log:
        out["type"] = "log"
    return out


_AXIS = {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "ticks": "",
         "automargin": True}
#: A small white template. plotly's own `plotly_white` is deep-copied into every figure (about
#: 10 ms each, and a page draws several per callback); this one costs well under a millisecond.
SMALL_TEMPLATE = {"layout": {"paper_bgcolor": "white", "plot_bgcolor": "white", "font": {"color": "#2a3f5f"},
                             "colorway": list(PALETTE), "hovermode": "closest", "xaxis": _AXIS, "yaxis": _AXIS}}


def figure(title: str = "", **layout: Any):
    """An empty figure in the dashboard's template, with a safe title."""
    import plotly.graph_objects as go

    return go.Figure(layout={"template": SMALL_TEMPLATE, "title": {"text": label(title)},
                             "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                             "legend": {"orientation": "h", "y": -0.2}, **layout})


def empty_figure(message: str):
    """A figure that says why it is empty, instead of blank axes."""
    fig = figure()
    fig.add_annotation(text=label(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
