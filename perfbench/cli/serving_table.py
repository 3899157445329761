"""The serving table (`perfbench run` and `results show` of a phase-serve run): one row per load point."""

from __future__ import annotations

from perfbench.textsafe import markup


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:,.1f}"


def _num(x: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def serving_table(points: list[dict], title: str | None = None):
    from rich.table import Table

    t = Table(title=title)
    cols = ("load", "status", "n(fail)", "req/s", "tok/s", "goodput", "TTFT ms 50/90/99",
            "TPOT ms 50/99", "ITL ms 50/99", "E2E ms 50/90/99", "rate/target", "lag99 ms", "cpu", "valid")
    for c in cols:
        t.add_column(c, justify="left" if c in ("load", "status", "valid") else "right", no_wrap=True)
    notes = []
    for p in points:
        ok = p["status"] == "ok"
        valid = p.get("point_valid")
        if valid is False and p.get("invalid_reason"):
            notes.append(f"{p.get('load_point')}: {p['invalid_reason']}")
        target = p.get("target_rate_rps")
        t.add_row(
            markup(p.get("load_point") or f"b{p['batch_size']}"),
            "[green]ok[/]" if ok else f"[red]failed[/] {markup((p.get('error') or '')[:40])}",
            f"{p.get('n_requests') or 0} ({p.get('n_failed') or 0})" if ok else "-",
            _num(p.get("requests_per_s"), "{:,.2f}"), _num(p.get("output_tokens_per_s")),
            _num(p.get("goodput_rps"), "{:,.2f}"),
            "/".join(_ms(p.get(f"ttft_{q}_s")) for q in ("p50", "p90", "p99")),
            "/".join(_ms(p.get(f"tpot_{q}_s")) for q in ("p50", "p99")),
            "/".join(_ms(p.get(f"itl_{q}_s")) for q in ("p50", "p99")),
            "/".join(_ms(p.get(f"e2e_{q}_s")) for q in ("p50", "p90", "p99")),
            _num(p.get("achieved_rate_rps"), "{:,.2f}") + (f" / {target:g}" if target else ""),
            _ms(p.get("send_lag_p99_s")), _num(p.get("client_cpu_share"), "{:.0%}"),
            "-" if valid is None else ("[green]yes[/]" if valid else "[red]no[/]"),
        )
    srcs = sorted({p["token_source"] for p in points if p.get("token_source")})
    cap = ["tok/s: output tokens/s; goodput: requests/s within the SLO; E2E and TTFT from the scheduled send "
           "time; TPOT = (E2E - TTFT) / (output tokens - 1); lag99: client send lag p99; cpu: client event loop"]
    cap += [f"token counts: {markup(s)}" for s in srcs]
    cap += [f"invalid {markup(n)}" for n in notes]
    t.caption = "; ".join(cap)
    return t
