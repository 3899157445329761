"""GPU paths. Marked `gpu`: skipped cleanly without CUDA. On a GPU machine: `bash scripts/test.sh -m gpu`."""

from __future__ import annotations

import json

import pytest

from perfbench.runner import run_spec
from perfbench.spec import parse_spec
from perfbench.store import ResultsStore
from tests.conftest import run_cli, tiny_spec

pytestmark = pytest.mark.gpu


def _run(store_path, **kw):
    spec = parse_spec(tiny_spec(device="cuda", **kw))
    with ResultsStore(store_path) as st:
        res = run_spec(spec, st, trace_dir=store_path.parent / "traces")
        return st.get_run(res.run_id)


def test_cuda_run_uses_device_memory_and_events(store_path):
    run = _run(store_path, dtype="bfloat16", batch_sizes=[1, 8])
    assert run["device"] == "cuda" and run["fingerprint"]["gpus"]
    for p in run["points"]:
        assert p["status"] == "ok" and p["memory_kind"] == "cuda_max_allocated"
        assert 0 < p["peak_memory_bytes"] < 2**30
        assert p["latency_median_s"] > 0


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_modes(store_path, mode):
    run = _run(store_path, dtype="bfloat16", backend={"compile": mode}, measure={"warmup": 3})
    assert all(p["status"] == "ok" for p in run["points"]), [p["error"] for p in run["points"]]


def test_trace_capture_has_gpu_activity(store_path):
    from perfbench.trace.metrics import analyze

    run = _run(store_path, dtype="bfloat16", measure={"trace": True})
    for p in run["points"]:
        figs = analyze(p["trace_path"]).figures
        assert figs.has_gpu and figs.kernels > 10 and figs.tklqt_us > 0


def test_calibrate_cuda(tmp_path):
    r = run_cli("calibrate", "--quick", "--device", "cuda", "--store", str(tmp_path / "s.sqlite"),
                "--format", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["matmul"]["bfloat16"]["flops_per_s"] > 1e12
    assert d["host_device"]["h2d_bytes_per_s"] > 1e9


def test_reduce_overhead_decode_replays_cuda_graphs(store_path):
    """Decode under reduce-overhead runs over a StaticCache and replays CUDA graphs: its trace shows
    graph launches and far fewer launch calls per token than eager decode."""
    from perfbench.trace.metrics import analyze

    figs = {}
    for mode in ("none", "reduce-overhead"):
        run = _run(store_path, dtype="bfloat16", phase="decode", new_tokens=4, batch_sizes=[2],
                   backend={"compile": mode}, measure={"warmup": 3, "trace": True})
        (p,) = run["points"]
        assert p["status"] == "ok", p["error"]
        assert run["backend_info"]["kv_cache"] == ("static" if mode != "none" else "dynamic")
        figs[mode] = analyze(p["trace_path"]).figures
    assert figs["reduce-overhead"].graph_launches >= 4
    assert figs["reduce-overhead"].launches < figs["none"].launches / 4
