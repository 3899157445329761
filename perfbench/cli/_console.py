"""Shared rich consoles: tables and progress to stdout/stderr, JSON printed raw."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

# Piped or captured output is not squeezed into 80 columns: tables stay readable in logs.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no rich markup), so other tools can parse it: NaN and infinities,
    which JSON has no spelling for, are written as null."""
    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
