"""Duet measurement: base and candidate alternate on one machine, in a randomized order.

Why: separate runs on a shared machine differ by tens of percent (other jobs, frequency, cache
state), which hides any real change below that. Two long-lived workers (the base's perfbench
and the candidate's, each with its model loaded) take turns: for every point, round after round,
a coin decides which side measures its block of steps (`interleave.block`, default 1) first. Both sides see the
same machine state within a round, so the paired rounds cancel it (Bulej et al.; Laaber et al.;
Abedi and Brecht's randomized multiple interleaved trials).

A worker is `perfbench gate worker SPEC` speaking JSON lines on stdin/stdout, so the base can be
another perfbench installation (the base commit's checkout, another engine version):
`--interleave "../base/.venv/bin/perfbench"`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from perfbench.gate import NotMeasured
from perfbench.gate.suite import HUGEPAGES, PIN

PROTOCOL = 1
LOAD_TIMEOUT_S = 900.0
OP_TIMEOUT_S = 900.0


# -- the worker side ------------------------------------------------------------------------------

def serve(spec_path: str, overrides: list[str]) -> int:
    """Run as a worker: load the spec's backend once, then answer prepare/measure/finish/close.

    Protocol messages go to the original stdout; anything an engine prints goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj, default=str) + "\n")

    try:
        state = _Worker(spec_path, overrides)
        send(state.ready())
        for line in sys.stdin:
            msg = json.loads(line)
            if msg.get("op") == "close":
                break
            send(state.handle(msg))
    except Exception as exc:  # reported to the coordinator, which says could not measure (exit 4)
        send({"op": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        return 1
    finally:
        proto.flush()
    return 0


class _Worker:
    def __init__(self, spec_path: str, overrides: list[str]):
        from perfbench.backends import backend_class
        from perfbench.devices import resolve_device
        from perfbench.runner import run_context
        from perfbench.spec import load_spec

        self.spec = load_spec(spec_path, overrides=overrides)
        self.device = resolve_device(self.spec.device)
        self.backend = backend_class(self.spec.backend["name"])(self.spec.backend_config,
                                                                run_context(self.spec, self.device))
        self.info = self.backend.load()
        self.timer, self.memory = self.backend.timer(), self.backend.memory_probe()
        self.prepared = self.point = None
        self.samples: list[float] = []
        self.reports: list = []

    def ready(self) -> dict:
        from perfbench.provenance import git_commit, software_versions

        s = self.spec
        return {"op": "ready", "protocol": PROTOCOL, "name": s.name, "spec": s.stored(), "spec_hash": s.spec_hash(),
                "versions": software_versions(), "commit": git_commit(),
                "device": self.device, "backend_info": self.info, "engine": self.backend.engine(),
                "points": [[p.batch_size, p.seq_len, p.new_tokens] for p in s.points()],
                "repeats": s.measure.repeats}

    def _measure(self, warmup: int, repeats: int) -> dict:
        from perfbench.runner import measure_point

        m = self.spec.measure.model_copy(update={"warmup": warmup, "repeats": repeats, "min_seconds": 0.0})
        return measure_point(self.prepared, self.timer, self.spec.model_copy(update={"measure": m}))

    def handle(self, msg: dict) -> dict:
        op = msg.get("op")
        if op == "prepare":
            self.point = self.spec.points()[int(msg["index"])]
            self.prepared = self.backend.prepare(self.point)
            self.memory.reset()
            self.samples, self.reports = [], []
            self._measure(self.spec.measure.warmup, 0)
            return {"op": "prepared"}
        if op == "measure":
            raw = self._measure(0, int(msg["repeats"]))
            self.samples += raw["samples_s"]
            self.reports += raw["reports"]
            return {"op": "measured", "samples_s": raw["samples_s"]}
        if op == "finish":
            return {"op": "finished", "row": self._finish()}
        raise ValueError(f"unknown op {op!r}")

    def _finish(self) -> dict:
        from perfbench.stats import summarize

        stats = summarize(self.samples)
        p = self.point
        row = {"batch_size": p.batch_size, "seq_len": p.seq_len, "new_tokens": p.new_tokens, "status": "ok",
               **stats, "samples_s": self.samples, "peak_memory_bytes": self.memory.read(),
               "memory_kind": self.memory.kind, **self.prepared.info,
               **self.backend.summarize(p, self.reports, stats["latency_median_s"])}
        self.backend.release()
        return row


# -- the coordinator side ---------------------------------------------------------------------------

class WorkerProcess:
    """One worker subprocess; every failure to talk to it is NotMeasured (exit 4)."""

    def __init__(self, cmd: list[str], spec_path: Path, overrides: list[str], label: str,
                 env: dict | None = None):
        self.label = label
        self.ready: dict | None = None  # the worker's ready message, once loaded (start_workers)
        self.log = tempfile.TemporaryFile(mode="w+")
        args = [*cmd, "gate", "worker", str(spec_path), *[a for o in overrides for a in ("--set", o)]]
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                         text=True, bufsize=1, env=env)
        except OSError as exc:
            raise NotMeasured(f"{label}: cannot start {' '.join(args[:3])}...: {exc}") from None

    def pin(self, cpus: set[int] | None) -> None:
        """Move every thread of the (loaded) worker onto `cpus`; best effort (not on every OS)."""
        if not cpus:
            return
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                os.sched_setaffinity(int(tid), cpus)
        except (AttributeError, OSError, ValueError):
            pass

    def recv(self, timeout: float = OP_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise NotMeasured(f"{self.label}: no answer within {timeout:g} s{self._tail()}")
            line = self.proc.stdout.readline()
            if not line:
                raise NotMeasured(f"{self.label}: worker ended (exit {self.proc.wait()}){self._tail()}")
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not a protocol line: an engine wrote to stdout before the worker redirected it
            if msg.get("op") == "error":
                raise NotMeasured(f"{self.label}: {msg.get('error')}{self._tail()}")
            return msg

    def ask(self, msg: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise NotMeasured(f"{self.label}: worker is gone{self._tail()}") from None
        return self.recv()

    def _tail(self) -> str:
        self.log.seek(0)
        text = self.log.read()[-1500:].strip()
        return f"\n--- {self.label} stderr (last lines) ---\n{text}" if text else ""

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure_pair(base_cmd: list[str], cand_cmd: list[str], spec_path: Path, overrides: list[str], *,
                 rounds: int, block: int, seed: int, pairs: int = 1, base_env: dict | None = None,
                 cand_env: dict | None = None, pin: bool = PIN, hugepages: bool = HUGEPAGES) -> dict[str, Any]:
    """Interleave base and candidate over every point of one workload, with `pairs` fresh pairs
    of worker processes in turn (`rounds` rounds each): {ready, rows, block, rounds, pairs, order}.
    Each point's samples are the rounds of every pair, in order. Workers load one at a time (see
    start_workers). `pin` (single-threaded workloads; `interleave.pin`, on by default): once
    loaded, both workers of a pair share one CPU, drawn per pair, so both sides see the same core
    and its cache (they take turns, so sharing costs nothing). `hugepages`: see worker_env."""
    import random

    rng = random.Random(seed)
    base_env, cand_env = worker_env(base_env, hugepages), worker_env(cand_env, hugepages)
    done = [_one_pair(base_cmd, cand_cmd, spec_path, overrides, rounds, block, rng, base_env, cand_env,
                      pick_cpu(rng) if pin else None) for _ in range(pairs)]
    rows = {side: [_merge([d["rows"][side][i] for d in done]) for i in range(len(done[0]["rows"][side]))]
            for side in ("base", "candidate")}
    return {"ready": done[-1]["ready"], "rows": rows, "block": block, "rounds": rounds * pairs, "pairs": pairs,
            "pinned": [sorted(d["cpus"]) if d["cpus"] else None for d in done],
            "order": "".join(d["order"] for d in done)}


def _merge(rows: list[dict]) -> dict:
    """One point measured by several worker pairs: all samples, statistics over all of them."""
    from perfbench.stats import summarize

    samples = [x for r in rows for x in r["samples_s"]]
    stats = summarize(samples)
    out = {**rows[-1], **stats, "samples_s": samples}
    if rows[-1].get("tokens_per_step"):
        out["tokens_per_s"] = rows[-1]["tokens_per_step"] / stats["latency_median_s"]
    mem = [r["peak_memory_bytes"] for r in rows if r.get("peak_memory_bytes")]
    out["peak_memory_bytes"] = max(mem) if mem else None
    return out


def worker_env(env: dict | None, hugepages: bool) -> dict | None:
    """A worker's environment; with `hugepages`, glibc's malloc asks for transparent huge pages
    (`glibc.malloc.hugetlb=1`, added to any GLIBC_TUNABLES already set; ignored off glibc).
    Why: on 4 KiB pages about one worker in ten settled 13% slower for its whole life on the CI
    machine, whichever code it ran (docs/ci.md); a slow worker is a false change to its pair."""
    if not hugepages:
        return env
    out = dict(os.environ if env is None else env)
    tunables = out.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        out["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, "glibc.malloc.hugetlb=1") if t)
    return out


def pick_cpu(rng) -> set[int] | None:
    """One CPU of this process's allowed set, drawn with `rng` (None where affinity is unknown)."""
    try:
        return {rng.choice(sorted(os.sched_getaffinity(0)))}
    except (AttributeError, OSError):
        return None


def start_workers(specs: list[tuple], rng, cpus: set[int] | None) -> list[WorkerProcess]:
    """Start workers one at a time, in a random order, each loaded before the next starts, then
    pin them all to `cpus`: (cmd, spec_path, overrides, label, env) per worker, in that order.

    Why: measured on the 2-core CI machine (scripts/bench_gate_pairs.py, docs/ci.md), a
    worker that loads while another loads, or that is left free to move between CPUs, can settle
    14% slower for its whole life, which no number of rounds averages out; loaded one at a time
    and sharing one CPU, pairs of the same code agree within about 1%."""
    workers: list[WorkerProcess | None] = [None] * len(specs)
    try:
        for i in rng.sample(range(len(specs)), len(specs)):
            workers[i] = WorkerProcess(*specs[i])
            workers[i].ready = workers[i].recv(LOAD_TIMEOUT_S)
    except BaseException:
        for w in workers:
            if w is not None:
                w.close()
        raise
    for w in workers:
        w.pin(cpus)
    return workers


def _one_pair(base_cmd, cand_cmd, spec_path, overrides, rounds, block, rng, base_env, cand_env, cpus=None) -> dict:
    base, cand = start_workers([(base_cmd, spec_path, overrides, "base", base_env),
                                (cand_cmd, spec_path, overrides, "candidate", cand_env)], rng, cpus)
    sides = {"base": base, "candidate": cand}
    try:
        ready = {k: w.ready for k, w in sides.items()}
        if ready["base"]["points"] != ready["candidate"]["points"]:
            raise NotMeasured(f"base and candidate expand {spec_path} to different points: "
                              f"{ready['base']['points']} vs {ready['candidate']['points']}")
        rows: dict[str, list[dict]] = {"base": [], "candidate": []}
        orders = []
        for i, _ in enumerate(ready["candidate"]["points"]):
            for k in rng.sample(list(sides), 2):
                sides[k].ask({"op": "prepare", "index": i})
            for _ in range(rounds):
                order = rng.sample(list(sides), 2)
                orders.append(order[0][0])
                for k in order:
                    sides[k].ask({"op": "measure", "repeats": block})
            for k in sides:
                rows[k].append(sides[k].ask({"op": "finish"})["row"])
        return {"ready": ready, "rows": rows, "order": "".join(orders), "cpus": cpus}
    finally:
        for w in sides.values():
            w.close()


def store_pair(store, pair: dict, subjects: dict[str, dict]) -> dict[str, str]:
    """Store both sides of an interleaved measurement as two completed runs, each tagged with its
    subject and `interleave: {rounds, block, pair}` so a comparison can pair the rounds again."""
    from perfbench.hardware.detect import fingerprint

    ids: dict[str, str] = {}
    fp = fingerprint()  # the workers run on this machine; detected once, here (it takes a second)
    for side in ("base", "candidate"):
        rd = {"fingerprint": fp, **pair["ready"][side]}
        subj = {**subjects[side], "interleave": {"rounds": pair["rounds"], "block": pair["block"],
                                                 "pairs": pair["pairs"], "pinned": pair.get("pinned"),
                                                 "first": pair["order"], "side": side}}
        ids[side] = store.create_run(name=rd["name"], spec=rd["spec"], spec_hash=rd["spec_hash"],
                                     fingerprint=rd["fingerprint"], versions=rd["versions"], commit=rd["commit"],
                                     device=rd["device"], subject=subj)
        store.set_backend_info(ids[side], rd["backend_info"], engine=rd["engine"])
        for row in pair["rows"][side]:
            store.add_point(ids[side], row)
        store.finish_run(ids[side], "completed")
    for side, other in (("base", "candidate"), ("candidate", "base")):
        run = store.get_run(ids[side])
        store.set_subject(ids[side], {**run["subject"], "interleave": {**run["subject"]["interleave"],
                                                                       "pair": ids[other]}})
    return ids
