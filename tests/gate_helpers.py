"""Synthetic runs for the gate's tests: a store filled without running any model."""

from __future__ import annotations

import numpy as np

from perfbench.stats import summarize

SPEC = {"name": "synth", "model": "tiny-llama", "phase": "prefill", "batch_sizes": [1, 4], "seq_len": 16,
        "new_tokens": 0, "dtype": "float32", "device": "cpu", "backend": {"name": "torch"}}


def add_run(store, *, level: float = 1e-3, n: int = 30, noise: float = 0.01, seed: int = 0, name: str = "synth",
            subject: dict | None = None, hardware_id: str = "hw-test", spec_hash: str = "synthhash",
            batches=(1, 4), backend: str = "torch", memory: int = 100_000_000) -> str:
    """One completed run whose points' samples are lognormal around `level` x batch."""
    rng = np.random.default_rng(seed)
    spec = {**SPEC, "name": name, "batch_sizes": list(batches), "backend": {"name": backend}}
    rid = store.create_run(name=name, spec=spec, spec_hash=spec_hash, fingerprint={"hardware_id": hardware_id},
                           versions={"python": "3"}, commit="abc", device="cpu", subject=subject)
    for b in batches:
        samples = (level * b * np.exp(rng.normal(0, noise, n))).tolist()
        store.add_point(rid, {"batch_size": b, "seq_len": 16, "new_tokens": 0, "status": "ok",
                              **summarize(samples), "samples_s": samples, "tokens_per_step": 16 * b,
                              "tokens_per_s": 16 * b / float(np.median(samples)), "peak_memory_bytes": memory})
    store.finish_run(rid, "completed")
    return rid
