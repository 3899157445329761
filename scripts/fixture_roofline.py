#!/usr/bin/env python3
"""Draw the roofline and latency split of the H100 fixture traces (docs/img/h100-fixtures-*).

Uses the real traces in tests/fixtures/traces/h100 with the untimed medians from their README, and
the H100 SXM datasheet ceilings from hw_profiles/. Reproduces the table in docs/roofline.md.

    python3 scripts/fixture_roofline.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from gpu_check import reference_medians_ms  # noqa: E402  (one parser of the fixture README)

from perfbench.hardware import load_profile  # noqa: E402
from perfbench.roofline.place import place_run  # noqa: E402
from perfbench.roofline.plots import latency_matplotlib, roofline_matplotlib, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    a = ap.parse_args()
    traces = REPO / "tests" / "fixtures" / "traces" / "h100"
    med = reference_medians_ms()
    points = [{"status": "ok", "batch_size": b, "seq_len": 128, "new_tokens": 0, "latency_median_s": med[b] / 1e3,
               "trace_path": str(traces / f"llama1b_prefill_eager_b{b}.json.gz")}
              for b in sorted(med) if (traces / f"llama1b_prefill_eager_b{b}.json.gz").exists()]
    run = {"spec": {"model": "llama-3.2-1b", "phase": "prefill", "dtype": "bfloat16"}, "points": points}
    h100 = load_profile("h100-sxm")
    rows = place_run(run, peak_flops=h100.peak_flops("bfloat16"), bandwidth=h100.memory_bandwidth)
    title = "Llama-3.2-1B prefill (H100 fixture traces), bf16 eager"
    ceilings = {"datasheet": {"peak": h100.peak_flops("bfloat16"), "bandwidth": h100.memory_bandwidth}}
    paths = save(roofline_matplotlib(rows, ceilings, title), a.out / "h100-fixtures-roofline")
    paths += save(latency_matplotlib(rows, title), a.out / "h100-fixtures-latency")
    print("| batch | median ms | floor ms | CPU overhead ms | remainder ms (below roof + other idle) "
          "| GPU busy ms | % of roof | matmul % of roof | element-wise % of roof |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = {o["op_type"]: o["roof_share"] for o in r["ops"]}
        pct = lambda k: f"{share[k] * 100:.0f}%" if share.get(k) else "-"  # noqa: E731
        print(f"| {r['batch_size']} | {r['latency_median_s'] * 1e3:.2f} | {r['floor_s'] * 1e3:.2f} | "
              f"{r['cpu_overhead_s'] * 1e3:.2f} | {r['remainder_s'] * 1e3:.2f} ({r['below_roof_s'] * 1e3:.2f} + "
              f"{r['other_idle_s'] * 1e3:.2f}) | {r['gpu_busy_s'] * 1e3:.2f} | {r['roof_share'] * 100:.1f}% | "
              f"{pct('matmul')} | {pct('elementwise')} |")
    print()
    print("| batch | projection | weight (in, out) | FLOP/B | GPU time us | floor us | % of roof |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for o in r["operators"]:
            print(f"| {r['batch_size']} | {o['op']} | {tuple(o['weight_shape'])} | {o['arithmetic_intensity']:.0f} | "
                  f"{o['gpu_time_us']:.0f} | {o['floor_us']:.0f} | {o['roof_share'] * 100:.0f}% |")
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
