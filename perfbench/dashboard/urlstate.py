"""Filters and selections in the URL, so a view can be pasted into an issue and comes back whole.

A page's `layout(**query)` receives the query string as keyword arguments (Dash's pages mechanism)
and reads its state through these helpers; its callbacks write the state back with
`query_string()` into a `dcc.Store` that `sync_url` mirrors into the address bar with
`history.replaceState` (no page reload, no re-render).

URL values are hostile input: every list and string is bounded, control characters are dropped,
and numbers are range-checked. They reach SQL only as bound parameters (perfbench.dashboard.data).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

MAX_VALUE_CHARS = 200
MAX_ITEMS = 200
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def text(query: dict[str, Any], key: str, default: str | None = None,
         allowed: tuple[str, ...] | None = None) -> str | None:
    """One string from the query: bounded, controls dropped; outside `allowed` -> default."""
    raw = query.get(key)
    if raw is None or isinstance(raw, (list, dict)):
        return default
    value = _CONTROL.sub("", str(raw))[:MAX_VALUE_CHARS].strip()
    if not value or (allowed is not None and value not in allowed):
        return default
    return value


def items(query: dict[str, Any], key: str, limit: int = MAX_ITEMS) -> list[str]:
    """A comma-separated list from the query, bounded in count and length, duplicates dropped."""
    raw = text({key: query.get(key)}, key)
    if not raw:
        return []
    out = [_CONTROL.sub("", v)[:MAX_VALUE_CHARS].strip() for v in raw.split(",")] if len(raw) < 20000 else []
    return list(dict.fromkeys(v for v in out if v))[:limit]


def number(query: dict[str, Any], key: str, default: float | None, lo: float, hi: float) -> float | None:
    """A number from the query within [lo, hi]; anything else -> default."""
    raw = text(query, key)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return default
    if value is None or not lo <= value <= hi:  # also refuses nan
        return default
    return value


def flag(query: dict[str, Any], key: str, default: bool = False) -> bool:
    raw = text(query, key)
    return default if raw is None else raw in ("1", "true", "yes", "on")


def query_string(state: dict[str, Any]) -> str:
    """`?a=1&runs=x,y` from a state mapping: lists joined with commas, empty values left out."""
    pairs = []
    for key, value in state.items():
        if value is None or value == "" or value == [] or value is False:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif value is True:
            value = "1"
        pairs.append((key, str(value)))
    return "?" + urllib.parse.urlencode(pairs, safe=",:") if pairs else "?"


def sync_url(store_id: str) -> None:
    """Mirror the query string held in dcc.Store `store_id` into the address bar, client-side."""
    from dash import Input, Output, clientside_callback

    clientside_callback(
        """function(q) {
            if (typeof q === 'string' && q !== window.location.search) {
                window.history.replaceState(null, '', window.location.pathname + (q === '?' ? '' : q));
            }
            return '';
        }""",
        Output(store_id + "-sink", "children"), Input(store_id, "data"))
