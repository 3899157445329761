"""`perfbench history SPEC_OR_NAME`: a metric over commits, and the steps in it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from perfbench.cli.options import check_format, store_option


def _runs(st, spec_or_name: str, hardware: Optional[str], branch: Optional[str]) -> list[dict]:
    """Completed runs of a spec (YAML path, spec hash prefix or workload name) on one machine."""
    from perfbench.errors import InputError

    path = Path(spec_or_name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from perfbench.spec import load_spec

        found = st.find_runs(spec_hash=load_spec(path, check_device=False).spec_hash())
    else:
        found = st.find_runs(name=spec_or_name) or [r for r in st.find_runs()
                                                    if (r["spec_hash"] or "").startswith(spec_or_name)]
    found = [r for r in found if (r.get("subject") or {}).get("role") != "base"]  # another binary's runs
    if branch:
        found = [r for r in found if (r.get("subject") or {}).get("branch") == branch]
    hws = sorted({r["hardware_id"] for r in found})
    if hardware:
        found = [r for r in found if r["hardware_id"].startswith(hardware)]
    elif len(hws) > 1:
        raise InputError(f"runs of {spec_or_name!r} come from {len(hws)} machines: pass --hardware, one of "
                         f"{', '.join(hws)} (results from different hardware are never mixed)")
    if not found:
        raise InputError(f"no completed run of {spec_or_name!r} in {st.path} (a spec YAML, a workload name or a "
                         "spec hash prefix; see `perfbench results list`)")
    return [st.get_run(r["run_id"]) for r in found]


def history(
    spec_or_name: str = typer.Argument(..., help="Workload spec YAML, workload name, or spec hash prefix."),
    store: Path = store_option(),
    hardware: Optional[str] = typer.Option(None, "--hardware", help="Hardware id (prefix) when runs come from several."),
    metric: str = typer.Option("latency_median_s", "--metric", help="Metric to follow."),
    branch: Optional[str] = typer.Option(None, "--branch", help="Only runs whose subject is on this branch."),
    point: Optional[str] = typer.Option(None, "--point", help="Only this point, e.g. b1-s64-n0."),
    min_segment: int = typer.Option(5, "--min-segment", help="Shortest run of values that can be a level "
                                    "(so one spike is never a step)."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Print a metric's series over commits and the change points in it (ruptures PELT + t-test)."""
    from perfbench.cli._console import console, print_json
    from perfbench.errors import InputError
    from perfbench.gate import need_gate_extra
    from perfbench.gate.changepoint import detect, series
    from perfbench.gate.compare import check_metric, point_key
    from perfbench.store import ResultsStore

    check_format(fmt, ("table", "json"))
    check_metric(metric)
    if min_segment < 2:
        raise InputError(f"--min-segment must be at least 2, got {min_segment}")
    need_gate_extra()
    with ResultsStore(store, create=False) as st:
        runs = _runs(st, spec_or_name, hardware, branch)
    keys = list(dict.fromkeys(point_key(p) for r in runs for p in r["points"] if p.get("status") == "ok"))
    if point:
        if point not in keys:
            raise InputError(f"--point {point!r}: not measured; allowed: {', '.join(keys)}")
        keys = [point]
    out = {}
    for key in keys:
        df = series(runs, metric, key)
        steps = detect(df["value"].tolist(), min_segment=min_segment) if len(df) else []
        df = df.astype(object).where(df.notna(), None)
        out[key] = {"series": df.to_dict("records"),
                    "steps": [{**s.as_dict(), "run_id": df["run_id"][s.index], "commit": df["commit"][s.index]}
                              for s in steps]}
    if fmt == "json":
        print_json({"metric": metric, "hardware_id": runs[0]["hardware_id"], "points": out})
        return
    _print(console, out, metric, runs[0]["hardware_id"], min_segment)


def _print(console, out: dict, metric: str, hardware_id: str, min_segment: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    from perfbench.gate.report import fmt_value
    from perfbench.schema import FIELDS

    unit = FIELDS[metric].unit or ""
    for key, d in out.items():
        starts = {s["index"]: s for s in d["steps"]}
        t = Table(title=f"{escape(metric)} at {key} on {escape(hardware_id)}")
        for c in ("#", "created", "commit", "branch", "value", "step"):
            t.add_column(c)
        for i, r in enumerate(d["series"]):
            s = starts.get(i)
            t.add_row(str(i), str(r["created_at"])[:19], escape(str(r["commit"] or "-")[:12]),
                      escape(str(r["branch"] or "-")), fmt_value(r["value"], unit),
                      f"[bold]{s['change_pct']:+.1f}% (confidence {s['confidence']:.4f})[/]" if s else "")
        console.print(t)
        if not d["steps"]:
            console.print(f"  no step (minimum segment {min_segment} runs, t-test p < 0.001)", highlight=False)
        for s in d["steps"]:
            console.print(f"  step at commit {escape(str(s['commit'] or '-'))} (run {s['run_id']}, #{s['index']}): "
                          f"{s['change_pct']:+.1f}%, {fmt_value(s['before'], unit)} -> {fmt_value(s['after'], unit)}, "
                          f"confidence {s['confidence']:.4f} (p = {s['p_value']:.2g})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("history")(history)
