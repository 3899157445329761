#!/usr/bin/env python3
"""Stress the results store's creation: N processes open a brand-new store at once and each write
a run with a few points, repeated R times. Prints how many processes failed.

    python3 scripts/stress_store_open.py [--procs 8] [--reps 30]

Before the store's open retried SQLite's immediate "busy" answers (journal-mode switch, WAL
recovery), this failed a few processes in a few hundred; it should print 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfbench.store import ResultsStore  # noqa: E402


def _writer(path: str, i: int) -> None:
    with ResultsStore(path, timeout_s=30) as st:
        rid = st.create_run(name=f"w{i}", spec={"phase": "prefill"}, spec_hash="h",
                            fingerprint={"hardware_id": "stress"}, versions={}, commit=None, device="cpu")
        for b in range(1, 6):
            st.add_point(rid, {"batch_size": b, "seq_len": 1, "new_tokens": 0, "status": "ok", "samples_s": [0.1]})
        st.finish_run(rid, "completed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--reps", type=int, default=30)
    a = ap.parse_args()
    ctx = mp.get_context("fork")
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for rep in range(a.reps):
            path = os.path.join(d, f"s{rep}.sqlite")
            procs = [ctx.Process(target=_writer, args=(path, i)) for i in range(a.procs)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            failed += sum(p.exitcode != 0 for p in procs)
    print(f"{failed} of {a.procs * a.reps} processes failed")


if __name__ == "__main__":
    main()
