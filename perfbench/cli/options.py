"""Options and checks that several commands share, defined once so they read and fail alike."""

from __future__ import annotations

from pathlib import Path

import typer

from perfbench.errors import InputError
from perfbench.store import DEFAULT_STORE


def store_option(help: str = "Results database (SQLite).") -> Path:
    """The common `--store PATH` option."""
    return typer.Option(DEFAULT_STORE, "--store", help=help)


def check_format(fmt: str, allowed: tuple[str, ...], option: str = "--format") -> None:
    """Exit 2 with the allowed values when `--format` (or another choice) is not one of them."""
    if fmt not in allowed:
        raise InputError(f"{option} must be one of {', '.join(allowed)}, got {fmt!r}")
