"""`perfbench sweep run|list|show|compare|plot`: settings sweeps and their throughput landscapes.

`perfbench sweep run SPEC.yaml` (rather than `perfbench sweep SPEC.yaml`) because the group also
reads stored sweeps back. Only typer/rich are imported at load time; the sweep machinery, pandas
and matplotlib are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from perfbench.cli.options import check_format, check_out_dir, store_option
from perfbench.textsafe import markup
from typer.core import TyperGroup

from perfbench.cli._console import console, err_console, print_json
from perfbench.errors import InputError

class _SweepGroup(TyperGroup):
    """`perfbench sweep SPEC.yaml ...` (the issue's contract) means `perfbench sweep run SPEC.yaml ...`."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands and not args[0].startswith("-") \
                and args[0].endswith((".yaml", ".yml")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(help="Sweep settings (grid, random, bayes) and analyse the throughput landscape. "
                       "`perfbench sweep SPEC.yaml` is short for `perfbench sweep run SPEC.yaml`.",
                  no_args_is_help=True, cls=_SweepGroup)


def _fmt_metric(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    if metric == "tokens_per_s":
        return f"{v:,.0f} tokens/s"
    if metric.endswith("_s"):
        return f"{v * 1e3:.3f} ms" if v < 10 else f"{v:.2f} s"
    if metric == "peak_memory_bytes":
        return f"{v / 2**20:,.1f} MiB"
    return f"{v:.4g}"


def _fmt_params(p: dict[str, Any] | None) -> str:
    """`k=v, ...`, escaped: values come from the sweep file and are printed inside markup."""
    return markup(", ".join(f"{k}={v}" for k, v in (p or {}).items()) or "-")


def _fmt_gain(g: float | None) -> str:
    return "-" if g is None else f"{g * 100:+.2f}%"


def _open_store(store: Path):
    from perfbench.store import ResultsStore

    if not store.exists():
        raise InputError(f"no results store at {store} (run `perfbench sweep run SPEC` first, or pass --store)")
    return ResultsStore(store, create=False)


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


@app.command("run")
def run(
    spec: Path = typer.Argument(..., help="Sweep spec YAML (see workloads/sweeps/)."),
    store: Path = store_option(),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Trials run at once. Local trials share this "
                                                     "machine, so >1 skews timings; use it with Ray."),
    executor: str = typer.Option("local", "--executor", help="local | ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (ray executor); "
                                                                  "default: RAY_ADDRESS, else a local Ray."),
    trial_timeout: float = typer.Option(3600.0, "--trial-timeout", help="Seconds before a trial is "
                                                                        "killed and recorded as failed."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="On resume, run failed trials again."),
    fmt: str = typer.Option("table", "--format", help="table | json (the `sweep show` JSON)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run a sweep, or resume it: completed trials of the same sweep are skipped."""
    from perfbench.sweep.spec import load_sweep

    check_format(fmt, ("table", "json"))
    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    if trial_timeout <= 0:
        raise InputError(f"--trial-timeout must be > 0 seconds, got {trial_timeout:g}")
    if executor not in ("local", "ray"):
        raise InputError(f"--executor must be local or ray, got {executor!r}")
    if address and executor != "ray":
        raise InputError("--address is for --executor ray")
    sweep = load_sweep(spec)  # everything, every grid point included, is checked before any trial
    if executor == "local":
        from perfbench.spec import parse_spec

        parse_spec(sweep.base_dict, sweep.workload_source)  # the device must exist here
        if jobs > 1:
            err_console.print(f"[yellow]note:[/] {jobs} local trials at once share this machine's CPU "
                              "and GPU; their timings will interfere")
    if executor == "ray" and address:
        from perfbench.sweep.executors import probe_ray_address

        probe_ray_address(address)  # before the store is created: a typo leaves nothing behind
    if sweep.spec.method == "bayes":
        from perfbench.sweep.search import import_optuna

        import_optuna()  # a missing extra is bad input, reported before anything runs

    from perfbench.store import ResultsStore
    from perfbench.sweep.engine import SweepHooks, run_sweep

    with ResultsStore(store) as st:
        show = not quiet and fmt == "table"
        hooks, bar = (_progress(sweep) if show else (SweepHooks(), None))
        try:
            if bar is not None:
                with bar:
                    res = run_sweep(sweep, st, jobs=jobs, executor=executor, address=address,
                                    trial_timeout_s=trial_timeout, retry_failed=retry_failed, hooks=hooks)
            else:
                res = run_sweep(sweep, st, jobs=jobs, executor=executor, address=address,
                                trial_timeout_s=trial_timeout, retry_failed=retry_failed, hooks=hooks)
        except KeyboardInterrupt:
            err_console.print("[yellow]sweep interrupted:[/] completed trials are kept; run the same "
                              "command again to resume")
            raise
        from perfbench.sweep.landscape import load_sweep_data

        summary, _, _ = load_sweep_data(st, res.sweep_id)
    if fmt == "json":
        print_json(summary)
        return
    st_ = res.state
    console.print(f"sweep [bold]{markup(res.sweep_id)}[/]  {markup(sweep.name)}  "
                  + (f"resumed ({st_.skipped} trials already done), " if st_.resumed else "")
                  + f"ran {len(res.ran)} trials" + (f"  ({markup(res.reason)})" if res.reason else "")
                  + f"  store: {markup(store)}")
    _print_summary(summary)


def _progress(sweep: Any):
    """A rich progress bar: trials done/failed/remaining, best so far, ETA."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from perfbench.sweep.engine import SweepHooks

    # Counts and timing first, with a bounded bar: on a narrow terminal the stats text is what
    # gets cut, never the ETA. The best setting's parameters get their own line when it improves.
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   TextColumn("{task.fields[stats]}"), console=err_console, transient=False)
    task: dict[str, Any] = {"best": None}

    def stats(s) -> str:
        best = f"  best {_fmt_metric(s.best_metric, s.metric)}" if s.best_metric is not None else ""
        return (f"ok {s.completed}  [red]failed {s.failed}[/]  left {s.remaining}"
                + (f"  running {s.running}" if s.running else "") + best)

    def on_start(s) -> None:
        task["id"] = bar.add_task(markup(sweep.name), total=s.total, completed=s.done, stats=stats(s))
        if s.resumed:
            bar.console.print(f"resuming sweep {s.sweep_id}: {s.done} of {s.total} trials already done")

    def on_trial_start(t, s) -> None:
        bar.update(task["id"], stats=stats(s))

    def on_trial_end(t, s) -> None:
        if t["status"] != "completed":
            bar.console.print(f"[red]trial {t['trial_index']} {t['status']}[/] ({_fmt_params(t['params'])}): "
                              f"{markup((t['reason'] or '').splitlines()[0][:300]) if t['reason'] else ''}",
                              highlight=False, markup=True)
        if s.best_metric is not None and s.best_metric != task["best"]:
            task["best"] = s.best_metric
            bar.console.print(f"best so far: {_fmt_metric(s.best_metric, s.metric)} "
                              f"({_fmt_params(s.best_params)})", highlight=False)
        bar.update(task["id"], completed=s.done, stats=stats(s))

    return SweepHooks(on_start=on_start, on_trial_start=on_trial_start, on_trial_end=on_trial_end), bar


def _print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    metric = s["metric"]["name"]
    console.print(f"  {s['trials']} trials: {s['completed']} completed, {s['failed']} failed"
                  + (f" ({s['infeasible']} infeasible)" if s["infeasible"] else "")
                  + (f", {s['pending']} pending" if s["pending"] else "")
                  + f"   metric: {metric} ({s['metric']['goal']})   hardware {markup(s['hardware_id'])}")
    b = s["best"]
    console.print(f"  best:    {_fmt_metric(b['metric'], metric)}  ({_fmt_params(b['params'])})" if b
                  else "  best:    - (no completed trial)")
    d = s["default"]
    if d:
        console.print(f"  default: {_fmt_metric(d['metric'], metric)}  ({_fmt_params(d['params'])})"
                      f"   gain over default: {_fmt_gain(s['gain_over_default'])}")
    if s["default_note"]:
        console.print(f"  default: [dim]{markup(s['default_note'])}[/]")
    if s["peaks"] is not None:
        console.print(f"  peaks:   {len(s['peaks'])}  " + "; ".join(
            f"{_fmt_metric(p['metric'], metric)} ({_fmt_params(p['params'])})" for p in s["peaks"][:5]))
    elif s["peaks_note"]:
        console.print(f"  peaks:   [dim]{markup(s['peaks_note'])}[/]")
    if s["importance"]:
        console.print("  importance: " + ", ".join(
            f"{markup(k)} {v:.0%}" if v is not None else f"{markup(k)} n/a (too few trials)"
            for k, v in sorted(s["importance"].items(), key=lambda kv: -(kv[1] if kv[1] is not None else -1))))
    t = Table(title=markup(f"sweep {s['sweep_id']} ({s['method']})"))
    params = s["parameters"]
    t.add_column("#", justify="right")
    for p in params:
        t.add_column(markup(p))
    for col, just in (("status", "left"), (metric, "right"), ("peak mem", "right"), ("wall", "right"),
                      ("run", "left")):
        t.add_column(col, justify=just)
    goal_max = s["metric"]["goal"] == "maximize"
    rows = sorted(s["results"], key=lambda r: (r["metric"] is None,
                                               -(r["metric"] or 0) if goal_max else (r["metric"] or 0)))
    for r in rows:
        status = {"completed": "[green]ok[/]", "failed": "[red]failed[/]",
                  "infeasible": "[yellow]infeasible[/]"}.get(r["status"], r["status"])
        if r["status"] in ("failed", "infeasible") and r["reason"]:
            status += " " + markup(r["reason"].splitlines()[0][:50])
        t.add_row(str(r["trial_index"]), *(markup(r["params"].get(p)) for p in params), status,
                  _fmt_metric(r["metric"], metric),
                  f"{r['peak_memory_bytes'] / 2**20:,.0f} MiB" if r["peak_memory_bytes"] else "-",
                  f"{r['wall_s']:.2f} s" if r["wall_s"] is not None else "-", r["run_id"] or "-")
    console.print(t)


# --------------------------------------------------------------------------------------------------
# list / show
# --------------------------------------------------------------------------------------------------


@app.command("list")
def list_(
    store: Path = store_option(),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """List sweeps, newest first."""
    from perfbench.sweep.db import SweepDB

    check_format(fmt, ("table", "json"))
    if not store.exists():
        if fmt == "json":
            print_json([])
        else:
            console.print(f"no results store at {markup(store)} yet: `perfbench sweep run SPEC` creates it")
        return
    with _open_store(store) as st:
        sweeps = SweepDB(st).list_sweeps()
    if fmt == "json":
        print_json(sweeps)
        return
    from rich.table import Table

    t = Table(title=markup(f"sweeps in {store}"))
    for col in ("sweep_id", "name", "method", "status", "trials", "best", "hardware_id", "created_at"):
        t.add_column(col)
    for s in sweeps:
        # done/planned: a sweep cut short by its time budget or a kill shows what is missing
        trials = f"{s['completed'] + s['failed']}/{s['planned'] or s['trials']}" + \
            (f" ({s['failed']} failed)" if s["failed"] else "")
        t.add_row(*(markup(x) for x in (s["sweep_id"], s["name"], s["method"], s["status"], trials)),
                  _fmt_metric(s["best_metric"], s["metric"]["name"]), markup(s["hardware_id"]),
                  markup((s["created_at"] or "")[:19]))
    console.print(t)


@app.command("show")
def show(
    sweep_id: str = typer.Argument(..., help="Sweep id (a unique prefix is enough)."),
    store: Path = store_option(),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Show a sweep: best, default and gain over it, peaks, parameter importance, every trial."""
    from perfbench.sweep.landscape import load_sweep_data

    check_format(fmt, ("table", "json"))
    with _open_store(store) as st:
        summary, _, _ = load_sweep_data(st, sweep_id)
    if fmt == "json":
        print_json(summary)
        return
    console.print(f"sweep [bold]{markup(summary['sweep_id'])}[/]  {markup(summary['name'])}  "
                  f"status: {markup(summary['status'])}"
                  + (f" ({markup(summary['reason'])})" if summary["reason"] else ""))
    _print_summary(summary)


# --------------------------------------------------------------------------------------------------
# compare / plot
# --------------------------------------------------------------------------------------------------


@app.command("compare")
def compare(
    sweep_a: str = typer.Argument(..., help="The sweep on machine A (e.g. the old GPU)."),
    sweep_b: str = typer.Argument(..., help="The same sweep on machine B (e.g. the new GPU)."),
    store: Path = store_option(),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Best setting on each machine, and the gain from re-tuning on B instead of reusing A's best."""
    from perfbench.sweep.landscape import compare as compare_
    from perfbench.sweep.landscape import load_sweep_data

    check_format(fmt, ("table", "json"))
    with _open_store(store) as st:
        a, df_a, _ = load_sweep_data(st, sweep_a)
        b, df_b, _ = load_sweep_data(st, sweep_b)
    out = compare_(a, b, df_a, df_b)
    if fmt == "json":
        print_json(out)
        return
    metric = out["metric"]["name"]
    for side in ("a", "b"):
        s = out[side]
        best = s["best"]
        console.print(f"{side.upper()}: [bold]{markup(s['sweep_id'])}[/] (hardware {markup(s['hardware_id'])})  best: "
                      + (f"{_fmt_metric(best['metric'], metric)} ({_fmt_params(best['params'])})" if best else "-"))
    ab = out["a_best_on_b"]
    if ab and ab["measured"]:
        console.print(f"A's best on B: {_fmt_metric(ab['metric'], metric)}   gain from re-tuning on B: "
                      f"[bold]{_fmt_gain(out['gain_from_retuning_on_b'])}[/]")
    ba = out["b_best_on_a"]
    if ba and ba["measured"]:
        console.print(f"B's best on A: {_fmt_metric(ba['metric'], metric)}   gain from re-tuning on A: "
                      f"{_fmt_gain(out['gain_from_retuning_on_a'])}")
    for n in out["notes"]:
        console.print(f"[yellow]note:[/] {markup(n)}")


@app.command("plot")
def plot(
    sweep_id: str = typer.Argument(..., help="Sweep id (a unique prefix is enough)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the PNG+SVG files "
                                                           "(default: results/sweeps/SWEEP_ID)."),
    store: Path = store_option(),
) -> None:
    """Heatmaps and contours of 2-D slices, and parallel coordinates, as PNG and SVG files."""
    from perfbench.sweep.landscape import load_sweep_data
    from perfbench.sweep.plots import plot_sweep

    if out is not None:
        check_out_dir(out)
    with _open_store(store) as st:
        summary, df, sweep = load_sweep_data(st, sweep_id)
    out = check_out_dir(out or Path("results") / "sweeps" / summary["sweep_id"])
    files = plot_sweep(df, sweep.param_names, sweep.metric, sweep.goal, out,
                       axes=sweep.axes(), title=f"{summary['name']} ({summary['hardware_id']})")
    for f in files:
        console.print(str(f), highlight=False)
