"""Text from specs, traces and stores is data: shown as written, never run as markup or as
terminal control.

Why one module: a spec name holding Rich markup (`[/]`) once crashed every later `results list`,
and an escape sequence in a name reached the terminal raw (it can retitle the window or clear the
screen). Every output path (tables, error messages, CSV, plots) escapes through these helpers.
"""

from __future__ import annotations

import re
from typing import Any

#: C0 and C1 control characters (tab and newline excepted), DEL, and the Unicode bidirectional
#: overrides that can make text read differently from what it holds.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(value: Any) -> str:
    """`str(value)` with control characters shown as escapes (`\\x1b`), never sent raw."""
    text = "" if value is None else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def markup(value: Any) -> str:
    """Safe inside Rich markup: controls escaped, and `[` can no longer open a tag."""
    from rich.markup import escape

    return escape(plain(value))


def mathtext(value: Any) -> str:
    """Safe in a matplotlib label: controls escaped and `$` literal (no mathtext parsing)."""
    return plain(value).replace("$", r"\$")


def csv_cell(value: Any) -> Any:
    """Numbers as they are; text with controls escaped, and a leading = + - @ neutralised so a
    spreadsheet never evaluates it as a formula."""
    if value is None or isinstance(value, (int, float)):
        return value
    text = plain(value)
    if text[:1] in ("=", "+", "-", "@") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def label(value: Any) -> str:
    """Safe as plotly text (trace names, hover, titles, annotations): plotly renders a subset of
    HTML there (`<b>`, `<a href>`), so `<`, `>` and `&` are escaped and show as written."""
    return plain(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
