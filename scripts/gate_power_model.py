"""The numbers docs/ci.md derives from scripts/bench_gate.py's saved figures, recomputed.

Power figure (results/bench_gate/power.json, or a copy of it): per variant, the SD of every
interleaved measurement (each trial's `ratio` and `confirm_ratio`), the model's power
Phi((size - min effect) / SD)^2 at the measured size and at +5% (a trial is caught only when both
of its measurements clear the minimum effect), the size where that model crosses 95%, and a 95%
Clopper-Pearson interval on the measured detection rate.

A/A figure (results/bench_gate/aa.json): the interleaved false-positive rate's one-sided 95%
upper bound (Clopper-Pearson), and how far each interleaved A/A comparison's interval reached (perfbench.gate.stats.aa_far_end, what `gate calibrate --interleave` stores as the noise
floor), as median, 90th percentile and maximum.

    .venv/bin/python scripts/gate_power_model.py results/bench_gate/power.json results/bench_gate/aa.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from perfbench.gate.stats import aa_far_end

MAX_BYTES = 64 << 20  # bench_gate's JSON is a few hundred KiB
RATIO_RANGE = (1e-3, 1e3)


class BadFile(Exception):
    """A file this script cannot read as a bench_gate figure: the message names file and field."""


def _ratio(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not RATIO_RANGE[0] <= value <= RATIO_RANGE[1]:
        raise BadFile(f"{where}: expected a ratio between {RATIO_RANGE[0]:g} and {RATIO_RANGE[1]:g}, got {value!r:.40}")
    return float(value)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    tail = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return lo, hi


def power_model(doc: dict, name: str) -> list[dict]:
    """Per variant: the measured rate, its interval, and the two-measurement model's power."""
    from scipy.stats import norm

    min_effect = doc.get("min_effect")
    if isinstance(min_effect, bool) or not isinstance(min_effect, (int, float)) or not 0 <= min_effect < 1:
        raise BadFile(f"{name}: min_effect: expected a fraction in [0, 1), got {min_effect!r:.40}")
    variants = doc.get("variants")
    if not isinstance(variants, list) or not variants:
        raise BadFile(f"{name}: variants: expected a non-empty list of interleaved power variants")
    out = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict):
            raise BadFile(f"{name}: variants[{i}]: expected an object")
        seq_len = v.get("seq_len")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= 1_000_000:
            raise BadFile(f"{name}: variants[{i}].seq_len: expected a whole number of tokens, 1 .. 1000000")
        trials = v.get("trials")
        if not isinstance(trials, list) or not trials:
            raise BadFile(f"{name}: variants[{i}].trials: expected a non-empty list (an interleaved power run)")
        where = f"{name}: variants[{i}].trials"
        firsts = [_ratio(t.get("ratio") if isinstance(t, dict) else None, f"{where}[{j}].ratio") for j, t in enumerate(trials)]
        confirms = [_ratio(t["confirm_ratio"], f"{where}[{j}].confirm_ratio")
                    for j, t in enumerate(trials) if t.get("confirm_ratio") is not None]
        caught = sum(bool(t.get("confirmed")) for t in trials)
        pts = [(r - 1) * 100 for r in firsts + confirms]
        if len(pts) < 2:
            raise BadFile(f"{where}: too few measurements for an SD")
        sd, size, floor = statistics.stdev(pts), (statistics.median(firsts) - 1) * 100, min_effect * 100

        def model(s: float) -> float:
            return float(norm.cdf((s - floor) / sd)) ** 2 if sd > 0 else float(s > floor)

        cross = floor + sd * float(norm.ppf(math.sqrt(0.95)))  # where Phi(z)^2 reaches 0.95
        out.append({"seq_len": seq_len, "trials": len(trials), "detected": caught,
                    "detected_ci95": clopper_pearson(caught, len(trials)), "size_pct": size,
                    "measurements": len(pts), "measurement_sd_pct": sd, "modelled_power": model(size),
                    "modelled_power_at_5pct": model(5.0), "modelled_95pct_size_pct": cross})
    return out


def aa_floor(doc: dict, name: str) -> dict:
    rows = (doc.get("interleaved") or {}).get("rows") if isinstance(doc.get("interleaved"), dict) else None
    if not isinstance(rows, list) or not rows:
        raise BadFile(f"{name}: interleaved.rows: expected a non-empty list (an A/A figure)")
    fars = []
    for j, r in enumerate(rows):
        ci = r.get("ci") if isinstance(r, dict) else None
        if not isinstance(ci, list) or len(ci) != 2:
            raise BadFile(f"{name}: interleaved.rows[{j}].ci: expected [low, high]")
        where = f"{name}: interleaved.rows[{j}]"
        fars.append(aa_far_end(_ratio(r.get("ratio"), f"{where}.ratio"), _ratio(ci[0], f"{where}.ci[0]"),
                               _ratio(ci[1], f"{where}.ci[1]")) * 100)
    fars.sort()
    from scipy.stats import beta

    confirmed = sum(bool(r.get("confirmed")) for r in rows)
    upper = 1.0 if confirmed == len(rows) else float(beta.ppf(0.95, confirmed + 1, len(rows) - confirmed))
    return {"comparisons": len(fars), "confirmed": confirmed, "false_positive_upper95": upper,
            "far_end_median_pct": statistics.median(fars),
            "far_end_p90_pct": fars[int(0.9 * (len(fars) - 1))], "far_end_max_pct": fars[-1]}


def load(path: Path, name: str) -> dict:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise BadFile(f"{name}: larger than {MAX_BYTES >> 20} MiB; not a bench_gate figure")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadFile(f"{name}: cannot read as JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise BadFile(f"{name}: expected a JSON object written by scripts/bench_gate.py")
    return doc


def report(path: Path) -> list[str]:
    name = ascii(str(path))  # a file name is data: no terminal control reaches the screen
    doc = load(path, name)
    if "variants" in doc:
        return [f"{name} seq_len {m['seq_len']}: size {m['size_pct']:+.2f}%, detected {m['detected']}/{m['trials']} "
                f"(95% CI {m['detected_ci95'][0]:.1%} .. {m['detected_ci95'][1]:.1%}); {m['measurements']} measurements, "
                f"SD {m['measurement_sd_pct']:.3f} pts; model: {m['modelled_power']:.1%} at this size, "
                f"{m['modelled_power_at_5pct']:.1%} at +5%, 95% at {m['modelled_95pct_size_pct']:+.2f}%"
                for m in power_model(doc, name)]
    if "interleaved" in doc:
        a = aa_floor(doc, name)
        return [f"{name}: interleaved A/A: {a['confirmed']}/{a['comparisons']} confirmed regressions (one-sided 95% "
                f"upper bound {a['false_positive_upper95']:.2%}); interval far end: median "
                f"{a['far_end_median_pct']:.2f}%, p90 {a['far_end_p90_pct']:.2f}%, max {a['far_end_max_pct']:.2f}%"]
    raise BadFile(f"{name}: neither a power figure (variants) nor an A/A figure (interleaved)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="power or aa JSON written by scripts/bench_gate.py")
    args = ap.parse_args(argv)
    try:
        lines = [line for f in args.files for line in report(f)]
    except BadFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
