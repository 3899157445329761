"""`perfbench calibrate`: measure this host's ceilings and store them by hardware fingerprint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from perfbench.cli.options import check_format, store_option
from perfbench.textsafe import markup

from perfbench.cli._console import console, err_console, print_json
from perfbench.errors import InputError


def calibrate(
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    dtypes: Optional[str] = typer.Option(None, "--dtypes", help="Comma list, e.g. float32,bfloat16"),
    store: Path = store_option(),
    quick: bool = typer.Option(False, "--quick", help="Fewer shapes and repeats (smoke test)."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Measure matmul peak per dtype, memory bandwidth, launch overhead and host<->device bandwidth."""
    from perfbench.devices import cuda_available, resolve_device

    check_format(fmt, ("table", "json"))
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise InputError("--device cuda: no CUDA GPU is available on this host; use --device cpu")
    dev = resolve_device(device)
    dl = [d.strip() for d in dtypes.split(",")] if dtypes else None
    if dl and (bad := [d for d in dl if d not in ("float32", "float16", "bfloat16")]):
        raise InputError(f"--dtypes: unknown {bad}; allowed: float32, float16, bfloat16")

    from perfbench.hardware.detect import fingerprint, match_profile
    from perfbench.provenance import git_commit, software_versions
    from perfbench.roofline.calibrate import calibrate as run_calibration
    from perfbench.store import ResultsStore

    with ResultsStore(store) as st:  # open first: a locked/corrupt store fails before minutes of work
        with err_console.status("calibrating") as status:
            res = run_calibration(dev, dtypes=dl, quick=quick,
                                  progress=lambda s: status.update(f"calibrating: {s}"))
        fp = fingerprint()
        cid = st.add_calibration(fingerprint=fp, versions=software_versions(), commit=git_commit(),
                                 device=dev, results=res)
    prof = match_profile(fp)
    if fmt == "json":
        print_json({"calibration_id": cid, "hardware_id": fp["hardware_id"],
                    "profile": prof.name if prof else None, **res})
        return
    from rich.table import Table

    where = fp.get('gpus')[0]['name'] if dev == 'cuda' and fp.get('gpus') else fp.get('cpu_model')
    t = Table(title=markup(f"measured ceilings on {dev} ({where}), hardware_id {fp['hardware_id']}"))
    t.add_column("ceiling")
    t.add_column("measured", justify="right")
    t.add_column("datasheet" + (f" ({prof.name})" if prof else ""), justify="right")
    t.add_column("how")
    for d, m in res["matmul"].items():
        ds = f"{prof.peak_flops(d) / 1e12:.1f} TFLOP/s" if prof and prof.has_dtype(d) else "-"
        val = f"{m['flops_per_s'] / 1e12:.2f} TFLOP/s" if m["flops_per_s"] else "failed"
        t.add_row(f"matmul {d}", val, ds, f"best shape {m.get('best_shape')}")
    mem = res["memory"]
    ds_bw = f"{prof.memory_bandwidth / 1e9:.0f} GB/s" if prof else "-"
    t.add_row("memory copy", f"{mem['copy_bytes_per_s'] / 1e9:.1f} GB/s", ds_bw, "read + write bytes")
    t.add_row("memory triad", f"{mem['triad_bytes_per_s'] / 1e9:.1f} GB/s", ds_bw, "read + write bytes")
    la = res["launch"]
    t.add_row("launch overhead", f"{la['launch_us']:.2f} us", "-",
              f"{la['launches_per_s']:,.0f}/s; round trip {la['round_trip_us']:.1f} us")
    if "host_device" in res:
        hd = res["host_device"]
        ds_link = f"{prof.link_bandwidth / 1e9:.0f} GB/s" if prof and prof.link_bandwidth else "-"
        t.add_row("host->device", f"{hd['h2d_bytes_per_s'] / 1e9:.1f} GB/s", ds_link, "pinned")
        t.add_row("device->host", f"{hd['d2h_bytes_per_s'] / 1e9:.1f} GB/s", ds_link, "pinned")
    console.print(t)
    console.print(f"stored as {cid} in {markup(store)} (threads: {res['torch_threads']})")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
