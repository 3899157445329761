"""`perfbench results list|show`: read the results store."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import typer

from perfbench.cli.options import check_format, store_option

from perfbench.cli._console import console, print_json
from perfbench.schema import SCALAR_FIELDS
from perfbench.textsafe import csv_cell, markup

app = typer.Typer(help="List and show stored runs.", no_args_is_help=True)


@app.command("list")
def list_(
    store: Path = store_option(),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    limit: int = typer.Option(0, "--limit", help="Show only the newest N runs (0: all)."),
) -> None:
    """List runs, newest first."""
    from perfbench.store import ResultsStore

    check_format(fmt, ("table", "json"))
    if not store.exists():
        if fmt == "json":
            print_json([])
        else:
            console.print(f"no results store at {markup(store)} yet: `perfbench run SPEC` creates it")
        return
    with ResultsStore(store, create=False) as st:
        runs = st.list_runs(limit=limit or None)
    if fmt == "json":
        print_json(runs)
        return
    from rich.table import Table

    t = Table(title=markup(f"runs in {store}"))
    for col in ("run_id", "name", "created_at", "status", "points", "phase", "model", "backend", "dtype",
                "device", "hardware_id", "commit"):
        t.add_column(col)
    for r in runs:
        pts = f"{r['points_ok']}" + (f" (+{r['points_failed']} failed)" if r["points_failed"] else "")
        t.add_row(*(markup(x) for x in (
            r["run_id"], r["name"], (r["created_at"] or "")[:19], r["status"], pts, r["phase"] or "",
            r["model"], r.get("backend") or "", r["dtype"] or "", r["device"] or "", r["hardware_id"],
            (r["commit"] or "")[:10])))
    console.print(t)
    damaged = [r for r in runs if r.get("damaged")]
    for r in damaged:
        console.print(f"[yellow]damaged:[/] run {markup(r['run_id'])}: {markup(r['damaged'])}")
    if len({r["hardware_id"] for r in runs}) > 1:
        console.print("[yellow]note:[/] these runs come from different hardware (hardware_id); "
                      "compare them only knowingly")


def _csv(run: dict) -> str:
    spec = run["spec"]
    run_cols = {
        # run_status: the points have a `status` of their own
        "run_id": run["run_id"], "name": run["name"], "run_status": run["status"],
        "model": spec["model"] if isinstance(spec["model"], str) else json.dumps(spec["model"]),
        "phase": spec["phase"], "dtype": spec["dtype"], "device": run["device"],
        "backend": spec["backend"]["name"], "compile": spec["backend"].get("compile"),
        "engine_version": (run.get("engine") or {}).get("version"),
        "spec_hash": run["spec_hash"], "hardware_id": run["hardware_id"], "commit": run["commit"],
        "created_at": run["created_at"],
    }
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*run_cols, *SCALAR_FIELDS, "samples_s"], lineterminator="\n")
    w.writeheader()
    for p in run["points"]:
        row = {**run_cols, **{k: p.get(k) for k in SCALAR_FIELDS},
               "samples_s": ";".join(f"{s:.9g}" for s in p["samples_s"])}
        w.writerow({k: csv_cell(v) for k, v in row.items()})
    return buf.getvalue()


def _engine_label(engine: dict | None) -> str:
    """`llama.cpp 0.3.36 (build 0c1e570)`; runs of release 1 say torch and its version."""
    if not engine:
        return "-"
    rest = ", ".join(f"{k} {v}" for k, v in engine.items() if k not in ("name", "version") and v is not None
                     and not isinstance(v, (dict, list)) and len(str(v)) < 60)
    return f"{engine.get('name')} {engine.get('version') or ''}".strip() + (f" ({rest})" if rest else "")


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    store: Path = store_option(),
    fmt: str = typer.Option("table", "--format", help="table | json | csv"),
) -> None:
    """Show one run: provenance and every point (JSON/CSV include raw samples)."""
    from perfbench.cli.run import points_table
    from perfbench.store import ResultsStore

    check_format(fmt, ("table", "json", "csv"))
    with ResultsStore(store, create=False) as st:
        run = st.get_run(run_id)
        if any(p.get("load_point") for p in run["points"]):  # a serving run: its per-request rows too
            run["requests"] = st.get_requests(run["run_id"])
    if fmt == "json":
        print_json(run)
        return
    if fmt == "csv":
        sys.stdout.write(_csv(run))
        return
    spec, fp, v = run["spec"], run["fingerprint"], run["versions"]
    gpus = ", ".join(str(g.get("name", "?")) for g in fp.get("gpus", [])) or "none"
    model = spec["model"] if isinstance(spec["model"], str) else "custom"
    console.print(f"[bold]{markup(run['run_id'])}[/]  {markup(run['name'])}  status: {markup(run['status'])}"
                  + (f" ({markup(run['reason'])})" if run["reason"] else ""))
    console.print(f"  spec: {markup(spec['phase'])} {markup(model)} {markup(spec['dtype'])} "
                  f"backend={markup(spec['backend'])}  hash {markup(run['spec_hash'])}")
    console.print(f"  hardware: {markup(fp.get('cpu_model'))} x{markup(fp.get('cpu_cores_logical'))}, "
                  f"GPU: {markup(gpus)} [dim](id {markup(run['hardware_id'])})[/]  device: {markup(run['device'])}")
    console.print(f"  engine: {markup(_engine_label(run.get('engine')))}", highlight=False)
    server = run.get("backend_info") or {}
    if server.get("server_url"):  # a serving run: the server is not (necessarily) this machine
        console.print(f"  server: {markup(server['server_url'])} ({markup(server.get('api'))}), hardware: "
                      f"{markup(server.get('server_hardware'))}; {markup(server.get('hardware_note'))}"
                      + (f"; log {markup(server['server_log'])}" if server.get("server_log") else ""),
                      highlight=False)
    console.print(f"  versions: torch {markup(v.get('torch'))}, transformers {markup(v.get('transformers'))}, "
                  f"cuda {markup(v.get('cuda'))}, python {markup(v.get('python'))}  commit {markup(run['commit'])}")
    console.print(f"  started {markup(run['created_at'])}  ended {markup(run['ended_at'] or '-')}")
    console.print(points_table(run["points"]))
    for p in run["points"]:
        if p.get("damaged"):
            console.print(f"[yellow]damaged:[/] point batch {markup(p['batch_size'])}: unreadable "
                          f"{markup(', '.join(p['damaged']))} (shown as -)")


@app.command("export")
def export(
    runs: list[str] = typer.Argument(..., help="Run ids (unique prefixes), or filters KEY:VALUE,... as in "
                                               "`perfbench compare` (e.g. branch:main,last:5)."),
    out: Path = typer.Option(..., "--out", help="The JSON file to write (a CI artifact)."),
    store: Path = store_option(),
) -> None:
    """Export runs losslessly (raw samples, provenance, the subject under test) to a JSON file."""
    from perfbench.cli._console import console
    from perfbench.gate.compare import select_runs
    from perfbench.gate.transfer import export_runs, write_export
    from perfbench.store import ResultsStore

    with ResultsStore(store, create=False) as st:
        ids = [r["run_id"] for expr in runs for r in select_runs(st, expr, "RUN")]
        doc = export_runs(st, ids)
    write_export(doc, out)
    console.print(f"exported {len(doc['runs'])} run(s) to {escape_text(str(out))}", highlight=False)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A file written by `perfbench results export`."),
    store: Path = store_option(),
) -> None:
    """Import exported runs; idempotent (runs already present are skipped) and all or nothing."""
    from perfbench.cli._console import console
    from perfbench.gate.transfer import read_export
    from perfbench.store import ResultsStore

    runs = read_export(file)  # validated whole before the store is opened
    with ResultsStore(store) as st:
        added, present = st.import_runs(runs, source=str(file))
    console.print(f"imported {len(added)} run(s) into {escape_text(str(store))}"
                  + (f"; {len(present)} already present, skipped" if present else ""), highlight=False)


def escape_text(text: str) -> str:
    from rich.markup import escape

    return escape(text)
