"""The result schema: what one measurement point holds, declared once.

Why one list: the store's columns, JSON, CSV, the tables and the sweep metrics are all derived from
`POINT_FIELDS`, as llama-bench derives its outputs from one field list. Adding a metric is one line
here (plus a store migration that adds its column), not edits across the code.

Each field has a name (its unit in the name: `_s`, `_bytes`, `_j`, `_w`), a type, a unit, whether
higher is better (None: not a metric to optimise or gate on) and a short description.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

#: Bump when the shape of a stored result row changes, so readers can tell rows apart.
RESULT_SCHEMA_VERSION = 2

Kind = Literal["int", "float", "str", "bool", "json"]
_SQL = {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bool": "INTEGER", "json": "TEXT"}


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    unit: str | None = None
    higher_is_better: bool | None = None
    doc: str = ""
    col: str | None = None

    @property
    def column(self) -> str:
        """JSON-typed fields are stored as text in `<name>_json`; the rest under their own name."""
        return self.col or (f"{self.name}_json" if self.kind == "json" else self.name)

    @property
    def sql_type(self) -> str:
        return _SQL[self.kind]

    @property
    def is_metric(self) -> bool:
        return self.higher_is_better is not None


def _f(name: str, kind: Kind, unit: str | None = None, better: bool | None = None, doc: str = "",
       col: str | None = None) -> Field:
    return Field(name, kind, unit, better, doc, col)


POINT_FIELDS: tuple[Field, ...] = (
    # what was measured
    _f("batch_size", "int", "sequences", doc="sequences per step"),
    _f("seq_len", "int", "tokens", doc="prompt length (decode: context length)"),
    _f("new_tokens", "int", "tokens", doc="tokens asked for per step (decode/generate)"),
    _f("status", "str", doc="ok | failed"),
    _f("error", "str", doc="why the point failed"),
    _f("traceback", "str", doc="where it failed (last frames)"),
    # latency over the measured iterations
    _f("latency_median_s", "float", "s", False, "median time of one step"),
    _f("latency_p10_s", "float", "s", False),
    _f("latency_p90_s", "float", "s", False),
    _f("latency_mean_s", "float", "s", False),
    _f("latency_stdev_s", "float", "s", False),
    _f("latency_cv", "float", None, False, "stdev / mean"),
    _f("latency_min_s", "float", "s", False),
    _f("latency_max_s", "float", "s", False),
    _f("n_samples", "int", doc="measured iterations"),
    _f("samples_s", "json", "s", doc="every measured step time", col="samples_json"),
    _f("warmup_s", "float", "s", doc="time spent warming up"),
    _f("capped", "str", doc="set when measure.max_seconds cut the point short"),
    # throughput, from tokens really processed or produced
    _f("tokens_per_step", "int", "tokens", doc="tokens one step processed (prefill) or produced (median)"),
    _f("tokens_per_s", "float", "tokens/s", True, "tokens_per_step / latency_median_s"),
    _f("tokens_source", "str", doc="requested | produced (counted from token ids) | engine"),
    _f("prompt_tokens", "int", "tokens", doc="real prompt tokens of one step, over the batch"),
    _f("pp_tokens_per_s", "float", "tokens/s", True, "prompt processing, perfbench's clock"),
    _f("tg_tokens_per_s", "float", "tokens/s", True, "token generation, perfbench's clock"),
    _f("pp_median_s", "float", "s", False, "median prompt-processing time of a step"),
    _f("tg_median_s", "float", "s", False, "median token-generation time of a step"),
    _f("engine_pp_tokens_per_s", "float", "tokens/s", True, "prompt processing, the engine's own counters"),
    _f("engine_tg_tokens_per_s", "float", "tokens/s", True, "token generation, the engine's own counters"),
    _f("engine_timings", "json", doc="the engine's own counters (median per step)"),
    _f("overhead_ratio", "float", None, False, "this backend's step time / a reference's (e.g. pipeline vs generate)"),
    _f("reference_median_s", "float", "s", doc="the reference's median step time behind overhead_ratio"),
    # memory
    _f("peak_memory_bytes", "int", "bytes", False),
    _f("memory_kind", "str", doc="cuda_max_allocated | peak_rss | nvml_device_used"),
    # energy over the measured iterations
    _f("energy_j", "float", "J", False, "energy of the measured iterations"),
    _f("power_avg_w", "float", "W", False),
    _f("energy_per_token_j", "float", "J/token", False),
    _f("idle_power_w", "float", "W", doc="baseline measured idle before the point"),
    _f("energy_method", "str", doc="nvml-counter | nvml-power-sampled | rapl | pi5-pmic"),
    _f("energy_resolution_j", "float", "J"),
    _f("energy_note", "str", doc="why energy is unavailable, or its caveats"),
    # backend facts of the point
    _f("context_len", "int", "tokens", doc="KV-cache length before the timed steps (decode)"),
    _f("kv_cache", "str", doc="static | dynamic"),
    # kernel trace of one extra iteration
    _f("trace_path", "str"),
    _f("trace_error", "str"),
    _f("trace_figures", "json", doc="per-run trace figures (TKLQT, utilisation, ...)"),
    _f("traced_span_us", "float", "us"),
    _f("timed_median_us", "float", "us"),
    _f("profiler_overhead_ratio", "float"),
    # serving (phase serve, docs/serving.md): one load point, measured per request
    _f("load_point", "str", doc="the load point's identity: c8 (closed loop), r2.5 or r2.5/c8 (open loop)"),
    _f("concurrency", "int", "requests", doc="closed loop: requests in flight; open loop: the cap"),
    _f("target_rate_rps", "float", "requests/s", doc="open loop: the rate asked for"),
    _f("achieved_rate_rps", "float", "requests/s", doc="measured requests really sent per second"),
    _f("n_requests", "int", "requests", doc="measured requests (warm-up and cool-down excluded)"),
    _f("n_failed", "int", "requests", False, "measured requests that failed"),
    _f("ttft_p50_s", "float", "s", False, "time to first token, from the scheduled time"),
    _f("ttft_p90_s", "float", "s", False),
    _f("ttft_p99_s", "float", "s", False),
    _f("tpot_p50_s", "float", "s", False, "(E2E - TTFT) / (output tokens - 1)"),
    _f("tpot_p90_s", "float", "s", False),
    _f("tpot_p99_s", "float", "s", False),
    _f("itl_p50_s", "float", "s", False, "gap between successive chunks carrying tokens"),
    _f("itl_p90_s", "float", "s", False),
    _f("itl_p99_s", "float", "s", False),
    _f("e2e_p50_s", "float", "s", False, "end-to-end latency from the scheduled time (client queueing included)"),
    _f("e2e_p90_s", "float", "s", False),
    _f("e2e_p99_s", "float", "s", False),
    _f("requests_per_s", "float", "requests/s", True, "successful measured requests per second"),
    _f("output_tokens_per_s", "float", "tokens/s", True, "output tokens of successful requests per second"),
    _f("goodput_rps", "float", "requests/s", True, "requests per second that met every SLO limit"),
    _f("send_lag_p99_s", "float", "s", False, "client: actual minus intended send time, p99"),
    _f("client_cpu_share", "float", "cores", doc="client event loop CPU time / wall time (1.0 = a core)"),
    _f("point_valid", "bool", doc="false when the client was the bottleneck (send lag, CPU)"),
    _f("invalid_reason", "str", doc="why the load point is not valid"),
    _f("input_tokens_mean", "float", "tokens", doc="mean prompt tokens per successful request"),
    _f("output_tokens_mean", "float", "tokens", doc="mean output tokens per successful request"),
    _f("token_source", "str", doc="where token counts came from: server-usage | engine-counters | local-tokenizer | chunks"),
)

FIELDS: dict[str, Field] = {f.name: f for f in POINT_FIELDS}
#: Plain (non-JSON) fields, in output order: what CSV and tables draw on.
SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in POINT_FIELDS if f.kind != "json")


def metrics() -> dict[str, str]:
    """Fields a sweep may optimise or a gate compare: name -> 'maximize' | 'minimize'."""
    return {f.name: "maximize" if f.higher_is_better else "minimize" for f in POINT_FIELDS if f.is_metric}


class SchemaError(ValueError):
    """A point carries a key the schema does not know, or a value of the wrong type."""


def check_point(point: dict[str, Any]) -> dict[str, Any]:
    """Validate a point against the schema: every key known, every value of its kind (None allowed).

    Why strict: an unknown key is a field someone forgot to declare, which would otherwise vanish
    from CSV, tables and sweeps."""
    unknown = sorted(set(point) - set(FIELDS))
    if unknown:
        raise SchemaError(f"point fields not in perfbench.schema.POINT_FIELDS: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, value in point.items():
        out[name] = coerce_value(FIELDS[name], value)
    return out


def coerce_value(f: Field, v: Any) -> Any:
    """A stored or imported value as its field's kind (the import checks it round-trips)."""
    if v is None or f.kind == "json":
        return v
    if f.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise SchemaError(f"{f.name}: expected an integer, got {v!r}")
        if not -(2**63) <= v < 2**63:
            raise SchemaError(f"{f.name}: {v} does not fit in 64 bits")
        return v
    if f.kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SchemaError(f"{f.name}: expected a number, got {v!r}")
        return float(v) if math.isfinite(v) else None
    if f.kind == "bool":
        return bool(v)
    return str(v)


def to_columns(point: dict[str, Any]) -> dict[str, Any]:
    """A checked point as store column values (JSON fields serialised)."""
    p = check_point(point)
    return {FIELDS[k].column: (json.dumps(v, default=str) if FIELDS[k].kind == "json" and v is not None else v)
            for k, v in p.items()}


def from_row(row: Any, columns: set[str]) -> dict[str, Any]:
    """A point dict from a store row. A damaged value (invalid JSON, text in a number column)
    reads as None and is named in `damaged`, so one bad row never breaks a whole listing."""
    out: dict[str, Any] = {}
    damaged = []
    for f in POINT_FIELDS:
        v = row[f.column] if f.column in columns else None
        try:
            v = json.loads(v) if f.kind == "json" and v is not None else coerce_value(f, v)
        except (SchemaError, ValueError, TypeError):
            v = None
            damaged.append(f.name)
        out[f.name] = v
    if not isinstance(out.get("samples_s"), list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in out["samples_s"]):
        if out.get("samples_s") is not None:
            damaged.append("samples_s")
        out["samples_s"] = []
    out["damaged"] = damaged
    return out
