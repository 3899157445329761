"""`perfbench compare BASE CANDIDATE`: every point on both sides, with statistics and a verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from perfbench.cli.options import check_format, store_option


def parse_pct(text: str, where: str) -> float:
    """`5%`, `5` or `0.05` (a fraction below 1) as a fraction; InputError names `where`."""
    from perfbench.errors import InputError

    raw = str(text).strip()
    try:
        v = float(raw.rstrip("%"))
    except ValueError:
        raise InputError(f"{where}: expected a percentage like 5% or a fraction like 0.05, got {text!r}") from None
    frac = v / 100 if raw.endswith("%") or v >= 1 else v
    if not 0 <= frac < 10:
        raise InputError(f"{where}: must be from 0% to 1000%, got {text!r}")
    return frac


def compare(
    base: str = typer.Argument(..., help="Base runs: ID[,ID...] (unique prefixes) or a filter "
                                         "KEY:VALUE,... (name, spec, hardware, branch, commit, role, backend, last)."),
    candidate: str = typer.Argument(..., help="Candidate runs, as BASE."),
    store: Path = store_option(),
    metrics: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="Metric to compare (repeatable; "
                                                "default latency_median_s)."),
    threshold: str = typer.Option("5%", "--threshold", help="Minimum effect that counts as a change."),
    alpha: float = typer.Option(0.01, "--alpha", help="Significance level (and 1 - CI level)."),
    paired: bool = typer.Option(False, "--paired", help="The runs are interleaved pairs (same count each side)."),
    fmt: str = typer.Option("table", "--format", help="table | markdown | json"),
) -> None:
    """Compare two runs or sets of runs: ratio of medians with a bootstrap CI, Mann-Whitney U,
    Cliff's delta, a verdict per point, and the geomean over the points on both sides."""
    from perfbench.cli._console import console, print_json
    from perfbench.errors import InputError
    from perfbench.gate import need_gate_extra
    from perfbench.gate.compare import DEFAULT_METRICS, check_metric, compare_runs, select_runs, summary
    from perfbench.gate.report import compare_markdown, console_table, records
    from perfbench.store import ResultsStore

    check_format(fmt, ("table", "markdown", "json"))
    metrics = list(dict.fromkeys(metrics or DEFAULT_METRICS))
    for m in metrics:
        check_metric(m)
    frac = parse_pct(threshold, "--threshold")
    if not 0 < alpha < 0.5:
        raise InputError(f"--alpha must be between 0 and 0.5, got {alpha}")
    need_gate_extra()
    with ResultsStore(store, create=False) as st:
        b, c = select_runs(st, base, "BASE"), select_runs(st, candidate, "CANDIDATE")
    df = compare_runs(b, c, metrics=metrics, thresholds={m: frac for m in metrics}, alpha=alpha, paired=paired)
    summ = summary(df)
    plain = len({r["hardware_id"] for r in b + c}) > 1 or len(
        {(r["spec"].get("backend") or {}).get("name") for r in b + c}) > 1
    if fmt == "json":
        print_json({"comparisons": records(df), "summary": summ, "plain_comparison": plain})
        return
    if fmt == "markdown":
        import sys

        sys.stdout.write(compare_markdown(df, summ))
        return
    console.print(console_table(records(df), f"{base} -> {candidate}"))
    from rich.markup import escape

    from perfbench.gate.report import summary_lines

    for line in summary_lines(summ):
        console.print(escape(line.replace("\\", "")), highlight=False)
    if plain:
        console.print("[yellow]note:[/] the sides differ in hardware or backend: a plain comparison of two "
                      "setups (which one is faster here), not a regression check", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
