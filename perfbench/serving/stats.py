"""A load point's result fields (perfbench.schema) from its request records.

Definitions (docs/serving.md):
- E2E = done - scheduled (client queueing included); TTFT = first token chunk - scheduled.
- TPOT = (E2E - TTFT) / (output tokens - 1), per request with at least 2 output tokens (vLLM's
  definition; GenAI-Perf/GuideLLM differ in what they divide by).
- ITL = gaps between successive chunks carrying tokens, pooled over requests (a chunk with several
  tokens counts once, as in vLLM's bench).
- Only `measured` requests count: warm-up and cool-down requests are stored but excluded.
- The window is from the first measured request's scheduled time to the last one's completion;
  requests/s, output tokens/s and goodput are per second of that window.
- goodput: measured requests that succeeded and met every SLO limit given, per second.
"""

from __future__ import annotations

import math
from typing import Any

from perfbench.serving.client import RequestRecord
from perfbench.serving.loadgen import LoadPlan, LoadResult
from perfbench.stats import percentile


def _pcts(name: str, xs: list[float]) -> dict[str, float | None]:
    xs = sorted(xs)
    return {f"{name}_{q}_s": (percentile(xs, float(q[1:])) if xs else None) for q in ("p50", "p90", "p99")}


def point_fields(plan: LoadPlan, res: LoadResult, slo: dict[str, float | None], *,
                 send_lag_limit_s: float, cpu_limit: float) -> dict[str, Any]:
    measured = [r for r in res.records if r.role == "measured"]
    ok = [r for r in measured if r.status == "ok"]
    e2e = [r.e2e_s for r in ok if r.e2e_s is not None]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot, itl = [], []
    for r in ok:
        n = r.output_tokens or len(r.token_times_s)
        if n > 1 and r.ttft_s is not None and r.e2e_s is not None:
            tpot.append((r.e2e_s - r.ttft_s) / (n - 1))
        tt = r.token_times_s
        itl.extend(b - a for a, b in zip(tt, tt[1:]))
    lags = sorted(r.sent_s - r.ready_s for r in res.records if r.sent_s is not None and r.ready_s is not None)
    starts = [r.scheduled_s for r in measured if r.scheduled_s is not None]
    ends = [r.done_s for r in measured if r.done_s is not None]
    window = (max(ends) - min(starts)) if starts and ends else 0.0
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    good = [r for r in ok if _meets(r, slo)]
    sent = sorted(r.sent_s for r in measured if r.sent_s is not None)
    achieved = ((len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0]
                else (len(measured) / window if window else None))
    in_tok = [r.input_tokens for r in ok if r.input_tokens is not None]
    out_tok = [r.output_tokens for r in ok if r.output_tokens is not None]
    row: dict[str, Any] = {
        "load_point": plan.label, "concurrency": plan.concurrency,
        "target_rate_rps": plan.rate_rps if plan.mode == "open" else None,
        "achieved_rate_rps": achieved,
        "n_requests": len(measured), "n_failed": len(measured) - len(ok),
        **_pcts("ttft", ttft), **_pcts("tpot", tpot), **_pcts("itl", itl), **_pcts("e2e", e2e),
        "requests_per_s": len(ok) / window if window > 0 else None,
        "output_tokens_per_s": out_tokens / window if window > 0 and out_tok else None,
        "goodput_rps": len(good) / window if window > 0 else None,
        "send_lag_p99_s": percentile(lags, 99) if lags else None,
        "client_cpu_share": res.cpu_share,
        "input_tokens_mean": sum(in_tok) / len(in_tok) if in_tok else None,
        "output_tokens_mean": sum(out_tok) / len(out_tok) if out_tok else None,
        "token_source": _sources(ok),
        "samples_s": e2e,
        "tokens_source": "produced",
    }
    problems = []
    if row["send_lag_p99_s"] is not None and row["send_lag_p99_s"] > send_lag_limit_s:
        problems.append(f"client send lag p99 {row['send_lag_p99_s'] * 1e3:.1f} ms > "
                        f"{send_lag_limit_s * 1e3:g} ms: the client was the bottleneck")
    if res.cpu_share > cpu_limit:
        problems.append(f"client event loop used {res.cpu_share:.0%} of a core (limit {cpu_limit:.0%}): "
                        "the client was the bottleneck; spread the load (load.client_processes)")
    if plan.mode == "open" and res.scheduled_rate_rps and achieved and not plan.concurrency:
        if achieved < 0.95 * res.scheduled_rate_rps:
            problems.append(f"sends fell behind the schedule: {achieved:.3g} req/s achieved vs "
                            f"{res.scheduled_rate_rps:.3g} scheduled")
    if res.interrupted:
        problems.append("interrupted")
    row["point_valid"] = not problems
    row["invalid_reason"] = "; ".join(problems) or None
    return row


def _meets(r: RequestRecord, slo: dict[str, float | None]) -> bool:
    lim = {k: v for k, v in slo.items() if v is not None}
    if "ttft_ms" in lim and (r.ttft_s is None or r.ttft_s * 1e3 > lim["ttft_ms"]):
        return False
    if "e2e_ms" in lim and (r.e2e_s is None or r.e2e_s * 1e3 > lim["e2e_ms"]):
        return False
    if "tpot_ms" in lim:
        n = r.output_tokens or len(r.token_times_s)
        if n > 1 and r.ttft_s is not None and r.e2e_s is not None:
            if (r.e2e_s - r.ttft_s) / (n - 1) * 1e3 > lim["tpot_ms"]:
                return False
    return True


def _sources(ok: list[RequestRecord]) -> str | None:
    """`input:<source>, output:<source>` where every request agrees, else the mix."""
    def one(attr: str) -> str:
        s = sorted({getattr(r, attr) or "unknown" for r in ok})
        return "+".join(s) if s else "none"

    return f"input:{one('input_tokens_source')}, output:{one('output_tokens_source')}" if ok else None


def finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
