"""Input shapes of selected host operators (`record_shapes=True` traces), read on demand.

The fast parser (`parse.py`) keeps no event arguments: the analyses that run on every trace do not
need them, and a million-event trace would pay for them. Placing operators on the roofline does
need the shapes of a few operators (`aten::linear` and friends), so they are read here, by a second
pass over the file, only for the host rows asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from perfbench.trace.events import id_value, safe_loads
from perfbench.trace.parse import Trace
from perfbench.trace.textio import open_text


def input_dims(trace: Trace, rows: Iterable[int]) -> dict[int, list[Any]]:
    """`args["Input Dims"]` of the given rows of `trace.host` (cpu_op events), keyed by row; rows
    whose event has no shapes (a trace without record_shapes) are left out."""
    rows = sorted({int(r) for r in rows if r >= 0})
    if not rows:
        return {}
    host = trace.host
    names = host["name"].astype(str).to_numpy()[rows]
    ts = host["ts_us"].to_numpy()[rows]
    pid = host["pid"].to_numpy()[rows]
    tid = host["tid"].to_numpy()[rows]
    want = {(str(n), int(p), int(t), float(x)): r for n, p, t, x, r in zip(names, pid, tid, ts, rows)}
    wanted_names = set(map(str, names))
    raw = b"".join(open_text(Path(trace.path)))  # the parser's reader: gzip by magic, size limit, clear errors
    try:
        doc = safe_loads(raw)  # never a crash on deep nesting (the trace itself parsed, so this is rare)
    except ValueError:
        return {}
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc if isinstance(doc, list) else []
    out: dict[int, list[Any]] = {}
    for e in events:
        if not isinstance(e, dict) or e.get("ph") != "X" or not isinstance(e.get("name"), str) or e["name"] not in wanted_names:
            continue
        args = e.get("args")
        dims = args.get("Input Dims") if isinstance(args, dict) else None
        if dims is None:
            continue
        try:
            key = (e["name"], id_value(e.get("pid")), id_value(e.get("tid")), float(e["ts"]) - trace.t0_us)
        except (TypeError, ValueError, KeyError, OverflowError):
            continue
        r = want.get(key)
        if r is not None:
            out[r] = dims
    return out


def linear_weight_shape(op_name: str, dims: list[Any]) -> tuple[int, int] | None:
    """(in_features, out_features) of a matmul from its recorded input shapes: aten::linear /
    addmm / mm / matmul. None when the shapes do not say."""
    try:
        if op_name == "aten::linear":  # (input, weight[out, in], bias)
            out_f, in_f = dims[1]
            return int(in_f), int(out_f)
        if op_name == "aten::addmm":  # (bias, x[m, k], w[k, n])
            k, n = dims[2]
            return int(k), int(n)
        if op_name in ("aten::mm", "aten::matmul"):  # (x[..., k], w[k, n])
            k, n = dims[1][-2:]
            return int(k), int(n)
    except (IndexError, TypeError, ValueError):
        return None
    return None
