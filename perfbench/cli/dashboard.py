"""`perfbench dashboard` (the Dash app over a results store) and `perfbench report` (its figures in one
self-contained HTML file). Both only read the store."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from perfbench.cli.options import store_option
from perfbench.errors import InputError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _need_dash() -> None:
    try:
        import dash  # noqa: F401
        import plotly  # noqa: F401
    except ImportError:
        raise InputError("the dashboard needs Dash and plotly: pip install 'perfbench[dashboard]' "
                         "(or PERFBENCH_EXTRAS=dashboard bash scripts/setup.sh)") from None


def _load_config(path: Optional[Path]):
    if path is None:
        return None
    from perfbench.dashboard.config import load_dashboard

    return load_dashboard(path)


def dashboard(
    config: Optional[Path] = typer.Argument(None, help="A saved dashboard (dashboards/*.yaml): its runs, pages, settings."),
    store: Path = store_option(),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. 0.0.0.0 exposes the results to the network."),
    port: int = typer.Option(8050, "--port", help="Port to listen on (1-65535)."),
) -> None:
    """Serve the dashboard: runs, compare, roofline, trace, sweeps, history, serving and energy pages
    over a results store, opened read-only (it keeps working while runs write to it)."""
    from perfbench.cli._console import err_console

    if not 1 <= port <= 65535:
        raise InputError(f"--port must be from 1 to 65535, got {port}")
    cfg = _load_config(config)
    _need_dash()
    from perfbench.dashboard.app import create_app
    from perfbench.dashboard.source import store_problem

    app = create_app(store, cfg)
    problem = store_problem()
    if problem:
        err_console.print(f"[yellow]warning:[/] {_safe(problem)}\n  The pages say so until the store can be read.")
    if host not in LOOPBACK:
        err_console.print(f"[yellow]warning:[/] listening on {_safe(host)}: anyone who can reach this machine "
                          "on the network can read these results (there is no login). Use --host 127.0.0.1 "
                          "and an SSH tunnel to keep them private.")
    shown = f"[{host}]" if ":" in host else host
    err_console.print(f"perfbench dashboard on [bold]http://{_safe(shown)}:{port}/[/] (store {_safe(store)}, "
                      "read-only). Ctrl-C stops it.")
    try:
        app.run(host=host, port=port, debug=False)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another dashboard "
                         "running? pass --port)") from None


def report(
    names: List[str] = typer.Argument(..., help="Run ids (unique prefixes) and sweep names or ids."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    store: Path = store_option(),
    config: Optional[Path] = typer.Option(None, "--dashboard", help="A saved dashboard: its pages and settings."),
) -> None:
    """Write one self-contained HTML file with the dashboard's figures for these runs and sweeps,
    their provenance and the commands that reproduce them (no server, no network needed)."""
    from perfbench.cli._console import err_console

    cfg = _load_config(config)
    _need_dash()
    from perfbench.dashboard import report as rep
    from perfbench.dashboard.source import open_store

    from perfbench.dashboard.app import create_app

    rep.check_out(out)
    create_app(store, cfg)  # registers the pages whose figures the report draws
    with open_store() as st:
        run_ids, sweep_ids = rep.resolve(st, names)
        figures = rep.collect(st, run_ids, sweep_ids, on_page=lambda p: err_console.print(f"  {p} ...", highlight=False))
        html = rep.render(st, run_ids, sweep_ids, figures)
    rep.write_atomic(out, html)
    shown = sum(1 for _, _, f in figures if f is not None)
    err_console.print(f"wrote {_safe(out)}: {shown} figures, {len(run_ids)} runs, {len(sweep_ids)} sweeps "
                      f"({len(html) / 1e6:.1f} MB)")


def _safe(value: object) -> str:
    from perfbench.textsafe import markup

    return markup(value)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
    app.command("report")(report)
