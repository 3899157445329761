"""`perfbench roofline analyze|place|plot`: analytical roofline and measured positions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from perfbench.cli.options import check_format, check_out_dir, store_option
from perfbench.textsafe import markup

from perfbench.cli._console import console, print_json
from perfbench.errors import InputError

app = typer.Typer(help="Roofline: analytical FLOPs/bytes, measured positions, plots.", no_args_is_help=True)


def _si(x: float, unit: str = "") -> str:
    for div, pre in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {pre}{unit}"
    return f"{x:.2f} {unit}"


def _time(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.3f} ms"


#: Spec fields as this command's options, so a refused value names the option the user typed.
_OPTION_OF = {"model": "--model", "model.preset": "--model", "phase": "--phase", "batch_sizes": "--batch",
              "seq_len": "--seq", "dtype": "--dtype", "new_tokens": "--seq"}


def _checked_arch(model: str, phase: str, batch: int, seq: int, dtype: str):
    """The same rules as a workload spec (one validator for `run` and `roofline analyze`)."""
    from perfbench.errors import SpecError
    from perfbench.spec import parse_spec

    data = {"name": "roofline-analyze", "model": model, "phase": phase, "batch_sizes": [batch],
            "seq_len": seq, "new_tokens": 1 if phase == "decode" else 0, "dtype": dtype, "device": "cpu"}
    try:
        spec = parse_spec(data, "roofline analyze", check_device=False)
    except SpecError as exc:
        raise SpecError("roofline analyze", [(_OPTION_OF.get(f.split("[")[0], f), m)
                                             for f, m in exc.problems]) from None
    if spec.model_ref.kind != "synthetic":
        raise InputError(f"--model: {model!r} is not a preset; give a preset name")
    return spec.arch


@app.command("analyze")
def analyze_cmd(
    model: str = typer.Option(..., "--model", help="Model preset (see README)."),
    phase: str = typer.Option(..., "--phase", help="prefill | decode"),
    batch: int = typer.Option(..., "--batch", help="Batch size (> 0)."),
    seq: int = typer.Option(..., "--seq", help="Prompt length; for decode, the context length."),
    hardware: str = typer.Option(..., "--hardware", help="Hardware profile name or YAML path."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Activation/compute dtype: float32 | float16 | bfloat16"),
    weight_dtype: Optional[str] = typer.Option(None, "--weight-dtype",
                                               help="Weight dtype if different: int8 | int4 | float16 ..."),
    causal: str = typer.Option("full", "--causal", help="full | half: how causal attention FLOPs count"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Analytical per-operator FLOPs, bytes, intensity, bound and roofline time. Needs no GPU."""
    from perfbench.hardware.profile import load_profile
    from perfbench.roofline.analytical import DTYPE_BYTES, analyze

    check_format(fmt, ("table", "json"))
    if phase not in ("prefill", "decode"):
        raise InputError(f"--phase must be prefill or decode, got {phase!r}")
    if batch <= 0 or seq <= 0:
        raise InputError(f"--batch and --seq must be positive integers, got batch={batch}, seq={seq}")
    arch = _checked_arch(model, phase, batch, seq, dtype)
    if weight_dtype is not None and weight_dtype not in DTYPE_BYTES:
        raise InputError(f"--weight-dtype must be one of {', '.join(DTYPE_BYTES)}, got {weight_dtype!r}")
    if causal not in ("full", "half"):
        raise InputError(f"--causal must be full or half, got {causal!r}")
    if not arch.is_decoder and causal == "half":
        raise InputError(f"--causal half applies to causal (decoder) attention; {model} attends "
                         "bidirectionally: leave --causal at full")
    prof = load_profile(hardware)
    rep = analyze(arch, phase=phase, batch=batch, seq=seq, peak_flops=prof.peak_flops(dtype),
                  bandwidth=prof.memory_bandwidth, dtype=dtype, weight_dtype=weight_dtype, causal=causal)
    rep["hardware"].update(profile=prof.name, ceilings="datasheet")
    rep["workload"]["model"] = model
    if fmt == "json":
        print_json(rep)
        return
    from rich.table import Table

    t = Table(title=markup(f"{model} {phase} b{batch} s{seq} {dtype} on {prof.name} "
                           f"(peak {_si(prof.peak_flops(dtype), 'FLOP/s')}, {_si(prof.memory_bandwidth, 'B/s')}, "
                           f"ridge {rep['hardware']['ridge_point']:.0f} FLOP/B)"))
    for col in ("op", "x", "FLOPs", "bytes", "FLOP/B", "bound", "roofline time", "share"):
        t.add_column(col, justify="left" if col in ("op", "bound") else "right")
    tot = rep["total"]["roofline_time_s"]
    for r in rep["ops"]:
        t.add_row(r["name"], str(r["count"]), _si(r["flops"]), _si(r["bytes"], "B"),
                  f"{r['arithmetic_intensity']:.1f}", r["bound"], _time(r["roofline_time_s"]),
                  f"{r['roofline_time_s'] / tot * 100:.1f}%")
    T = rep["total"]
    t.add_row("[bold]total[/]", "", _si(T["flops"]), _si(T["bytes"], "B"), f"{T['arithmetic_intensity']:.1f}",
              T["bound"], _time(T["roofline_time_s"]), "100%")
    console.print(t)
    console.print(f"per layer: {_si(rep['per_layer']['flops'])}FLOP, {_si(rep['per_layer']['bytes'], 'B')}, "
                  f"{_time(rep['per_layer']['roofline_time_s'])}; tokens {rep['workload']['tokens']}; "
                  f"floor {rep['workload']['tokens'] / tot:,.0f} tokens/s")
    console.print("[dim]conventions: " + "; ".join(f"{k}: {v}" for k, v in rep["conventions"].items()
                                                   if k != "elementwise_flops_per_element") + "[/]")


