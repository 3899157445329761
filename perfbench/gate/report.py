"""What the gate and `perfbench compare` say: a short Markdown (PR comment, CI step summary),
JUnit XML (one test case per benchmark point, failures only for confirmed regressions) and JSON.

Names come from specs, so they are data: Markdown table cells are escaped (`|`, backticks,
brackets) and Rich markup is escaped in console tables.
"""

from __future__ import annotations

import json
import math
from typing import Any
from xml.sax.saxutils import escape as xml_escape

COLUMNS = ("benchmark", "metric", "median_base", "median_cand", "change_pct", "ci_low", "ci_high",
           "p_value", "cliffs_delta", "min_effect_pct", "min_effect_source", "verdict")


def md_cell(text: Any) -> str:
    """A Markdown table cell: pipes, backticks, brackets and newlines neutralised."""
    s = "" if text is None else str(text)
    for ch in ("\\", "|", "`", "[", "]", "<", ">", "*", "_"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def fmt_value(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if unit == "s":
        return f"{v * 1e3:.3f} ms" if v < 1 else f"{v:.3f} s"
    if unit == "tokens/s":
        return f"{v:,.0f} tok/s"
    if unit == "bytes":
        return f"{v / 2**20:.1f} MiB"
    return f"{v:,.4g}" + (f" {unit}" if unit else "")


def fmt_ci(row: dict) -> str:
    if row.get("ci_low") is None or row.get("ratio") is None:
        return "-"
    return f"{(row['ci_low'] - 1) * 100:+.1f}% .. {(row['ci_high'] - 1) * 100:+.1f}%"


def fmt_change(row: dict) -> str:
    return "-" if row.get("change_pct") is None or _nan(row["change_pct"]) else f"{row['change_pct']:+.1f}%"


def _nan(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def records(df) -> list[dict]:
    """DataFrame rows as plain dicts, NaN as None (JSON has no NaN)."""
    if df is None or df.empty:
        return []
    out = []
    for r in df.to_dict("records"):
        out.append({k: (None if _nan(v) else v) for k, v in r.items()})
    return out


def compare_markdown(df, summ: dict, title: str = "perfbench compare") -> str:
    """Every comparison as a Markdown table, then the geomean and what was left out."""
    lines = [f"### {md_cell(title)}", "",
             "| benchmark | metric | base | candidate | change | CI | p | min effect | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in records(df):
        lines.append(_md_row(r))
    lines.append("")
    lines.extend(summary_lines(summ))
    return "\n".join(lines) + "\n"


def _md_row(r: dict) -> str:
    p = "-" if r.get("p_value") is None else f"{r['p_value']:.2g}"
    return (f"| {md_cell(r['benchmark'])} | {md_cell(r['metric'])} | {fmt_value(r['median_base'], r['unit'])} | "
            f"{fmt_value(r['median_cand'], r['unit'])} | {fmt_change(r)} | {fmt_ci(r)} | {p} | "
            f"{r['min_effect_pct']:.1f}% ({md_cell(r['min_effect_source'])}) | **{r['verdict']}** |")


def summary_lines(summ: dict) -> list[str]:
    """The geomean lines per metric, shared by the Markdown report and `perfbench compare`."""
    out = []
    for metric, m in summ.get("metrics", {}).items():
        g = m["geomean_ratio"]
        counts = ", ".join(f"{n} {v}" for v, n in m["verdicts"].items() if n)
        out.append(f"- {md_cell(metric)}: geomean ratio {'-' if g is None else f'{g:.3f}'} over {m['points']} "
                   f"point(s) present on both sides ({counts})")
    for side in ("only_base", "only_candidate"):
        if summ.get(side):
            out.append(f"- left out, {side.replace('_', ' ')}: " + ", ".join(md_cell(x) for x in summ[side]))
    return out


def gate_markdown(result: dict) -> str:
    """The gate's summary: the verdict, what regressed, by how much, with what confidence, and the
    exact command that reproduces it. Short on purpose (a PR comment)."""
    regs = [r for r in result["comparisons"] if r.get("confirmed")]
    head = {0: "PASS", 1: "FAIL", 2: "ERROR (bad input)", 3: "ERROR (store)", 4: "ERROR (could not measure)"}
    status = head.get(result["exit_code"], "ERROR")
    n_reg = f": {len(regs)} confirmed regression(s)" if regs else ""
    subj = result.get("subject") or {}
    lines = [f"### perfbench gate {md_cell(result.get('suite'))}: {status}{n_reg}", "",
             f"Subject: {_subject_line(subj)}. Baseline: {md_cell(result.get('baseline_desc'))}. "
             f"Hardware `{md_cell(result.get('hardware_id'))}`.", ""]
    if regs:
        lines += ["| benchmark | metric | change | CI (%d%%) | p | min effect | confirmation |" % round(
            (1 - result.get("alpha", 0.01)) * 100), "|---|---|---:|---:|---:|---:|---:|"]
        for r in regs:
            lines.append(f"| {md_cell(r['benchmark'])} | {md_cell(r['metric'])} | {fmt_change(r)} | {fmt_ci(r)} | "
                         f"{r['p_value']:.2g} | {r['min_effect_pct']:.1f}% ({md_cell(r['min_effect_source'])}) | "
                         f"{r.get('confirm_change_pct', 0):+.1f}% |")
        lines.append("")
        lines.append("Reproduce:")
        lines.append("```")
        lines.extend(dict.fromkeys(r["reproduce"] for r in regs if r.get("reproduce")))
        lines.append("```")
    counts = {}
    for r in result["comparisons"]:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    if result["comparisons"]:
        lines.append(f"{len(result['comparisons'])} comparison(s): " + ", ".join(f"{n} {v}" for v, n in counts.items())
                     + ". A change below its minimum effect is never a regression; the minimum effect is the "
                       "larger of the threshold and the measured noise.")
    for note in result.get("notes", []):
        lines.append(f"- {md_cell(note)}")
    for err in result.get("errors", []):
        lines.append(f"- could not measure: {md_cell(err)}")
    return "\n".join(lines) + "\n"


def _subject_line(subj: dict) -> str:
    parts = [f"{k} `{md_cell(subj[k])}`" for k in ("branch", "commit", "ci_run_id", "engine_version") if subj.get(k)]
    return ", ".join(parts) or "not given"


def junit_xml(result: dict) -> str:
    """One test case per benchmark point; a failure only for a confirmed regression."""
    by_point: dict[str, list[dict]] = {}
    for r in result["comparisons"]:
        by_point.setdefault(r["benchmark"], []).append(r)
    n_fail = sum(any(r.get("confirmed") for r in rows) for rows in by_point.values())
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites><testsuite name="perfbench-gate {xml_escape(str(result.get("suite")), {chr(34): "&quot;"})}" '
           f'tests="{len(by_point)}" failures="{n_fail}" errors="{len(result.get("errors", []))}">']
    for bench, rows in by_point.items():
        wl = rows[0]["workload"]
        attr = {chr(34): "&quot;"}
        out.append(f'  <testcase classname="{xml_escape(str(wl), attr)}" name="{xml_escape(bench, attr)}">')
        for r in rows:
            if r.get("confirmed"):
                msg = f"{r['metric']} {fmt_change(r)} (CI {fmt_ci(r)}, p={r['p_value']:.2g}), confirmed"
                out.append(f'    <failure message="{xml_escape(msg, attr)}">{xml_escape(r.get("reproduce") or "")}</failure>')
        notes = "; ".join(f"{r['metric']}: {r['verdict']} ({r['reason']})" for r in rows)
        out.append(f"    <system-out>{xml_escape(notes)}</system-out>")
        out.append("  </testcase>")
    for err in result.get("errors", []):
        out.append(f'  <testcase classname="perfbench-gate" name="measure"><error message="{xml_escape(err, {chr(34): "&quot;"})}"/></testcase>')
    out.append("</testsuite></testsuites>")
    return "\n".join(out) + "\n"


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


def console_table(rows: list[dict], title: str):
    """A Rich table of comparisons, every spec-derived name escaped."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for col, just in (("benchmark", "left"), ("metric", "left"), ("base", "right"), ("candidate", "right"),
                      ("change", "right"), ("CI", "right"), ("p", "right"), ("Cliff d", "right"),
                      ("min effect", "right"), ("verdict", "left")):
        t.add_column(col, justify=just)
    colour = {"slower": "red", "faster": "green", "ambiguous": "yellow", "same": "dim"}
    for r in rows:
        v = r["verdict"] + (" (confirmed)" if r.get("confirmed") else "")
        t.add_row(escape(str(r["benchmark"])), escape(str(r["metric"])), fmt_value(r["median_base"], r["unit"]),
                  fmt_value(r["median_cand"], r["unit"]), fmt_change(r), fmt_ci(r),
                  "-" if r.get("p_value") is None else f"{r['p_value']:.2g}",
                  "-" if r.get("cliffs_delta") is None else f"{r['cliffs_delta']:+.2f}",
                  f"{r['min_effect_pct']:.1f}% {escape(str(r['min_effect_source']))}",
                  f"[{colour.get(r['verdict'], 'white')}]{escape(v)}[/]")
    return t
