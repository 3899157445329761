"""What one trial process does: validate the trial's workload, run it as a normal stored run
(tagged with the sweep id), and hand back a small summary.

Why a process per trial: a crash, an out-of-memory kill or a hang must cost one trial, not the
sweep, and a GPU must start every trial clean. The local executor forks trial processes from a
warm fork server (`_warm.py`) so they skip the ~5 s torch+transformers import; the same code also
runs cold as a command, which the Ray executor (and `PERFBENCH_SWEEP_START=spawn`) uses:

    python -m perfbench.sweep.trial --payload PAYLOAD.json --result RESULT.json

The payload is JSON: `workload` (the trial's workload mapping), `sweep_id`, `store` (SQLite path),
`trial_key` and optionally `spec_path`. The result is JSON written atomically to RESULT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from perfbench.schema import metrics

#: Testing aid, e.g. `kill:SUBSTRING;hang:OTHER`: a trial whose key contains SUBSTRING dies by
#: SIGKILL (as from the kernel's OOM killer) when its first point starts, one matching OTHER hangs
#: there (after starting a `sleep` child, so a timeout must kill the whole process group). Lets
#: crash and timeout handling be tested end to end without a real crash.
FAULT_ENV = "PERFBENCH_SWEEP_FAULT"


#: Point fields a trial's summary carries back (the full points are in the store): what names the
#: point, and every metric of the result schema.
SUMMARY_FIELDS = ("batch_size", "seq_len", "new_tokens", "status", "error", "n_samples", "warmup_s",
                  *metrics())


def _fault(key: str) -> None:
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(";")):
        kind, _, needle = spec.partition(":")
        if needle not in key:
            continue
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            import subprocess

            child = subprocess.Popen(["sleep", "600"])
            print(f"fault: hanging, with child pid {child.pid}", flush=True)
            while True:
                time.sleep(3600)


def summarize_point(p: dict[str, Any]) -> dict[str, Any]:
    """The part of a point a sweep needs; `measure_s` is warm-up plus measured time."""
    d = {k: p.get(k) for k in SUMMARY_FIELDS}
    samples = p.get("samples_s") or []
    d["measure_s"] = (p.get("warmup_s") or 0.0) + float(sum(samples))
    return d


def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one trial; never raises for a failing workload (the failure is the result)."""
    from perfbench.errors import PerfbenchError
    from perfbench.spec import parse_spec
    from perfbench.store import ResultsStore

    t0 = time.perf_counter()
    key = payload.get("trial_key", "")
    try:
        spec = parse_spec(payload["workload"], f"trial {key}")  # checks the device here, on this host
    except PerfbenchError as exc:
        return {"run_id": None, "status": "failed", "reason": str(exc), "points": [],
                "trial_process_s": time.perf_counter() - t0}
    from perfbench.runner import Progress, run_spec

    hooks = Progress(on_point_start=lambda p, i, n: _fault(key)) if os.environ.get(FAULT_ENV) else None
    with ResultsStore(payload["store"]) as st:
        try:
            res = run_spec(spec, st, sweep_id=payload.get("sweep_id"), spec_path=payload.get("spec_path"),
                           progress=hooks)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the run is stored as failed with this reason by run_spec
            rows = [r for r in st.list_runs(sweep_id=payload.get("sweep_id")) if r.get("run_id")]
            mine = [r for r in rows if r["status"] == "failed" and r["name"] == spec.name]
            return {"run_id": mine[0]["run_id"] if mine else None, "status": "failed",
                    "reason": f"{type(exc).__name__}: {exc}"[:4000], "points": [],
                    "trial_process_s": time.perf_counter() - t0}
    return {"run_id": res.run_id, "status": res.status, "reason": res.reason,
            "points": [summarize_point(p) for p in res.points],
            "trial_process_s": time.perf_counter() - t0}


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Atomic: the parent sees the whole result or none (a half-written file reads as a crash)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, path)


def watch_parent(interval_s: float = 0.5) -> None:
    """End this trial (SIGTERM: its run is closed as interrupted) if the sweep process dies, so a
    killed sweep leaves no orphan holding the CPU or the GPU."""
    ppid = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != ppid:
                try:
                    os.killpg(os.getpgrp(), signal.SIGTERM)
                except OSError:
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=loop, name="perfbench-parent-watch", daemon=True).start()


def forked_main(payload: dict[str, Any], result_path: str, log_path: str) -> None:
    """Entry point of a trial forked from the warm fork server."""
    try:
        os.setsid()  # own process group: a timeout kills the trial and anything it started
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    watch_parent()
    write_result(result_path, run_trial(payload))
    sys.stdout.flush()
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perfbench.sweep.trial", description=__doc__.split("\n\n")[0])
    ap.add_argument("--payload", required=True, help="payload JSON file ('-' for stdin)")
    ap.add_argument("--result", required=True, help="where to write the result JSON")
    args = ap.parse_args(argv)
    watch_parent()
    text = sys.stdin.read() if args.payload == "-" else Path(args.payload).read_text()
    write_result(args.result, run_trial(json.loads(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
