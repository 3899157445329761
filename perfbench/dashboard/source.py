"""Where the dashboard's data comes from: one results store, opened read-only for each request.

Why a fresh read-only connection per request: the app must keep working while runs write to the
store (WAL readers see each committed point), and a read-only open can never upgrade, lock or
change it. Opening costs about a millisecond.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from perfbench.errors import PerfbenchError
from perfbench.store import DEFAULT_STORE, ResultsStore

_STATE: dict[str, Path] = {"store": DEFAULT_STORE}


def set_store(path: str | Path) -> None:
    _STATE["store"] = Path(path)


def store_path() -> Path:
    return _STATE["store"]


@contextmanager
def open_store() -> Iterator[ResultsStore]:
    """The store, read-only. Raises StoreError (a clear message) when it is missing, locked,
    corrupt or from a newer perfbench."""
    st = ResultsStore(store_path(), create=False)
    try:
        yield st
    finally:
        st.close()


def signature() -> list[int]:
    """(mtime, size) of the store and its WAL file: changes whenever a run writes, costs two stat
    calls and no SQLite, so the app can poll it every few seconds."""
    import os

    out = []
    for suffix in ("", "-wal"):
        try:
            st = os.stat(f"{store_path()}{suffix}")
        except OSError:
            out += [0, 0]
            continue
        # an empty WAL file appears (new mtime) when a reader opens a checkpointed store: no change
        out += [st.st_mtime_ns if st.st_size or not suffix else 0, st.st_size]
    return out


def store_problem() -> str | None:
    """Why the store cannot be read now, or None when it can."""
    try:
        with open_store():
            return None
    except PerfbenchError as exc:
        return str(exc)


# -- a saved dashboard (dashboards/*.yaml) scopes the app: which runs, which pages, their settings --

_CONFIG: dict[str, object] = {"config": None}


def set_config(config: object) -> None:
    _CONFIG["config"] = config


def config() -> object:
    return _CONFIG["config"]


def visible_pages(all_pages: tuple[str, ...]) -> tuple[str, ...]:
    cfg = config()
    pages = getattr(cfg, "page_names", None)
    return tuple(p for p in all_pages if p in pages) if pages else all_pages


def page_query(page: str, query: dict) -> dict:
    """The URL's query over the saved dashboard's settings for `page` (the URL wins)."""
    cfg = config()
    defaults = cfg.settings_for(page) if cfg is not None else {}
    return {**defaults, **{k: v for k, v in query.items() if v not in (None, "")}}


def scope():
    """The saved dashboard's run filter (a data.RunFilter), or None: every run."""
    cfg = config()
    return cfg.run_filter() if cfg is not None else None
