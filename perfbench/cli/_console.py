"""Shared rich consoles: tables and progress to stdout/stderr, JSON printed raw."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Piped or captured output is not squeezed into 80 columns: tables stay readable in logs.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no rich markup), so other tools can parse it."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
