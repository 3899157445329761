"""Why the gate loads workers one at a time and pins a pair to one CPU: A/A pairs of the tiny
workload (batch 4, seq_len 40), interleaved, per-pair ratios printed (docs/ci.md, Interleaved mode).

    .venv/bin/python scripts/bench_gate_pairs.py PAIRS ROUNDS MODE   # MODE: pin, seq, pin-seq, pin-thp
    e.g. 12 20 pin-seq (loaded in turn, pinned) against 16 30 pin (loaded together, pinned)
"""
import math
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_gate as bg  # noqa: E402
from perfbench.gate.interleave import WorkerProcess
from perfbench.gate.suite import load_suite
pairs, rounds, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
wl = load_suite(bg.SUITE).workloads[0]
base = ["batch_sizes=[4]", "seq_len=40"]
env = dict(os.environ)
if "thp" in mode: env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
if "torchthp" in mode: env["THP_MEM_ALLOC_ENABLE"] = "1"
rng = random.Random(7)
res = []
for p in range(pairs):
    if "seq" in mode:
        ws = []
        for i in range(2):
            ws.append(WorkerProcess(bg.CMD, wl.spec_path, wl.overrides + base, f"w{i}", env=env)); ws[-1].recv(900)
    else:
        ws = [WorkerProcess(bg.CMD, wl.spec_path, wl.overrides + base, f"w{i}", env=env) for i in range(2)]
        for w in ws: w.recv(900)
    cpu = {rng.choice([0, 1])}
    if "pin" in mode:
        for w in ws: w.pin(cpu)
    for w in ws: w.ask({"op": "prepare", "index": 0})
    got = [[], []]
    for _ in range(rounds):
        for k in rng.sample([0, 1], 2):
            got[k].append(statistics.median(ws[k].ask({"op": "measure", "repeats": 5})["samples_s"]))
    for w in ws: w.close()
    d = [math.log(c / b) for b, c in zip(*got)]
    res.append(math.exp(statistics.median(d)))
    print(f"{mode} pair {p} cpu {cpu}: ratio {res[-1]:.4f} meds {statistics.median(got[0])*1e3:.3f} {statistics.median(got[1])*1e3:.3f} round-sd {statistics.stdev(d):.4f}", flush=True)
res.sort()
print(mode, "sorted ratios", " ".join(f"{r:.3f}" for r in res))