def _placed(run_id: str, store: Path, hardware: Optional[str], ceilings: str):
    from perfbench.roofline.ceilings import run_ceilings
    from perfbench.roofline.place import place_run
    from perfbench.store import ResultsStore

    with ResultsStore(store, create=False) as st:
        run = st.get_run(run_id)
        ceil = run_ceilings(st, run, hardware=hardware, choice=ceilings)
    rows = place_run(run, peak_flops=ceil["peak"], bandwidth=ceil["bandwidth"])
    if not rows:
        raise InputError(f"run {run['run_id']} has no successful points to place")
    return run, ceil, rows


@app.command("place")
def place_cmd(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    store: Path = store_option(),
    hardware: Optional[str] = typer.Option(None, "--hardware", help="Profile to use instead of the detected one."),
    ceilings: str = typer.Option("auto", "--ceilings", help="auto | measured | datasheet"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    operators: bool = typer.Option(False, "--operators", help="Also a table of each projection per batch "
                                   "(traces with recorded shapes)."),
) -> None:
    """Place a stored run on the roofline and split each point's latency into floor, CPU overhead, rest."""
    check_format(fmt, ("table", "json"))
    run, ceil, rows = _placed(run_id, store, hardware, ceilings)
    if fmt == "json":
        print_json({"run_id": run["run_id"], "name": run["name"], "ceilings": ceil, "points": rows})
        return
    from rich.table import Table

    match = {"matched": "", "given": ", given", "fallback": ", generic fallback: no profile matches this run's hardware",
             "none": ""}.get(ceil.get("profile_match") or "none", "")
    t = Table(title=markup(f"{run['name']} ({run['run_id']}) vs {ceil['source']} ceilings "
                           f"[{ceil['profile'] or 'no profile'}{match}: {_si(ceil['peak'], 'FLOP/s')}, "
                           f"{_si(ceil['bandwidth'], 'B/s')}]"))
    for col in ("batch", "median", "FLOP/B", "achieved", "% roof", "bound", "floor", "CPU overhead", "remainder"):
        t.add_column(col, justify="right")
    for r in rows:
        cpu = r["cpu_overhead_s"]
        t.add_row(str(r["batch_size"]), _time(r["latency_median_s"]), f"{r['arithmetic_intensity']:.1f}",
                  _si(r["achieved_flops_per_s"], "FLOP/s"), f"{r['roof_share'] * 100:.1f}%", r["bound"],
                  _time(r["floor_s"]), _time(cpu) if cpu is not None else "-", _time(r["remainder_s"]))
    console.print(t)
    if operators:
        for r in rows:
            if not (r.get("ops") or r.get("operators")):
                continue
            ot = Table(title=f"batch {r['batch_size']}: operators")
            for col in ("operator", "FLOP/B", "GPU time", "floor", "achieved", "% roof"):
                ot.add_column(col, justify="left" if col == "operator" else "right")
            for o in [*r["operators"], *(o for o in r["ops"] if o["op_type"] != "matmul" or not r["operators"])]:
                name = o.get("op") or f"{o['op_type']} (all)"
                g = o.get("gpu_time_us")
                ot.add_row(markup(name), f"{o['arithmetic_intensity']:.1f}", _time(g / 1e6) if g else "-",
                           _time(o["floor_us"] / 1e6), _si(o["achieved_flops_per_s"], "FLOP/s") if g else "-",
                           f"{o['roof_share'] * 100:.0f}%" if o.get("roof_share") else "-")
            console.print(ot)
    notes = {r.get("note") for r in rows if r.get("note")}
    for n in sorted(notes):
        console.print(f"[dim]note: {markup(n)}[/]")


@app.command("plot")
def plot_cmd(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    store: Path = store_option(),
    out: Path = typer.Option(Path("results") / "plots", "--out", help="Output directory."),
    hardware: Optional[str] = typer.Option(None, "--hardware", help="Profile to use instead of the detected one."),
    ceilings: str = typer.Option("auto", "--ceilings", help="auto | measured | datasheet"),
) -> None:
    """Write the roofline and the latency-vs-batch plot of a run (PNG and SVG)."""
    from perfbench.roofline.plots import latency_matplotlib, roofline_matplotlib, save

    check_out_dir(out)
    run, ceil, rows = _placed(run_id, store, hardware, ceilings)
    lines = {k: ceil[k] for k in ("datasheet", "measured") if ceil[k]}
    spec = run["spec"]
    model = spec["model"] if isinstance(spec["model"], str) else "custom model"
    title = f"{run['name']}: {model} {spec['phase']} {spec['dtype']} on {ceil['profile'] or run['device']}"
    paths = save(roofline_matplotlib(rows, lines, title), out / f"roofline_{run['run_id']}")
    paths += save(latency_matplotlib(rows, title), out / f"latency_{run['run_id']}")
    for p in paths:
        console.print(str(p))
