#!/usr/bin/env python3
"""Run every GPU check the issues ask for, in one go, and write a Markdown report.

    python3 scripts/gpu_check.py --out OUT [--stages detect,pytest,calibrate,prefill,bert,compiled,decode,sweep]
                                 [--store PATH]

Stages (each a real `perfbench` command; results land in OUT/perfbench.sqlite):
  detect     hw detect: fingerprint and matching profile
  pytest     pytest -m gpu
  calibrate  measured ceilings vs the figures in tests/fixtures/traces/h100/README.md
  prefill    llama-3.2-1b prefill b1..128 with --trace: medians vs the fixture README, the traced
             transition, the roofline placement and latency split, plots
  bert       bert-base encoder with --trace: transition
  compiled   the prefill sweep with reduce-overhead (CUDA graphs): medians and launch saving vs eager
  decode     llama-3.2-1b decode b1/8/64, eager vs reduce-overhead over a StaticCache
  sweep      batch x compile-mode sweep of llama-3.2-1b prefill (--sweep-spec), its landscape

`--smoke` swaps in the tiny model on the CPU so the script itself can be tested without a GPU.
Reference numbers are read from the fixture README, never typed in here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE_README = REPO / "tests" / "fixtures" / "traces" / "h100" / "README.md"
SMOKE_SET = ["model=tiny-llama", "device=cpu", "dtype=float32", "batch_sizes=[1,2,4]", "seq_len=16",
             "measure.repeats=3", "measure.min_seconds=0", "measure.warmup=1"]
SMOKE_BERT_SET = [*SMOKE_SET[1:], "model=tiny-bert"]


def reference_medians_ms() -> dict[int, float]:
    """Eager prefill medians per batch from the fixture README (table rows and the 'Other' line)."""
    text = FIXTURE_README.read_text()
    out = {int(b): float(ms) for b, ms in re.findall(r"prefill, eager, batch (\d+) \| ([\d.]+) ms", text)}
    other = re.search(r"Other eager batch sizes[^:]*:(.*?);", text, re.S)
    if other:
        out.update({int(b): float(ms) for b, ms in re.findall(r"b(\d+) ([\d.]+)", other.group(1))})
    return dict(sorted(out.items()))


def reference_ceilings() -> dict[str, float]:
    text = FIXTURE_README.read_text()
    m = re.search(r"matmul\s+([\d.]+) TFLOP/s", text)
    c = re.search(r"copy\s+([\d.]+) TB/s", text)
    return {"bf16_tflops": float(m.group(1)) if m else None, "copy_tbs": float(c.group(1)) if c else None}


class Check:
    def __init__(self, out: Path, smoke: bool, store: Path | None = None):
        self.out, self.smoke = out, smoke
        self.store = store or out / "perfbench.sqlite"
        self.md: list[str] = []
        self.log = open(out / "commands.log", "a")

    def pb(self, *args: str, json_out: bool = True, timeout: float = 3000) -> dict | list | str:
        cmd = [sys.executable, "-m", "perfbench", *args]
        if json_out:
            cmd += ["--format", "json"]
        t0 = time.time()
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        self.log.write(f"$ {' '.join(cmd)}  # rc={r.returncode} {time.time() - t0:.1f}s\n{r.stderr[-3000:]}\n")
        self.log.flush()
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed (rc {r.returncode}): {r.stderr[-1500:]}")
        return json.loads(r.stdout) if json_out else r.stdout

    def h(self, title: str) -> None:
        self.md += ["", f"## {title}", ""]
        print(f"== {title}", flush=True)

    def table(self, header: list[str], rows: list[list]) -> None:
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        for r in rows:
            self.md.append("| " + " | ".join("-" if v is None else (f"{v:,.3f}" if isinstance(v, float) else str(v))
                                             for v in r) + " |")

    def write(self) -> None:
        (self.out / "report.md").write_text("# perfbench GPU check\n" + "\n".join(self.md) + "\n")

    # -- stages ------------------------------------------------------------------------------

    def detect(self) -> None:
        self.h("Host")
        d = self.pb("hw", "detect")
        fp = d.get("fingerprint", d)
        gpus = ", ".join(g.get("name", "?") for g in fp.get("gpus", [])) or "none"
        self.md.append(f"GPU: {gpus}; driver {fp.get('driver_version')}; CPU {fp.get('cpu_model')} "
                       f"x{fp.get('cpu_cores_logical')}; torch {fp.get('torch_version')}, CUDA "
                       f"{fp.get('cuda_version')}; hardware_id {fp.get('hardware_id')}; profile: "
                       f"{(d.get('profile') or {}).get('name') if isinstance(d.get('profile'), dict) else d.get('profile')}")

    def pytest(self) -> None:
        self.h("GPU tests: `python3 -m pytest -m gpu`")
        r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
                           cwd=REPO, capture_output=True, text=True, timeout=1800)
        self.md.append("```\n" + "\n".join(r.stdout.strip().splitlines()[-15:]) + "\n```")

    def calibrate(self) -> None:
        self.h("Measured ceilings: `perfbench calibrate`")
        args = ["calibrate", "--store", str(self.store)] + (["--quick", "--device", "cpu"] if self.smoke else [])
        c = self.pb(*args)
        ref = reference_ceilings()
        rows = [[f"matmul {d}", m["flops_per_s"] / 1e12 if m["flops_per_s"] else None,
                 ref["bf16_tflops"] if d == "bfloat16" else None, str(m.get("best_shape"))]
                for d, m in c["matmul"].items()]
        rows.append(["copy (read+write), TB/s", c["memory"]["copy_bytes_per_s"] / 1e12, ref["copy_tbs"], ""])
        rows.append(["triad (read+write), TB/s", c["memory"]["triad_bytes_per_s"] / 1e12, None, ""])
        rows.append(["launch overhead, us", c["launch"]["launch_us"], None,
                     f"round trip {c['launch']['round_trip_us']:.1f} us"])
        if "host_device" in c:
            rows.append(["H2D pinned, GB/s", c["host_device"]["h2d_bytes_per_s"] / 1e9, None, ""])
            rows.append(["D2H pinned, GB/s", c["host_device"]["d2h_bytes_per_s"] / 1e9, None, ""])
        self.table(["ceiling", "measured (TFLOP/s unless said)", "fixture README", "note"], rows)

    def _run(self, spec: str, extra: list[str]) -> dict:
        sets = [x for s in extra for x in ("--set", s)]
        return self.pb("run", spec, "--store", str(self.store), "--trace", "-q", *sets)

    def _transition(self, run_id: str) -> dict:
        t = self.pb("trace", "run", run_id, "--store", str(self.store))
        self.table(["batch", "tklqt_us", "launch_call_us", "queue_us", "kernels", "gpu_util",
                    "idle_host_wait_us", "bound", "timed median us", "traced span us", "profiler overhead x"],
                   [[p["batch_size"], p["tklqt_us"], p["launch_call_us"], p["queue_us"], p["kernels"],
                     p["gpu_util"], p["idle_host_wait_us"], p["bound"], p["timed_median_us"],
                     p["traced_span_us"], p["profiler_overhead_ratio"]] for p in t["points"]])
        self.md.append(f"\nTransition batch (TKLQT leaves its baseline): **{t['transition_batch']}**; "
                       f"methods {t['methods']}; agree: {t['agree']}")
        return t

    def prefill(self) -> None:
        self.h("Llama-3.2-1B prefill, eager: `perfbench run workloads/llama-3.2-1b-prefill.yaml --trace`")
        run = self._run("workloads/llama-3.2-1b-prefill.yaml", SMOKE_SET if self.smoke else [])
        self.eager_run = run
        ref = reference_medians_ms()
        self.md.append(f"run {run['run_id']}, status {run['status']}")
        self.table(["batch", "median ms", "p10 ms", "p90 ms", "CV", "tokens/s", "peak mem GiB",
                    "fixture README median ms", "ratio"],
                   [[p["batch_size"], p["latency_median_s"] and p["latency_median_s"] * 1e3,
                     p["latency_p10_s"] and p["latency_p10_s"] * 1e3, p["latency_p90_s"] and p["latency_p90_s"] * 1e3,
                     p["latency_cv"], p["tokens_per_s"], p["peak_memory_bytes"] and p["peak_memory_bytes"] / 2**30,
                     ref.get(p["batch_size"]),
                     (p["latency_median_s"] * 1e3 / ref[p["batch_size"]]) if p["latency_median_s"] and p["batch_size"] in ref else None]
                    for p in run["points"]])
        self.h("Kernel-level trace of the prefill sweep: `perfbench trace run RUN_ID`")
        self._transition(run["run_id"])
        self.h("Roofline placement: `perfbench roofline place RUN_ID`")
        pl = self.pb("roofline", "place", run["run_id"], "--store", str(self.store))
        c = pl["ceilings"]
        self.md.append(f"ceilings: {c['source']} ({c['profile']}): peak {c['peak'] / 1e12:.1f} TFLOP/s, "
                       f"bandwidth {c['bandwidth'] / 1e12:.2f} TB/s")
        self.table(["batch", "median ms", "FLOP/B", "achieved TFLOP/s", "% of roof", "floor ms",
                    "CPU overhead ms", "remainder ms", "GPU busy ms", "note"],
                   [[p["batch_size"], p["latency_median_s"] * 1e3, p["arithmetic_intensity"],
                     p["achieved_flops_per_s"] / 1e12, p["roof_share"] * 100, p["floor_s"] * 1e3,
                     p["cpu_overhead_s"] and p["cpu_overhead_s"] * 1e3, p["remainder_s"] * 1e3,
                     p["gpu_busy_s"] and p["gpu_busy_s"] * 1e3, p["note"] or ""]
                    for p in pl["points"]])
        plots = self.pb("roofline", "plot", run["run_id"], "--store", str(self.store), "--out",
                        str(self.out / "plots"), json_out=False)
        for line in plots.split():  # roofline_<run>.png -> roofline.png, latency_<run>.png -> latency.png
            if line.endswith(".png"):
                shutil.copy(line, self.out / (Path(line).name.split("_")[0] + ".png"))
        self.md.append("\nPlots: roofline.png, latency.png")

    def bert(self) -> None:
        self.h("BERT-base encoder: `perfbench run workloads/bert-base-encoder.yaml --trace`")
        run = self._run("workloads/bert-base-encoder.yaml", SMOKE_BERT_SET if self.smoke else [])
        self.table(["batch", "median ms", "tokens/s"],
                   [[p["batch_size"], p["latency_median_s"] and p["latency_median_s"] * 1e3, p["tokens_per_s"]]
                    for p in run["points"]])
        self._transition(run["run_id"])

    def compiled(self) -> None:
        self.h("Eager vs reduce-overhead (CUDA graphs): launch saving")
        extra = (SMOKE_SET + ["backend.compile=default"]) if self.smoke else ["backend.compile=reduce-overhead"]
        run = self._run("workloads/llama-3.2-1b-prefill.yaml", extra)
        eager_run = getattr(self, "eager_run", None) or self._latest("llama-3.2-1b-prefill", "none")
        self._launch_saving(eager_run, run)

    def decode(self) -> None:
        self.h("Llama-3.2-1B decode, eager (dynamic cache) vs reduce-overhead (StaticCache, CUDA graphs)")
        base = (SMOKE_SET + ["phase=decode", "new_tokens=4"]) if self.smoke else ["batch_sizes=[1,8,64]"]
        spec = "workloads/llama-3.2-1b-decode.yaml"
        eager = self._run(spec, base)
        graphed = self._run(spec, base + ["backend.compile=reduce-overhead"])  # no graphs on CPU, same cache
        self.md.append(f"kv_cache: eager {eager['backend_info'].get('kv_cache')}, "
                       f"compiled {graphed['backend_info'].get('kv_cache')}")
        self._launch_saving(eager, graphed)

    def _launch_saving(self, eager_run: dict | None, run: dict) -> None:
        eager = {p["batch_size"]: p for p in (eager_run or {"points": []})["points"]}
        rows = []
        for p in run["points"]:
            e = eager.get(p["batch_size"])
            row = [p["batch_size"], e and e["latency_median_s"] and e["latency_median_s"] * 1e3,
                   p["latency_median_s"] and p["latency_median_s"] * 1e3,
                   e and e["tokens_per_s"], p["tokens_per_s"]]
            if e and e.get("trace_path") and p.get("trace_path"):
                cmp = self.pb("trace", "compare", e["trace_path"], p["trace_path"])
                row += [cmp.get("eager_launches"), cmp.get("compiled_launches"), cmp.get("tklqt_saved_us"),
                        cmp.get("tklqt_saved_ratio")]
            rows.append(row)
        self.table(["batch", "eager median ms", "compiled median ms", "eager tokens/s", "compiled tokens/s",
                    "eager launches", "compiled launches", "TKLQT saved us", "TKLQT saved fraction"], rows)

    def _latest(self, name: str, compile_mode: str) -> dict | None:
        """The newest completed run of `name` with that compile mode in the store (from an
        earlier call: the stages can be split across device calls that share --store)."""
        for r in self.pb("results", "list", "--store", str(self.store)):
            if r["name"] == name and r["status"] == "completed":
                run = self.pb("results", "show", r["run_id"], "--store", str(self.store))
                if run["spec"]["backend"].get("compile") == compile_mode:
                    return run
        return None

    def sweep(self, spec: str) -> None:
        self.h(f"Sweep: `perfbench sweep run {spec}`")
        s = self.pb("sweep", "run", spec, "--store", str(self.store), "-q", timeout=6000)
        show = self.pb("sweep", "show", s.get("sweep_id", ""), "--store", str(self.store))
        rows = [[json.dumps(t["params"]), t["status"], t.get("metric"), t.get("reason")] for t in show["results"]]
        m = show["metric"]
        self.table(["params", "status", f"{m['name']} ({m['goal']})", "reason"], rows)
        self.md.append(f"\nbest: {show['best']['params']} = {show['best']['metric']:,.1f}; "
                       f"peaks: {[p['params'] for p in show['peaks']]}; importance: {show['importance']}; "
                       f"gain over default: {show['gain_over_default']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", default="detect,pytest,calibrate,prefill,bert,compiled,decode")
    ap.add_argument("--sweep-spec", default="workloads/sweeps/llama-3.2-1b-batch-compile-quick.yaml",
                    help="the quick 8-trial sweep fits one 10-minute device call; the full one is "
                         "workloads/sweeps/llama-3.2-1b-batch-compile.yaml")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: test this script without a GPU")
    ap.add_argument("--store", type=Path, default=None,
                    help="results store (default OUT/perfbench.sqlite); keep it outside OUT to split "
                         "the stages across device calls")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    chk = Check(a.out, a.smoke, a.store)
    failed = []
    for stage in a.stages.split(","):
        try:
            chk.sweep(a.sweep_spec) if stage == "sweep" else getattr(chk, stage)()
        except Exception as exc:  # report and go on: one broken stage must not hide the others
            chk.md.append(f"\n**{stage} failed:** {exc}")
            failed.append(stage)
        chk.write()
    print(f"report: {a.out / 'report.md'}" + (f"; failed stages: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
