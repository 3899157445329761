"""The `perfbench` command.

Each command group lives in its own module (`cli/hw.py`, `cli/results.py`, ...). Modules here import
only typer/rich at load time; torch, transformers and pandas are imported inside the commands that
need them so `perfbench --help` and trace analysis start fast.
"""

from __future__ import annotations

import sys

import typer

from perfbench.errors import EXIT_INTERRUPTED, PerfbenchError

app = typer.Typer(
    name="perfbench",
    help="Benchmark and roofline-profile ML inference: run workloads, analyse traces, sweep settings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Attach every command module that exists; each owns one command or command group."""
    import importlib

    for mod_name in ("run", "hw", "results", "trace", "roofline", "calibrate", "sweep", "compare", "gate", "history", "dashboard"):
        try:
            mod = importlib.import_module(f"perfbench.cli.{mod_name}")
        except ModuleNotFoundError as exc:  # group not built yet
            if exc.name != f"perfbench.cli.{mod_name}":
                raise
            continue
        if hasattr(mod, "register"):
            mod.register(app)
        else:
            app.add_typer(mod.app, name=mod_name)


_register()


def main() -> None:
    """Console entry point: turn perfbench errors into a message and an exit code."""
    try:
        from perfbench.store import db_timeout

        db_timeout()  # a bad PERFBENCH_DB_TIMEOUT is bad input for every command, not a traceback later
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:  # typer returns Exit codes (130 for Ctrl-C) in this mode
            if rv == EXIT_INTERRUPTED:
                from perfbench.cli._console import err_console

                err_console.print("[yellow]interrupted[/]")
            sys.exit(rv)
    except PerfbenchError as exc:
        from perfbench.cli._console import err_console

        from perfbench.textsafe import markup

        # The message quotes what the user wrote (a name, a path, a value): data, never markup.
        err_console.print(f"[bold red]error:[/] {markup(exc)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from perfbench.cli._console import err_console

        err_console.print("[yellow]interrupted[/]")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:  # usage errors from click (typer >= 0.29 vendors it as typer._click)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # a ClickException
            exc.show()
            sys.exit(2)
        if type(exc).__name__ == "Abort":
            sys.exit(EXIT_INTERRUPTED)
        raise
