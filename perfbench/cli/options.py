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


def check_out_dir(path: Path) -> Path:
    """An output folder: created if missing; an existing file, or a folder that cannot be created
    or written, is bad input (exit 2) before any work is done."""
    import os

    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file; give a folder for the plots")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"--out {path}: the folder is not writable")
    return path
