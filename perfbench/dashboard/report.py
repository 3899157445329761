"""`perfbench report RUN_OR_SWEEP... --out report.html`: the dashboard's figures in one HTML file.

For people who will not run a server: one self-contained file (plotly.js inlined, no network), the
same figures as the dashboard's pages (each page's `report_figures`), every run's provenance and the
command that reproduces it. Stored text is HTML-escaped; the file is written atomically, and an
existing file that perfbench did not write is never replaced.
"""

from __future__ import annotations

import html
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from perfbench.dashboard import source
from perfbench.dashboard.app import PAGES
from perfbench.dashboard.data import repro_command
from perfbench.errors import InputError, PerfbenchError
from perfbench.textsafe import plain

GENERATOR = '<meta name="generator" content="perfbench report">'


def resolve(st: Any, names: list[str]) -> tuple[list[str], list[str]]:
    """(run ids, sweep ids) named by `names`: each a run id (prefix) or a sweep name or id."""
    from perfbench.sweep.db import SweepDB

    runs, sweeps = [], []
    db = SweepDB(st)
    for name in names:
        try:
            runs.append(st.resolve_run_id(name))
            continue
        except InputError as run_exc:
            problem = str(run_exc)
        if db.exists():
            try:
                sweeps.append(db.resolve_sweep_id(name))
                continue
            except InputError as sweep_exc:
                problem = f"{problem}; {sweep_exc}"
        raise InputError(f"{name!r} is neither a run nor a sweep: {problem}")
    return list(dict.fromkeys(runs)), list(dict.fromkeys(sweeps))


def collect(st: Any, run_ids: list[str], sweep_ids: list[str], on_page=lambda name: None) -> list[tuple[str, str, Any]]:
    """(page, title, figure) for every page with something to show. A page that fails says so in
    the report instead of taking the whole report down."""
    out = []
    for page in source.visible_pages(PAGES):
        on_page(page)
        mod = importlib.import_module(f"perfbench.dashboard.pages.{page}")
        try:
            figs = mod.report_figures(st, run_ids, sweep_ids)
        except PerfbenchError as exc:
            out.append((page, f"{page}: not shown ({exc})", None))
            continue
        out.extend((page, title, fig) for title, fig in figs)
    return out


def render(st: Any, run_ids: list[str], sweep_ids: list[str], figures: list[tuple[str, str, Any]]) -> str:
    """The report's HTML."""
    import plotly.offline

    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", GENERATOR,
             "<title>perfbench report</title><style>body{font-family:system-ui,sans-serif;margin:1.5rem;"
             "color:#1d2330}code,pre{background:#f3f5f8;padding:.1rem .3rem}pre{padding:.6rem;overflow:auto;"
             "max-height:20rem}h2{border-bottom:1px solid #dde2ea}.fig{margin-bottom:1.2rem}</style>",
             f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
             "<h1>perfbench report</h1>",
             f"<p>Store: <code>{_e(source.store_path())}</code>. Runs: {len(run_ids)}, sweeps: {len(sweep_ids)}.</p>"]
    parts.extend(_run_section(st, run_ids))
    page = None
    for pg, title, fig in figures:
        if pg != page:
            parts.append(f"<h2>{_e(pg.capitalize())}</h2>")
            page = pg
        if fig is None:
            parts.append(f"<p>{_e(title)}</p>")
            continue
        parts.append(f"<div class='fig'><h3>{_e(title)}</h3>"
                     + fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
                     + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _run_section(st: Any, run_ids: list[str]) -> list[str]:
    out = ["<h2>Runs and their evidence</h2>"]
    for rid in run_ids:
        run = st.get_run(rid)
        prov = {k: run.get(k) for k in ("hardware_id", "device", "commit", "created_at", "status", "versions",
                                        "engine", "subject")}
        out.append(f"<details><summary><b>{_e(run['name'])}</b> <code>{_e(rid)}</code> ({_e(run['status'])})"
                   f"</summary><p>Reproduce: <code>{_e(repro_command(run))}</code></p>"
                   f"<pre>{_e(json.dumps({'spec': run['spec'], 'provenance': prov}, indent=2, default=str))}</pre>"
                   "</details>")
    return out


def _e(value: Any) -> str:
    return html.escape(plain(value), quote=True)


def check_out(path: Path) -> Path:
    """--out: a file we may write; an existing file that is not a perfbench report is refused."""
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; give a file name such as report.html")
    if path.exists():
        try:
            head = path.open("rb").read(4096).decode("utf-8", "replace")
        except OSError as exc:
            raise InputError(f"--out {path}: cannot read it to check it ({exc.strerror or exc})") from None
        if GENERATOR not in head:
            raise InputError(f"--out {path} exists and is not a perfbench report; it was left untouched "
                             "(choose another file or remove it)")
    if not path.parent.exists() or not os.access(path.parent, os.W_OK):
        raise InputError(f"--out {path}: the folder {path.parent} does not exist or is not writable")
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a report."""
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(tmp, 0o666 & ~mask)  # as a plain open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
