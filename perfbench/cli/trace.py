"""`perfbench trace analyze|sweep|ops|kernels|fusion|compare|overhead`: kernel-level trace analysis.

JSON output is a contract other tools parse: `analyze` prints exactly the per-run figure keys
(perfbench.trace.FIGURE_KEYS) and `sweep` prints {"points", "transition_batch", "methods", "agree"}.
pandas and the analysis modules are imported inside the commands so `perfbench --help` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional

import typer

from perfbench.cli.options import check_format, store_option

from perfbench.cli._console import console, err_console, print_json
from perfbench.errors import InputError
from perfbench.textsafe import markup

app = typer.Typer(
    help="Analyse PyTorch-profiler traces: TKLQT (kernel launch + queue time), GPU idle, bound, "
    "operators, kernels, batch-sweep transition, fusion candidates.",
    no_args_is_help=True,
)


_FORMAT_HELP = "table (for people) or json (for tools)."
_TRACE_HELP = "Chrome trace from torch.profiler (.json or .json.gz)."
_MAX_BYTES_HELP = ("Largest decompressed trace read, e.g. 8G (default 4G, or PERFBENCH_MAX_TRACE_BYTES); "
                   "giving it also lifts the gzip-ratio bomb check.")
#: --top / row counts are 1..this (0 where the option says "0: none/all").
MAX_ROWS = 100_000
#: --max-len of fusion chains.
MAX_CHAIN = 64
#: Latencies (ms) above a day are not measurements of one iteration.
MAX_LATENCY_MS = 86_400_000.0
MAX_BATCH = 2**31 - 1


def _max_bytes_option() -> Any:
    return typer.Option(None, "--max-trace-bytes", help=_MAX_BYTES_HELP)


def _max_bytes(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    from perfbench.trace.textio import parse_size

    return parse_size(text, "--max-trace-bytes")


def _check_int(option: str, value: int, lo: int, hi: int, zero: str = "") -> int:
    """Exit 2 naming the option unless lo <= value <= hi (`zero`: what 0 means, when allowed)."""
    if not lo <= value <= hi:
        allowed = f"an integer from {lo} to {hi:,}" + (f" (0: {zero})" if zero else "")
        raise InputError(f"{option} must be {allowed}, got {value}")
    return value


def _check_ms(option: str, value: float) -> float:
    """Exit 2 naming the option unless value is a finite number of milliseconds > 0 (and < a day)."""
    if not (math.isfinite(value) and 0 < value <= MAX_LATENCY_MS):
        raise InputError(f"{option} must be a finite number of milliseconds > 0 (at most a day), got {value}")
    return value


def _json_ready(obj: Any) -> Any:
    """NaN and infinities -> null, so what is printed is valid JSON."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# figure -> (label, unit, format)
_FIGURE_ROWS = (
    ("tklqt_us", "TKLQT (total kernel launch + queue time)", "us"),
    ("launch_call_us", "  launch-call part", "us"),
    ("queue_us", "  queue part", "us"),
    ("kernels", "kernels", ""),
    ("launches", "launch calls", ""),
    ("graph_launches", "CUDA-graph launches", ""),
    ("akd_us", "average kernel duration", "us"),
    ("gpu_busy_us", "GPU busy (union of streams)", "us"),
    ("gpu_span_us", "GPU span", "us"),
    ("gpu_util", "GPU utilisation (busy / span)", ""),
    ("idle_host_wait_us", "GPU idle waiting on the host", "us"),
    ("bound", "bound", ""),
    ("steps", "iterations (ProfilerStep)", ""),
    ("orphans", "orphan GPU activities", ""),
    ("negative_clamped", "negative gaps clamped", ""),
    ("dropped", "values dropped or clamped", ""),
    ("has_gpu", "has GPU activity", ""),
)


