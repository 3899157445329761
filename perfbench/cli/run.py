"""`perfbench run SPEC`: measure a workload and store it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from perfbench.cli.options import check_format, store_option

from perfbench.cli._console import console, err_console, print_json
from perfbench.textsafe import markup

DEFAULT_SPEC = Path("workloads") / "tiny-llama-cpu.yaml"


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.3f} ms" if x < 10 else f"{x:.2f} s"


def _fmt_bytes(x: int | None) -> str:
    if x is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(x)


#: Optional columns: shown only when some point has the field (header, field, format).
_OPTIONAL_COLUMNS = (
    ("pp tok/s", "pp_tokens_per_s", "{:,.0f}"),
    ("tg tok/s", "tg_tokens_per_s", "{:,.1f}"),
    ("engine pp", "engine_pp_tokens_per_s", "{:,.0f}"),
    ("engine tg", "engine_tg_tokens_per_s", "{:,.1f}"),
    ("vs ref", "overhead_ratio", "{:.2f}x"),
    ("J/token", "energy_per_token_j", "{:.4g}"),
    ("avg W", "power_avg_w", "{:.1f}"),
)


def points_table(points: list[dict], title: str | None = None):
    """The summary table shared by `run` and `results show`."""
    from rich.table import Table

    if any(p.get("load_point") for p in points):  # a serving run: one row per load point
        from perfbench.cli.serving_table import serving_table

        return serving_table(points, title)

    t = Table(title=title)
    marks: set[str] = set()
    optional = [c for c in _OPTIONAL_COLUMNS if any(p.get(c[1]) is not None for p in points)]
    for col, just in (("batch", "right"), ("seq", "right"), ("new", "right"), ("status", "left"),
                      ("median", "right"), ("p10", "right"), ("p90", "right"), ("CV", "right"),
                      ("n", "right"), ("tokens/s", "right"), ("peak mem", "right"),
                      *((c[0], "right") for c in optional)):
        t.add_column(col, justify=just)
    for p in points:
        ok = p["status"] == "ok"
        capped = p.get("capped")
        cv = p.get("latency_cv")
        noisy = _spread(p) is not None and _spread(p) > NOISY_SPREAD
        marks.update(["capped"] * bool(capped) + ["noisy"] * noisy)
        t.add_row(
            str(p["batch_size"]), str(p["seq_len"]), str(p["new_tokens"]),
            "[green]ok[/]" if ok else f"[red]failed[/] {markup((p.get('error') or '')[:40])}",
            _fmt_s(p.get("latency_median_s")), _fmt_s(p.get("latency_p10_s")),
            f"[yellow]{_fmt_s(p.get('latency_p90_s'))}![/]" if noisy else _fmt_s(p.get("latency_p90_s")),
            f"{cv * 100:.1f}%" if cv is not None else "-",
            str(p.get("n_samples") or "-") + ("*" if capped else ""),
            f"{p['tokens_per_s']:,.0f}" if p.get("tokens_per_s") else "-",
            _fmt_bytes(p.get("peak_memory_bytes")),
            *(fmt.format(p[key]) if p.get(key) is not None else "-" for _, key, fmt in optional),
        )
    t.caption = "; ".join(_table_notes(points, marks)) or None
    return t


def _table_notes(points: list[dict], marks: set[str]) -> list[str]:
    notes = []
    if "capped" in marks:
        notes.append("n*: cut short by measure.max_seconds, fewer samples than asked")
    if "noisy" in marks:
        notes.append(f"!: p10-p90 spread above {NOISY_SPREAD:.0%} of the median, a noisy measurement "
                     "(other load on the machine?)")
    energy = {p.get("energy_note") for p in points if p.get("status") == "ok" and p.get("energy_note")}
    notes.extend(markup(n) for n in sorted(energy))
    return notes


#: A p10-p90 spread above this share of the median marks a point as noisy in tables. Not the CV:
#: one OS hiccup among a hundred samples inflates the CV while the median stays exact.
NOISY_SPREAD = 0.20


def _spread(p: dict) -> float | None:
    lo, hi, med = p.get("latency_p10_s"), p.get("latency_p90_s"), p.get("latency_median_s")
    return (hi - lo) / med if lo is not None and hi is not None and med else None


def run(
    spec: Path = typer.Argument(DEFAULT_SPEC, help="Workload spec YAML (default: the tiny CPU demo)."),
    store: Path = store_option(),
    trace: Optional[bool] = typer.Option(None, "--trace/--no-trace",
                                         help="Override measure.trace: profile one extra iteration per point."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a spec field by dotted path, e.g. --set backend.compile=reduce-overhead "
                            "--set batch_sizes=[1,8] (repeatable; validated like the file)."),
) -> None:
    """Run a workload spec: warm up, repeat, time with device sync, store every point."""
    from perfbench.errors import PerfbenchError, RunFailed
    from perfbench.spec import load_spec

    check_format(fmt, ("table", "json"))
    if spec == DEFAULT_SPEC and not spec.exists():  # the embedded default, from any directory
        from perfbench.provenance import REPO_ROOT

        spec = REPO_ROOT / DEFAULT_SPEC
    ws = load_spec(spec, overrides=overrides)  # validates everything (device included) before the store is touched
    if trace is not None:
        ws = ws.model_copy(update={"measure": ws.measure.model_copy(update={"trace": trace})})
    if ws.backend.get("compile", "none") != "none" and ws.measure.warmup == 0:
        err_console.print("[yellow]note:[/] compile with measure.warmup 0: the first timed iteration "
                          "includes compilation")

    from perfbench.runner import Progress, run_spec
    from perfbench.store import ResultsStore

    with ResultsStore(store) as st:
        trace_dir = Path(store).parent / "traces"
        show = not quiet and fmt == "table"
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True)
            points_task = bar.add_task("points", total=len(ws.points()))
            iter_task = bar.add_task("iterations", total=ws.measure.repeats)
            label = {"point": ""}

            def point_start(p, i, n) -> None:
                label["point"] = f"batch {p.batch_size}, seq {p.seq_len}"
                bar.update(iter_task, completed=0, total=ws.measure.repeats, description=label["point"])

            hooks = Progress(
                on_point_start=point_start,
                on_sample=lambda d, t: bar.update(iter_task, completed=d, total=max(t, d),
                                                  description=label["point"]),
                on_warmup=lambda d, t: bar.update(  # warm-up (and compilation) is not a stall at 0/N
                    iter_task, description=f"{label['point']}: warm-up {d + 1}/{t}"),
                on_point_end=lambda p, r: bar.advance(points_task),
            )
            ctx = bar
        else:
            from contextlib import nullcontext

            hooks, ctx = Progress(), nullcontext()
        started: list[str] = []

        def on_run_start(run_id: str) -> None:
            started.append(run_id)
            if show:  # long runs: the id is known (and queryable) from the start
                err_console.print(f"run [bold]{run_id}[/] started, store {markup(store)}", highlight=False)

        hooks.on_run_start = on_run_start
        try:
            with ctx:
                res = run_spec(ws, st, spec_path=str(Path(spec).resolve()), progress=hooks, trace_dir=trace_dir)
        except BaseException as exc:
            if not started:
                raise
            # Say which run holds what was measured before the error or Ctrl-C ends the command.
            try:
                run = st.get_run(started[0])
                done = [p for p in run["points"] if p["status"] == "ok"]
                err_console.print(f"run [bold]{run['run_id']}[/] {run['status']}: {len(done)} of "
                                  f"{len(ws.batch_sizes)} points stored (`perfbench results show "
                                  f"{run['run_id']}`)", highlight=False)
            except Exception:  # noqa: BLE001 - the store itself may be what failed; keep the first error
                pass
            if isinstance(exc, Exception) and not isinstance(exc, PerfbenchError):
                # a crash inside the backend or model code: one clear line, the run keeps the detail
                raise RunFailed(f"run {started[0]} failed: {type(exc).__name__}: {exc}".strip()) from exc
            raise
        if fmt == "json":
            print_json(st.get_run(res.run_id))
        else:
            console.print(f"run [bold]{res.run_id}[/]  {markup(ws.name)}  status: {res.status}"
                          + (f" ({markup(res.reason)})" if res.reason else "") + f"  store: {markup(store)}")
            title = f"{ws.name}: {ws.phase}, {ws.model_label}, {ws.dtype}, {st.get_run(res.run_id)['device']}"
            console.print(points_table(res.points, title=markup(title)))
    if res.status == "failed":  # every point failed: stored with each error, but nothing measured
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
