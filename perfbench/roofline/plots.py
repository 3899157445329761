"""Roofline and latency-vs-batch plots: static (matplotlib: PNG and SVG) and plotly (dashboard).

Both take plain data (the rows of `place_run` and a ceilings mapping), so the dashboard and the
CLI draw the same thing. Ceilings: {"datasheet": {"peak": F, "bandwidth": B}, "measured": {...}}
with either entry optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def roof(peak: float, bw: float, xs: np.ndarray) -> np.ndarray:
    """Attainable FLOP/s at arithmetic intensities `xs`: min(peak, intensity x bandwidth)."""
    return np.minimum(peak, xs * bw)


def x_range(rows: list[dict], ceilings: dict) -> np.ndarray:
    """Intensities to draw roofs over: every point's and every ridge's, with room on both sides."""
    ais = [r["arithmetic_intensity"] for r in rows if r.get("arithmetic_intensity")]
    ais += [o["arithmetic_intensity"] for r in rows for o in r.get("ops", []) + r.get("operators", [])
            if o.get("arithmetic_intensity")]
    ridges = [c["peak"] / c["bandwidth"] for c in ceilings.values() if c]
    lo = min(ais + ridges + [1.0]) / 4
    hi = max(ais + ridges + [10.0]) * 4
    return np.logspace(np.log10(lo), np.log10(hi), 200)


def roofline_matplotlib(rows: list[dict], ceilings: dict, title: str = ""):
    """Log-log roofline with ceilings, workload points coloured by batch size and op-type points."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # names are data: a `$` is a dollar sign
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = x_range(rows, ceilings)
    styles = {"datasheet": dict(ls="--", color="0.45"), "measured": dict(ls="-", color="black")}
    for name, c in ceilings.items():
        if c:
            ax.plot(xs, roof(c["peak"], c["bandwidth"], xs), lw=1.8,
                    label=f"{name}: {c['peak'] / 1e12:.1f} TFLOP/s, {c['bandwidth'] / 1e9:.0f} GB/s",
                    **styles.get(name, {}))
    cmap = plt.get_cmap("viridis")
    n = max(len(rows) - 1, 1)
    for i, r in enumerate(rows):
        col = cmap(i / n)
        ax.scatter(r["arithmetic_intensity"], r["achieved_flops_per_s"], s=70, color=col, edgecolor="k",
                   zorder=3, label=f"workload b{r['batch_size']} ({r['roof_share'] * 100:.0f}% of roof)")
        for o in r.get("ops", []):
            if o.get("achieved_flops_per_s"):
                ax.scatter(o["arithmetic_intensity"], o["achieved_flops_per_s"], s=30, color=col,
                           marker={"matmul": "s", "attention": "^", "embedding": "D"}.get(o["op_type"], "x"),
                           zorder=2)
        for k, o in enumerate(r.get("operators", [])):  # each projection, by its recorded weight shape
            if o.get("achieved_flops_per_s"):
                ax.scatter(o["arithmetic_intensity"], o["achieved_flops_per_s"], s=18, color=col,
                           marker="P", alpha=0.8, zorder=2)
                if i == len(rows) - 1:  # name them once, at the largest batch
                    ax.annotate(o["op"], (o["arithmetic_intensity"], o["achieved_flops_per_s"]),
                                fontsize=6, xytext=(6, -9 * k - 12), textcoords="offset points",
                                arrowprops=dict(arrowstyle="-", lw=0.3, color="0.5"))
    if any(r.get("ops") for r in rows):
        for m, lab in (("s", "matmul"), ("^", "attention"), ("x", "element-wise"), ("D", "embedding")):
            ax.scatter([], [], marker=m, color="0.3", label=f"op type: {lab}")
    if any(r.get("operators") for r in rows):
        ax.scatter([], [], marker="P", color="0.3", label="projection (by weight shape)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def latency_matplotlib(rows: list[dict], title: str = ""):
    """Measured latency per batch with the roofline floor, CPU overhead and remainder stacked under."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # names are data: a `$` is a dollar sign
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.arange(len(rows))
    floor = np.array([r["floor_s"] * 1e3 for r in rows])
    cpu = np.array([(r["cpu_overhead_s"] or 0.0) * 1e3 for r in rows])
    rem = np.array([(r["remainder_s"] or 0.0) * 1e3 for r in rows])
    ax.bar(x, floor, color="#4c72b0", label="roofline floor")
    ax.bar(x, cpu, bottom=floor, color="#dd8452", label="CPU launch overhead (host-wait idle)")
    ax.bar(x, rem, bottom=floor + cpu, color="#cccccc", label="remainder")
    ax.plot(x, [r["latency_median_s"] * 1e3 for r in rows], "k.-", label="measured median")
    ax.set_xticks(x, [str(r["batch_size"]) for r in rows])
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.25)
    fig.tight_layout()
    return fig


def save(fig, out_stem: Path) -> list[Path]:
    """Write PNG and SVG next to each other; return the paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_stem.with_suffix(f".{ext}")
        fig.savefig(p, dpi=130)
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def roofline_plotly(rows: list[dict], ceilings: dict, title: str = "") -> Any:
    """The same roofline as a plotly Figure (needs the `dashboard` extra)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    xs = x_range(rows, ceilings)
    for name, c in ceilings.items():
        if c:
            fig.add_trace(go.Scatter(x=xs, y=roof(c["peak"], c["bandwidth"], xs), mode="lines", name=name,
                                     line=dict(dash="dash" if name == "datasheet" else "solid")))
    fig.add_trace(go.Scatter(
        x=[r["arithmetic_intensity"] for r in rows], y=[r["achieved_flops_per_s"] for r in rows],
        mode="markers+text", text=[f"b{r['batch_size']}" for r in rows], textposition="top center",
        marker=dict(size=11, color=[r["batch_size"] for r in rows], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="batch")),
        name="workload", customdata=[[r["roof_share"] * 100] for r in rows],
        hovertemplate="AI %{x:.1f} FLOP/B<br>%{y:.3s}FLOP/s<br>%{customdata[0]:.0f}% of roof"))
    ops = [(r["batch_size"], o) for r in rows for o in r.get("ops", []) if o.get("achieved_flops_per_s")]
    if ops:
        fig.add_trace(go.Scatter(x=[o["arithmetic_intensity"] for _, o in ops],
                                 y=[o["achieved_flops_per_s"] for _, o in ops], mode="markers",
                                 text=[f"{o['op_type']} b{b}" for b, o in ops], name="op types",
                                 marker=dict(symbol="square", size=7)))
    projs = [(r["batch_size"], o) for r in rows for o in r.get("operators", []) if o.get("achieved_flops_per_s")]
    if projs:
        fig.add_trace(go.Scatter(x=[o["arithmetic_intensity"] for _, o in projs],
                                 y=[o["achieved_flops_per_s"] for _, o in projs], mode="markers",
                                 text=[f"{o['op']} b{b}" for b, o in projs], name="projections",
                                 marker=dict(symbol="cross", size=7),
                                 hovertemplate="%{text}<br>AI %{x:.1f} FLOP/B<br>%{y:.3s}FLOP/s"))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP/byte)")
    fig.update_yaxes(type="log", title="FLOP/s")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def latency_plotly(rows: list[dict], title: str = "") -> Any:
    """Latency vs batch with the floor / CPU overhead / remainder stack, as a plotly Figure."""
    import plotly.graph_objects as go

    b = [str(r["batch_size"]) for r in rows]
    fig = go.Figure()
    fig.add_bar(x=b, y=[r["floor_s"] * 1e3 for r in rows], name="roofline floor")
    fig.add_bar(x=b, y=[(r["cpu_overhead_s"] or 0) * 1e3 for r in rows], name="CPU launch overhead")
    fig.add_bar(x=b, y=[(r["remainder_s"] or 0) * 1e3 for r in rows], name="remainder")
    fig.add_trace(go.Scatter(x=b, y=[r["latency_median_s"] * 1e3 for r in rows], name="measured median",
                             mode="lines+markers", line=dict(color="black")))
    fig.update_layout(barmode="stack", title=title, xaxis_title="batch size", yaxis_title="latency (ms)",
                      template="plotly_white")
    return fig