def _fmt(v: Any, unit: str = "") -> str:
    """A table cell: numbers formatted; text from a trace is data (perfbench.textsafe): control
    characters shown as escapes, Rich markup printed literally."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {n:,}" for k, n in v.items() if n) or "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if unit == "us":
            return f"{v:,.1f} us" if abs(v) < 1e4 else f"{v / 1e3:,.2f} ms"
        if v.is_integer():
            return f"{int(v):,}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, tuple):
        return " > ".join(markup(x) for x in v)
    return markup(v)


def _records(df: Any) -> list[dict]:
    """DataFrame -> JSON-ready records (NaN -> null, tuples -> lists)."""
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            elif isinstance(v, tuple):
                v = list(v)
            elif hasattr(v, "item"):
                v = v.item()
            clean[k] = v
        out.append(clean)
    return out


def _df_table(df: Any, title: str, wide: tuple[str, ...] = ()) -> None:
    from rich.table import Table

    from pandas.api.types import is_numeric_dtype

    t = Table(title=markup(title), title_justify="left")
    for c in df.columns:
        numeric = is_numeric_dtype(df[c].dtype)
        t.add_column(str(c), justify="right" if numeric else "left", no_wrap=c in wide, overflow="ellipsis", max_width=90 if c in wide else None)
    for rec in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, rec):
            cells.append(_fmt(v, "us" if str(c).endswith("_us") else ""))
        t.add_row(*cells)
    console.print(t)


def _figures_table(figs: dict, title: str) -> None:
    from rich.table import Table

    t = Table(title=markup(title), show_header=False, title_justify="left")
    t.add_column("figure", style="bold")
    t.add_column("value", justify="right")
    t.add_column("key", style="dim")
    for key, label, unit in _FIGURE_ROWS:
        t.add_row(label, _fmt(figs.get(key), unit), key)
    console.print(t)
    if figs.get("note"):
        console.print(f"[yellow]note:[/] {markup(figs['note'])}", highlight=False)


@app.command("analyze")
def analyze_cmd(
    trace: Path = typer.Argument(..., help=_TRACE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    top: int = typer.Option(5, "--top", help="Also list the top K kernels by GPU time (table only; 0: none)."),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """Per-run figures: TKLQT and its parts, kernels, GPU busy/span/util, host-wait idle, bound."""
    check_format(fmt, ("table", "json"))
    _check_int("--top", top, 0, MAX_ROWS, "none")
    from perfbench.trace import analyze, top_kernels

    a = analyze(trace, max_bytes=_max_bytes(max_bytes))
    figs = a.as_full_dict()
    if fmt == "json":
        print_json(_json_ready(a.as_dict()))  # exactly the contract's keys; the note goes to stderr for people
        if figs["note"]:
            err_console.print(f"note: {figs['note']}", highlight=False, markup=False)
        return
    _figures_table(figs, f"{trace.name}: per-iteration figures")
    if top > 0 and figs["has_gpu"]:
        _df_table(top_kernels(a, top), f"top {top} kernels by GPU time (per iteration)", wide=("name",))


def _parse_list(text: str, what: str, conv: Any) -> list:
    try:
        return [conv(x.strip()) for x in text.split(",") if x.strip()]
    except (ValueError, OverflowError):
        raise InputError(f"--{what}: expected a comma-separated list of numbers, got {text!r}") from None


def _batch_sizes(text: str, n_traces: int) -> list[int]:
    bs = _parse_list(text, "batch-sizes", int)
    if len(bs) != n_traces:
        raise InputError(f"{n_traces} traces but {len(bs)} batch sizes: give one trace per batch size, in the same order")
    if any(not 1 <= b <= MAX_BATCH for b in bs) or any(b2 <= b1 for b1, b2 in zip(bs, bs[1:])):
        raise InputError(f"--batch-sizes must be integers from 1 to {MAX_BATCH:,}, strictly ascending, got {bs}")
    return bs


def _latencies_us(text: Optional[str], n: int) -> Optional[list[float]]:
    if text is None:
        return None
    lat_ms = _parse_list(text, "latency-ms", float)
    if len(lat_ms) != n:
        raise InputError(f"{n} batch sizes but {len(lat_ms)} latencies in --latency-ms")
    for x in lat_ms:
        _check_ms("--latency-ms", x)
    return [x * 1e3 for x in lat_ms]


@app.command("sweep")
def sweep_cmd(
    traces: List[Path] = typer.Argument(..., help="One trace per batch size, in the order of --batch-sizes."),
    batch_sizes: str = typer.Option(..., "--batch-sizes", "-b", help="Comma-separated, ascending, e.g. 1,2,4,8."),
    latency_ms: Optional[str] = typer.Option(
        None, "--latency-ms", help="Timed (unprofiled) median latency per batch size, ms (finite, > 0), comma-separated. "
        "Default: traced iteration spans."
    ),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """CPU-bound -> GPU-bound transition over a batch sweep: TKLQT leaving its baseline, cross-checked
    against gpu_util crossing 0.5 and the latency knee."""
    check_format(fmt, ("table", "json"))
    from perfbench.trace import analyze, detect_transition

    bs = _batch_sizes(batch_sizes, len(traces))
    lat = _latencies_us(latency_ms, len(bs))
    limit = _max_bytes(max_bytes)
    analyses = [analyze(t, max_bytes=limit) for t in traces]
    tr = detect_transition(bs, analyses, lat)
    points = [{"batch_size": b, **a.as_dict()} for b, a in zip(bs, analyses)]
    if fmt == "json":
        print_json(_json_ready({"points": points, **tr.as_dict()}))
        if len(tr.evaluated) < 3:
            err_console.print(f"note: methods evaluated: {', '.join(tr.evaluated) or 'none'} (the others had no data)",
                              highlight=False, markup=False)
        return
    from rich.table import Table

    t = Table(title="batch sweep", title_justify="left")
    cols = ("batch_size", "tklqt_us", "queue_us", "kernels", "gpu_util", "idle_host_wait_us", "bound")
    for c in cols:
        t.add_column(c, justify="right")
    t.add_column("latency", justify="right")
    latencies = lat if lat is not None else [a.traced_span_us for a in analyses]
    for p, l in zip(points, latencies):
        t.add_row(*[_fmt(p[c], "us" if c.endswith("_us") else "") for c in cols], _fmt(l, "us"))
    console.print(t)
    src = "timed medians" if lat is not None else "traced iteration spans (include profiler overhead)"
    _print_transition(tr, src)


def _print_transition(tr: Any, latency_src: Optional[str], agree_note: str = "") -> None:
    console.print(f"transition batch (TKLQT): [bold]{tr.transition_batch if tr.transition_batch is not None else 'none in range'}[/]")
    for m, b in tr.methods.items():
        src = f"  (latency from {latency_src})" if m == "latency" and latency_src else ""
        console.print(f"  {m:>8}: {b if b is not None else 'none in range'}{src}")
    console.print(f"  methods agree: {'yes' if tr.agree else 'no'}{agree_note}")


@app.command("ops")
def ops_cmd(
    trace: Path = typer.Argument(..., help=_TRACE_HELP),
    level: str = typer.Option("op", "--level", help="op (innermost operator), top_op (outermost) or module (nn.Module)."),
    top: int = typer.Option(20, "--top", help="Rows to show (0: all)."),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """Per-operator table (per iteration): calls, kernels, GPU time, CPU time, launch overhead."""
    check_format(fmt, ("table", "json"))
    check_format(level, ("op", "top_op", "module"), "--level")
    _check_int("--top", top, 0, MAX_ROWS, "all")
    from perfbench.trace import analyze, operator_table

    df = operator_table(analyze(trace, max_bytes=_max_bytes(max_bytes)), level)
    if top > 0:
        df = df.head(top)
    if fmt == "json":
        print_json(_records(df))
        return
    _df_table(df, f"{trace.name}: operators ({level}), per iteration", wide=("operator",))


@app.command("kernels")
def kernels_cmd(
    trace: Path = typer.Argument(..., help=_TRACE_HELP),
    top: int = typer.Option(20, "--top", help=f"Kernels to show (1 to {MAX_ROWS:,})."),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """Top kernels by GPU time (per iteration): count, total and mean duration, share."""
    check_format(fmt, ("table", "json"))
    _check_int("--top", top, 1, MAX_ROWS)
    from perfbench.trace import analyze, top_kernels

    df = top_kernels(analyze(trace, max_bytes=_max_bytes(max_bytes)), top)
    if fmt == "json":
        print_json(_records(df))
        return
    _df_table(df, f"{trace.name}: top kernels, per iteration", wide=("name",))


@app.command("fusion")
def fusion_cmd(
    trace: Path = typer.Argument(..., help=_TRACE_HELP),
    top: int = typer.Option(10, "--top", help=f"Candidates to show (1 to {MAX_ROWS:,})."),
    max_len: int = typer.Option(8, "--max-len", help=f"Longest kernel chain considered (2 to {MAX_CHAIN})."),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """Frequent back-to-back kernel chains worth fusing, with the launch time fusion would save."""
    check_format(fmt, ("table", "json"))
    from perfbench.trace import analyze, fusion_candidates

    _check_int("--top", top, 1, MAX_ROWS)
    _check_int("--max-len", max_len, 2, MAX_CHAIN)
    df = fusion_candidates(analyze(trace, max_bytes=_max_bytes(max_bytes)), max_len=max_len, top=top)
    if fmt == "json":
        print_json(_records(df))
        return
    _df_table(df, f"{trace.name}: fusion candidates (per iteration)", wide=("chain",))


@app.command("compare")
def compare_cmd(
    eager: Path = typer.Argument(..., help="Trace of the eager run."),
    compiled: Path = typer.Argument(..., help="Trace of the compiled (fused / CUDA-graph) run of the same workload."),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """Measured launch saving of a compiled run against eager: TKLQT and launches saved."""
    check_format(fmt, ("table", "json"))
    from perfbench.trace import analyze, compare_launch_saving

    limit = _max_bytes(max_bytes)
    res = compare_launch_saving(analyze(eager, max_bytes=limit), analyze(compiled, max_bytes=limit))
    if fmt == "json":
        print_json(_json_ready(res))
        return
    from rich.table import Table

    t = Table(title="launch saving, compiled vs eager (per iteration)", show_header=False, title_justify="left")
    t.add_column("figure", style="bold")
    t.add_column("value", justify="right")
    for k, v in res.items():
        t.add_row(k, _fmt(v, "us" if k.endswith("_us") else ""))
    console.print(t)


@app.command("overhead")
def overhead_cmd(
    trace: Path = typer.Argument(..., help=_TRACE_HELP),
    timed_median_ms: float = typer.Option(..., "--timed-median-ms", help="Untraced median latency of the same iteration, ms (finite, > 0)."),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """Traced iteration span against the timed median: how much of the trace is profiler overhead."""
    check_format(fmt, ("table", "json"))
    from perfbench.trace import analyze, profiler_overhead

    _check_ms("--timed-median-ms", timed_median_ms)
    res = profiler_overhead(analyze(trace, max_bytes=_max_bytes(max_bytes)), timed_median_ms * 1e3)
    if fmt == "json":
        print_json(_json_ready(res))
        return
    console.print(
        f"traced span {_fmt(res['traced_span_us'], 'us')} vs timed median {_fmt(res['timed_median_us'], 'us')}: "
        f"ratio {_fmt(res['profiler_overhead_ratio'])} (profiler overhead, not the workload's)"
    )


@app.command("run")
def run_cmd(
    run_id: str = typer.Argument(..., help="A stored run captured with measure.trace: true (or --trace)."),
    store: Path = store_option(),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    max_bytes: Optional[str] = _max_bytes_option(),
) -> None:
    """The batch-sweep analysis of a stored traced run: per-point figures, profiler overhead against
    the timed median of the same point, and the CPU->GPU-bound transition (latency from the timed,
    untraced medians)."""
    check_format(fmt, ("table", "json"))
    from perfbench.store import ResultsStore
    from perfbench.trace import analyze, detect_transition, profiler_overhead

    limit = _max_bytes(max_bytes)
    with ResultsStore(store, create=False) as st:
        run = st.get_run(run_id)
    pts = [p for p in run["points"] if p["status"] == "ok" and p.get("trace_path")]
    if not pts:
        raise InputError(f"run {run['run_id']} has no traced points: run it with --trace "
                         "(or measure.trace: true)")
    pts.sort(key=lambda p: p["batch_size"])
    analyses = [analyze(p["trace_path"], max_bytes=limit) for p in pts]
    bs = [p["batch_size"] for p in pts]
    lat_us = [p["latency_median_s"] * 1e6 for p in pts]
    tr = detect_transition(bs, analyses, lat_us)
    points = [{"batch_size": b, **a.as_full_dict(), **profiler_overhead(a, l), "trace_path": p["trace_path"]}
              for b, a, l, p in zip(bs, analyses, lat_us, pts)]
    if fmt == "json":
        print_json(_json_ready({"run_id": run["run_id"], "name": run["name"], "points": points, **tr.as_full_dict()}))
        return
    from rich.table import Table

    t = Table(title=markup(f"{run['name']} ({run['run_id']}): traced batch sweep"), title_justify="left")
    cols = ("batch_size", "tklqt_us", "launch_call_us", "queue_us", "kernels", "gpu_util",
            "idle_host_wait_us", "bound", "timed_median_us", "traced_span_us", "profiler_overhead_ratio")
    for c in cols:
        t.add_column(c.replace("_us", " (us)") if c.endswith("_us") else c, justify="right")
    for p in points:
        t.add_row(*[_run_cell(c, p[c]) for c in cols])
    console.print(t)
    _print_transition(tr, None, "  (latency knee from timed, untraced medians)")
    if not analyses[0].figures.has_gpu:
        console.print("[yellow]note:[/] CPU-only traces: no GPU activity, so there is no TKLQT or launch-bound analysis")


def _run_cell(col: str, v: Any) -> str:
    if not isinstance(v, float) or not math.isfinite(v):
        return _fmt(v)
    return f"{v:,.3f}" if col.endswith("ratio") or col == "gpu_util" else f"{v:,.1f}"
