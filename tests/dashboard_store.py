"""A results store with something for every dashboard page, built once per test session.

What is real and what is derived:
* the f74d606 fixture store (real runs, failed points, a CPU trace, three sweeps, a calibration),
  upgraded by opening it;
* two real tiny-llama runs on this machine (`perfbench run`, one of them traced) and a real serving
  run against llama.cpp's server (a few seconds each);
* an H100 run made from the real H100 fixture traces (tests/fixtures/traces/h100) with the untimed
  medians of their README, trace figures from perfbench's own analysis, on an H100 fingerprint;
* measured ceilings for this machine, copied from the fixture's calibration;
* a history of 16 runs on branch main, copied from the real tiny run with samples scaled (+8% from
  the 8th commit on), tagged with subjects, and energy fields on them (RAPL-style), so the history,
  compare and energy pages have series to show.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "stores" / "f74d606"
H100_TRACES = REPO / "tests" / "fixtures" / "traces" / "h100"
H100_MEDIANS_MS = {1: 19.0, 16: 25.6, 64: 93.5}  # fallback; the README's table wins (scripts/gpu_check.py)
HISTORY_RUNS = 16  # 8 runs after the step: the gate's minimum segment (5) can see it
HISTORY_STEP_AT = 8


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "perfbench", *args], cwd=REPO, check=True, capture_output=True,
                   text=True, timeout=300)


def _run_ids(store_path: Path) -> set[str]:
    from perfbench.store import ResultsStore

    with ResultsStore(store_path) as st:
        return {r["run_id"] for r in st.list_runs()}


def build_store(folder: Path) -> dict[str, Any]:
    """Build the store in `folder` and say what is in it (ids by role)."""
    from perfbench.store import ResultsStore

    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "perfbench.sqlite"
    shutil.copy(FIXTURE / "perfbench.sqlite", store)
    shutil.copytree(FIXTURE / "traces", folder / "traces", dirs_exist_ok=True)
    ResultsStore(store).close()  # upgrade
    fixture_runs = _run_ids(store)
    spec = str(REPO / "workloads" / "tiny-llama-cpu.yaml")
    _cli("run", spec, "--store", str(store), "-q", "--set", "batch_sizes=[1,2,4]")
    base = _run_ids(store) - fixture_runs
    _cli("run", spec, "--store", str(store), "-q", "--set", "batch_sizes=[1,2,4]", "--trace")
    traced = _run_ids(store) - fixture_runs - base
    _cli("run", str(REPO / "workloads" / "serving-llama-cpp-tiny.yaml"), "--store", str(store), "-q",
         "--set", "load.requests=8", "--set", "load.concurrency=[1,2,4]")
    serving = _run_ids(store) - fixture_runs - base - traced
    with ResultsStore(store) as st:
        h100 = add_h100_run(st)
        history = add_history(st, next(iter(base)))
        calibrate_like_the_fixture(st, next(iter(traced)))
    with ResultsStore(store, create=False) as st:
        sweeps = [r[0] for r in st.query("SELECT sweep_id FROM sweeps ORDER BY created_at")]
    return {"store": store, "fixture_runs": sorted(fixture_runs), "cpu_runs": sorted(base | traced),
            "compare": (next(iter(base)), next(iter(traced))), "traced_cpu_run": next(iter(traced)),
            "serving_run": next(iter(serving)), "h100_run": h100, "history": history,
            "energy_runs": history["runs"], "sweeps": sweeps}


def calibrate_like_the_fixture(st, run_id: str) -> None:
    """Measured ceilings for the machine the tests run on, copied from the fixture's calibration (a
    real one of the machine that wrote the fixture), so a run made here has measured ceilings on
    any CI machine, as it would after `perfbench calibrate`."""
    run = st.get_run(run_id)
    if st.calibrations(hardware_id=run["hardware_id"], device=run["device"]):
        return
    cal = st.calibrations()[0]
    st.add_calibration(fingerprint=run["fingerprint"], versions=cal["versions"], commit=None, device=run["device"],
                       results=cal["results"])


def h100_fingerprint() -> dict[str, Any]:
    from perfbench.hardware.detect import hardware_id

    fp = {"hostname": "h100-box", "os": "Linux", "arch": "x86_64", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
          "cpu_cores_logical": 224, "memory_total_bytes": 2 * 1024**4, "gpu_count": 1, "gpu_source": "nvml",
          "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * 1024**3}],
          "driver_version": "550.54.15", "cuda_version": "12.4", "torch_version": "2.4.0"}
    fp["hardware_id"] = hardware_id(fp)
    return fp


def _h100_medians() -> dict[int, float]:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from gpu_check import reference_medians_ms

        found = reference_medians_ms()
    except Exception:  # the README's format changed: the numbers above still come from it
        found = {}
    return {b: found.get(b, ms) for b, ms in H100_MEDIANS_MS.items()}


def add_h100_run(st) -> str:
    """Llama-3.2-1B prefill at batch 1, 16, 64 on an H100: the fixture traces and their medians."""
    from perfbench.spec import parse_spec
    from perfbench.trace import analyze, profiler_overhead

    spec = parse_spec({"name": "llama-1b-prefill-h100", "model": "llama-3.2-1b", "phase": "prefill",
                       "batch_sizes": sorted(H100_MEDIANS_MS), "seq_len": 128, "dtype": "bfloat16",
                       "device": "cuda", "measure": {"trace": True}}, check_device=False)
    run_id = st.create_run(name=spec.name, spec=spec.stored(), spec_hash=spec.spec_hash(),
                           fingerprint=h100_fingerprint(), versions={"torch": "2.4.0", "perfbench": "fixture"},
                           commit=None, device="cuda", spec_path="workloads/llama-3.2-1b-prefill.yaml")
    rng = random.Random(1)
    for b, ms in _h100_medians().items():
        median = ms / 1e3
        samples = sorted(median * (1 + rng.gauss(0, 0.01)) for _ in range(20))
        trace = H100_TRACES / f"llama1b_prefill_eager_b{b}.json.gz"
        an = analyze(trace)
        st.add_point(run_id, {
            "batch_size": b, "seq_len": 128, "new_tokens": 0, "status": "ok", "latency_median_s": median,
            "latency_p10_s": samples[2], "latency_p90_s": samples[17], "latency_min_s": samples[0],
            "latency_max_s": samples[-1], "n_samples": 20, "samples_s": samples,
            "tokens_per_step": b * 128, "tokens_per_s": b * 128 / median,
            "peak_memory_bytes": int(2.6e9 + b * 5e7), "memory_kind": "cuda_max_allocated",
            "energy_j": 400 * median * 20, "power_avg_w": 400.0, "energy_per_token_j": 400 * median / (b * 128),
            "energy_method": "nvml-counter", "trace_path": str(trace), "trace_figures": an.as_full_dict(),
            **profiler_overhead(an, median * 1e6)})
    st.finish_run(run_id, "completed")
    return run_id


def add_history(st, source_run: str) -> dict[str, Any]:
    """16 runs of the source run's benchmark on branch main, commit by commit, 8% slower from the
    8th commit on, with RAPL-style energy fields."""
    src = st.get_run(source_run)
    rng = random.Random(7)
    runs = []
    for i in range(HISTORY_RUNS):
        scale = (1.08 if i >= HISTORY_STEP_AT else 1.0) * (1 + rng.gauss(0, 0.005))
        commit = f"{i + 1:02d}" + "c0ffee" * 6 + f"{i:02d}"
        run_id = st.create_run(name=src["name"], spec=src["spec"], spec_hash=src["spec_hash"],
                               fingerprint=src["fingerprint"], versions=src["versions"], commit=commit,
                               device=src["device"], spec_path=src["spec_path"],
                               subject={"commit": commit, "branch": "main", "ci_run_id": str(1000 + i)})
        for p in src["points"]:
            if p["status"] != "ok":
                continue
            samples = [s * scale * (1 + rng.gauss(0, 0.01)) for s in p["samples_s"]]
            med = sorted(samples)[len(samples) // 2]
            keep = {k: p[k] for k in ("batch_size", "seq_len", "new_tokens", "tokens_per_step", "memory_kind",
                                      "peak_memory_bytes")}
            st.add_point(run_id, {**keep, "status": "ok", "samples_s": samples, "latency_median_s": med,
                                  "latency_p10_s": min(samples), "latency_p90_s": max(samples),
                                  "n_samples": len(samples), "tokens_per_s": p["tokens_per_step"] / med,
                                  "energy_j": 35.0 * med * len(samples), "power_avg_w": 35.0,
                                  "energy_per_token_j": 35.0 * med / p["tokens_per_step"], "energy_method": "rapl"})
        st.finish_run(run_id, "completed")
        runs.append(run_id)
        time.sleep(0.002)  # distinct start times: history orders runs by them
    return {"name": src["name"], "hardware_id": src["hardware_id"], "spec_hash": src["spec_hash"], "runs": runs,
            "step_commit": f"{HISTORY_STEP_AT + 1:02d}" + "c0ffee" * 6 + f"{HISTORY_STEP_AT:02d}"}


def component_text(component) -> str:
    """Every string in a Dash component tree, joined (what a reader of the page sees)."""
    out = []

    def walk(c):
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
        elif hasattr(c, "children"):
            walk(c.children)

    walk(component)
    return " ".join(out)


if __name__ == "__main__":  # python tests/dashboard_store.py FOLDER: build it to look at
    print(json.dumps(build_store(Path(sys.argv[1])), default=str, indent=2))
