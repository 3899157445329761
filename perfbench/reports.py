"""Turn what steps reported (`StepReport`) into result fields.

Why here and not in each backend: tokens/s from tokens really produced, and the pp/tg split in the
llama-bench sense, mean the same for every engine. A backend calls these from `summarize` and adds
only what is its own.

Engine counters use one convention so they can be compared with perfbench's clock: `n_pp` prompt
tokens in `t_pp_s` seconds, `n_tg` generated tokens in `t_tg_s` seconds, per step.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfbench.backends.base import Point, StepReport


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _rate(n: float | None, t: float | None) -> float | None:
    return n / t if n is not None and t and t > 0 else None


def tokens_fields(point: "Point", phase: str, reports: list["StepReport | None"],
                  latency_median_s: float) -> dict[str, Any]:
    """tokens_per_step / tokens_per_s (produced tokens where every step reported them), the pp/tg
    split where steps timed their parts, and the engine's own counters."""
    produced = [r.tokens_out for r in reports if r is not None and r.tokens_out is not None]
    if reports and len(produced) == len(reports):
        tokens, source = statistics.median(produced), "produced"
    else:
        tokens, source = point.tokens_per_step(phase), "requested"
    out: dict[str, Any] = {
        "tokens_per_step": int(round(tokens)), "tokens_source": source,
        "tokens_per_s": _rate(tokens, latency_median_s),
    }
    out.update(parts_fields(point, tokens, reports))
    out.update(engine_fields(reports))
    return out


def parts_fields(point: "Point", tokens_out: float, reports: list["StepReport | None"]) -> dict[str, Any]:
    """pp and tg medians and rates from the steps' own sub-timings (perfbench's clock)."""
    pp = _median([r.parts_s.get("pp") for r in reports if r is not None])
    tg = _median([r.parts_s.get("tg") for r in reports if r is not None])
    if pp is None and tg is None:
        return {}
    return {"pp_median_s": pp, "tg_median_s": tg,
            "pp_tokens_per_s": _rate(point.batch_size * point.seq_len, pp) if pp else None,
            "tg_tokens_per_s": _rate(tokens_out, tg) if tg else None}


def engine_fields(reports: list["StepReport | None"]) -> dict[str, Any]:
    """Median of each engine counter over the steps, and the engine's pp/tg rates computed as
    perfbench's are (median tokens / median time), so the two compare like for like."""
    keys = sorted({k for r in reports if r is not None for k in r.engine})
    if not keys:
        return {}
    med = {k: _median([r.engine.get(k) for r in reports if r is not None]) for k in keys}
    return {"engine_timings": med,
            "engine_pp_tokens_per_s": _rate(med.get("n_pp"), med.get("t_pp_s")),
            "engine_tg_tokens_per_s": _rate(med.get("n_tg"), med.get("t_tg_s"))}
