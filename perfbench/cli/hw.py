"""`perfbench hw`: detect this machine, list and show hardware profiles (datasheet ceilings)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from perfbench.cli._console import console, print_json

if TYPE_CHECKING:
    from perfbench.hardware.profile import HardwareProfile

app = typer.Typer(
    help="Hardware: detect this machine, list profiles, show a profile's ceilings and their sources.",
    no_args_is_help=True,
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


_FORMAT_HELP = "table (for people) or json (for tools)."


# --------------------------------------------------------------------------------------------------
# Hook for measured ceilings
# --------------------------------------------------------------------------------------------------


def measured_ceilings_for(profile_name: str, store: Path | None = None) -> dict | None:
    """Measured ceilings (`perfbench calibrate`) for a profile, shown beside the datasheet numbers:
    the newest calibration in `store` whose hardware matches `profile_name`, or None.

    Shape: {"dense_flops": {"bfloat16": 7.1e14, ...}, "memory_bandwidth": 3.0e12,
    "link_bandwidth": 5.5e10 (optional), "source": "..."}; keys may be missing, and `hw show`
    displays whatever is there and never invents numbers.
    """
    from perfbench.roofline.ceilings import measured_for_profile
    from perfbench.store import DEFAULT_STORE

    return measured_for_profile(store or DEFAULT_STORE, profile_name)


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    gib = value / 1024**3
    return f"{gib:.4g} GiB" if gib >= 1 else f"{value / 1024**2:.4g} MiB"


def _flops(profile: HardwareProfile, dtype: str) -> float | None:
    entry = getattr(profile.dense_flops, dtype)
    return float(entry.value) if entry is not None else None


def _rate_unit(dtype: str) -> str:
    return "OP/s" if dtype.startswith("int") else "FLOP/s"


def _txt(s: Any):
    from rich.text import Text

    from perfbench.textsafe import plain

    return Text("-" if s is None else plain(s))


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


@app.command("detect")
def detect(
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help=_FORMAT_HELP),
) -> None:
    """Fingerprint this machine (CPU, memory, GPUs, driver, versions) and find its profile."""
    from perfbench.hardware.detect import fallback_profile, fingerprint, match_profile

    fp = fingerprint()
    profile = match_profile(fp)
    fallback = None if profile is not None else fallback_profile(fp)
    on = None
    if profile is not None:
        on = "gpu_name" if fp["gpus"] else "cpu_model"
    if fmt == OutputFormat.json:
        print_json({
            "fingerprint": fp,
            "profile": profile.name if profile else None,
            "matched_on": on,
            "fallback": fallback.name if fallback else None,
        })
        return

    from rich.table import Table

    t = Table(title="This machine", show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value")
    for key, value in fp.items():
        if key == "gpus":
            continue
        if key == "memory_total_bytes":
            value = f"{_bytes(value)} ({value} bytes)" if value else None
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or None
        t.add_row(key, _txt(value))
    console.print(t)
    if fp["gpus"]:
        g = Table(title="GPUs", title_justify="left")
        for col in ("index", "name", "memory", "driver", "uuid"):
            g.add_column(col)
        for gpu in fp["gpus"]:
            g.add_row(_txt(gpu.get("index")), _txt(gpu.get("name")),
                      _txt(_bytes(gpu.get("memory_total_bytes"))), _txt(gpu.get("driver")),
                      _txt(gpu.get("uuid")))
        console.print(g)
        names = {gpu.get("name") for gpu in fp["gpus"]}
        if len(names) > 1:
            console.print("[yellow]note:[/] GPUs of different kinds; matched on GPU 0 only.")

    if profile is not None:
        console.print(f"[bold green]profile:[/] {profile.name} (matched on {on}) - ", end="")
        console.print(_txt(profile.description))
    else:
        what = (f"GPU {fp['gpus'][0].get('name')!r}" if fp["gpus"]
                else f"cpu_model {fp.get('cpu_model')!r}")
        console.print("[bold yellow]profile:[/] no hardware profile matches this machine ", end="")
        console.print(_txt(f"({what})."))
        if fallback is not None:
            console.print(f"fallback: {fallback.name} - conservative assumptions, not this machine's "
                          "datasheet; measure real ceilings before trusting a roofline built on it.")
        else:
            console.print("fallback: none for this architecture; add a profile to hw_profiles/.")


@app.command("list")
def list_(
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help=_FORMAT_HELP),
) -> None:
    """List the hardware profiles with their headline ceilings."""
    from perfbench.hardware.profile import list_profiles, profiles_dir

    profiles = list_profiles()
    if fmt == OutputFormat.json:
        print_json([
            {
                "name": p.name,
                "kind": p.kind,
                "description": p.description,
                "bfloat16_peak_flops": _flops(p, "bfloat16"),
                "float32_peak_flops": _flops(p, "float32"),
                "dense_flops": {d: p.peak_flops(d) for d in p.dtypes},
                "memory_bandwidth": p.memory_bandwidth,
                "memory_capacity": p.memory_capacity,
                "link_bandwidth": p.link_bandwidth,
            }
            for p in profiles
        ])
        return

    from rich.table import Table

    from rich import box

    t = Table(title=f"Hardware profiles ({profiles_dir()})", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False)
    num = {"justify": "right", "no_wrap": True}
    wide = console.width >= 110  # on narrow terminals descriptions go below the table
    for col, kw in (("name", {"style": "bold", "no_wrap": True}), ("kind", {"no_wrap": True}),
                    ("bf16 peak", num), ("fp32 peak", num), ("mem BW", num), ("memory", num)):
        t.add_column(col, **kw)
    if wide:
        t.add_column("description", ratio=1, min_width=24)
    for p in profiles:
        cells = [_txt(p.name), p.kind, _si(_flops(p, "bfloat16"), "FLOP/s"),
                 _si(_flops(p, "float32"), "FLOP/s"), _si(p.memory_bandwidth, "B/s"),
                 _bytes(p.memory_capacity)]
        t.add_row(*cells, *([_txt(p.description)] if wide else []))
    console.print(t)
    if not wide:
        for p in profiles:
            console.print(f"[bold]{p.name}[/]: ", end="")
            console.print(_txt(p.description))
    console.print("[dim]Peaks are dense (no sparsity). `perfbench hw show NAME` gives every number "
                  "with its source.[/]")


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Profile name (see `perfbench hw list`) or a YAML file path."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help=_FORMAT_HELP),
    store: Path = typer.Option(Path("results") / "perfbench.sqlite", "--store",
                               help="Results database holding `perfbench calibrate` runs."),
) -> None:
    """Show every field of a profile with its source, and measured ceilings when there are any."""
    from perfbench.hardware.profile import DTYPES, load_profile

    p = load_profile(name)
    measured = measured_ceilings_for(p.name, store)
    if fmt == OutputFormat.json:
        print_json({**p.model_dump(mode="json"), "measured_ceilings": measured})
        return

    from rich.table import Table

    console.print(f"[bold]{p.name}[/] ({p.kind}) - ", end="")
    console.print(_txt(p.description))
    t = Table(show_lines=False)
    t.add_column("field", style="bold", no_wrap=True, min_width=20)
    t.add_column("datasheet", justify="right", max_width=24)
    if measured:
        t.add_column("measured", justify="right", no_wrap=True)
    t.add_column("source", ratio=1, min_width=24)

    m_flops = (measured or {}).get("dense_flops") or {}

    def row(field: str, value: str, source: str | None, peak: float | None = None,
            meas: float | None = None, unit: str = "") -> None:
        cells = [_txt(field), _txt(value)]
        if measured:
            if meas is None:
                cells.append(_txt("-"))
            else:
                pct = f" ({100 * meas / peak:.0f}%)" if peak else ""
                cells.append(_txt(_si(meas, unit) + pct))
        cells.append(_txt(source or ""))
        t.add_row(*cells)

    for d in DTYPES:
        e = getattr(p.dense_flops, d)
        if e is not None:
            u = _rate_unit(d)
            row(f"dense {d}", _si(e.value, u), e.source, e.value, m_flops.get(d), u)
        elif d in m_flops:  # measured here, no datasheet figure: still worth seeing
            row(f"dense {d}", "-", "no datasheet figure", None, m_flops[d], _rate_unit(d))
    t.add_section()
    mem = p.memory
    row("memory type", mem.type, None)
    row("memory bandwidth", _si(mem.bandwidth.value, "B/s"), mem.bandwidth.source,
        mem.bandwidth.value, (measured or {}).get("memory_bandwidth"), "B/s")
    row("memory capacity", _bytes(mem.capacity.value), mem.capacity.source)
    t.add_section()
    row("host cpu", p.host.cpu_model, None)
    if p.host.cores is not None:
        row("host cores", str(p.host.cores.value), p.host.cores.source)
    if p.host.memory is not None:
        hm = p.host.memory
        row("host memory type", hm.type, None)
        row("host memory bandwidth", _si(hm.bandwidth.value, "B/s"), hm.bandwidth.source)
        row("host memory capacity", _bytes(hm.capacity.value), hm.capacity.source)
    t.add_section()
    row("link type", p.link.type, None)
    if p.link.pcie_gen is not None:
        row("pcie gen", str(p.link.pcie_gen.value), p.link.pcie_gen.source)
    if p.link.pcie_lanes is not None:
        row("pcie lanes", f"x{p.link.pcie_lanes.value}", p.link.pcie_lanes.source)
    if p.link.bandwidth is not None:
        row("link bandwidth/dir", _si(p.link.bandwidth.value, "B/s"), p.link.bandwidth.source,
            p.link.bandwidth.value, (measured or {}).get("link_bandwidth"), "B/s")
    if measured and measured.get("launch_us"):
        t.add_row(_txt("kernel launch"), _txt("-"), _txt(f"{measured['launch_us']:.2f} us"),
                  _txt("measured only: a null kernel's launch call"))
    t.add_section()
    if p.tdp_watts is not None:
        row("tdp", f"{p.tdp_watts.value:g} W", p.tdp_watts.source)
    if p.match.gpu_name:
        row("match gpu_name", p.match.gpu_name, "regex, case-insensitive")
    if p.match.cpu_model:
        row("match cpu_model", p.match.cpu_model, "regex, case-insensitive")
    if p.match.cpu_cores_logical:
        row("match cpu_cores_logical", ", ".join(map(str, p.match.cpu_cores_logical)), None)
    if not (p.match.gpu_name or p.match.cpu_model):
        row("match", "none", "never matched by detection (fallback only)")
    console.print(t)
    if p.notes:
        console.print(_txt(p.notes))
    if measured:
        console.print(_txt(f"measured: {measured.get('source', 'results store')}"))
    else:
        console.print("[dim]measured ceilings: none recorded for this profile yet.[/]")
