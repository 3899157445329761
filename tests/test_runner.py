"""The runner on the tiny model: statistics, phases, failed points, interrupted runs."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perfbench.runner import run_context, run_spec
from perfbench.spec import parse_spec
from perfbench.stats import percentile, summarize
from perfbench.store import ResultsStore
from tests.conftest import REPO, as_if_in_a_terminal, run_cli, tiny_spec


def test_summarize_known_samples():
    s = summarize([0.5, 0.1, 0.4, 0.2, 0.3])
    assert s["latency_median_s"] == pytest.approx(0.3)
    assert s["latency_p10_s"] == pytest.approx(0.14)  # numpy-style linear interpolation
    assert s["latency_p90_s"] == pytest.approx(0.46)
    assert s["latency_mean_s"] == pytest.approx(0.3)
    assert s["latency_stdev_s"] == pytest.approx(0.158113883, rel=1e-6)
    assert s["latency_cv"] == pytest.approx(0.158113883 / 0.3, rel=1e-6)
    assert (s["latency_min_s"], s["latency_max_s"], s["n_samples"]) == (0.1, 0.5, 5)
    assert summarize([2.0])["latency_stdev_s"] == 0.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        summarize([])


def _run(spec_dict, store_path):
    spec = parse_spec(spec_dict)
    with ResultsStore(store_path) as st:
        res = run_spec(spec, st)
        return res, st.get_run(res.run_id)


def test_prefill_statistics_and_provenance(store_path):
    res, run = _run(tiny_spec(batch_sizes=[1, 4], measure={"repeats": 5, "min_seconds": 0.05}), store_path)
    assert res.status == "completed" and run["status"] == "completed"
    assert run["device"] == "cpu" and run["fingerprint"]["hardware_id"] == run["hardware_id"]
    assert run["versions"]["torch"] and run["versions"]["transformers"]
    assert run["backend_info"]["parameters"] == 631424
    for p, b in zip(run["points"], (1, 4)):
        assert p["status"] == "ok" and p["batch_size"] == b
        xs = p["samples_s"]
        assert len(xs) >= 5 and sum(xs) >= 0.05  # both repeats and min_seconds are met
        assert p["n_samples"] == len(xs)
        assert min(xs) <= p["latency_p10_s"] <= p["latency_median_s"] <= p["latency_p90_s"] <= max(xs)
        assert p["tokens_per_s"] == pytest.approx(b * 16 / p["latency_median_s"])
        assert p["peak_memory_bytes"] > 10 * 2**20  # the process's RSS, at least torch itself


def test_min_seconds_extends_repeats(store_path):
    _, run = _run(tiny_spec(batch_sizes=[1], measure={"repeats": 1, "min_seconds": 0.3}), store_path)
    xs = run["points"][0]["samples_s"]
    assert sum(xs) >= 0.3 and len(xs) > 1


@pytest.mark.parametrize("phase,model,new_tokens", [
    ("decode", "tiny-llama", 4), ("generate", "tiny-llama", 3), ("prefill", "tiny-bert", 0)])
def test_other_phases(store_path, phase, model, new_tokens):
    _, run = _run(tiny_spec(phase=phase, model=model, new_tokens=new_tokens, batch_sizes=[2]), store_path)
    (p,) = run["points"]
    assert p["status"] == "ok", p.get("error")
    expected_tokens = 2 * (new_tokens if phase != "prefill" else 16)
    assert p["tokens_per_s"] == pytest.approx(expected_tokens / p["latency_median_s"])


def test_decode_cache_is_reset_between_iterations():
    """Each decode iteration must start from the same context length, or latency would drift."""
    from perfbench.backends.base import Point
    from perfbench.backends.torch.backend import TorchBackend

    spec = parse_spec(tiny_spec(phase="decode", new_tokens=3))
    be = TorchBackend(spec.backend_config, run_context(spec, "cpu"))
    be.load()
    wl = be.prepare(Point(1, 16, 3))
    # Reach the cache through the step's closure.
    cache = dict(zip(wl.reset.__code__.co_freevars, (c.cell_contents for c in wl.reset.__closure__)))["cache"]
    for _ in range(2):
        wl.step()
        assert cache.get_seq_length() == 16 + 3
        wl.reset()
        assert cache.get_seq_length() == 16


def test_failed_point_is_recorded_and_run_goes_on(store_path, monkeypatch):
    from perfbench.backends.torch import backend as tb

    real = tb.TorchBackend.prepare

    def prepare(self, point):
        if point.batch_size == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(self, point)

    monkeypatch.setattr(tb.TorchBackend, "prepare", prepare)
    res, run = _run(tiny_spec(batch_sizes=[1, 2, 4]), store_path)
    assert run["status"] == "completed" and "1 of 3 points failed" in run["reason"]
    statuses = [(p["batch_size"], p["status"]) for p in run["points"]]
    assert statuses == [(1, "ok"), (2, "failed"), (4, "ok")]
    assert run["points"][1]["error"].startswith("out of memory")
    assert run["points"][1]["latency_median_s"] is None


def test_run_where_every_point_failed_is_failed_and_exits_1(write_spec, store_path, monkeypatch, capsys):
    """Nothing measured is a failure the caller must see (exit 1), with every point's error kept."""
    from perfbench.backends.torch import backend as tb
    from perfbench.cli import main

    def prepare(self, point):
        raise RuntimeError(f"CUDA out of memory at batch {point.batch_size}")

    monkeypatch.setattr(tb.TorchBackend, "prepare", prepare)
    monkeypatch.setattr(sys, "argv", ["perfbench", "run", str(write_spec(tiny_spec())), "--store",
                                      str(store_path), "-q"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    assert "status: failed (all 2 points failed; first: batch 1: out of memory" in capsys.readouterr().out
    with ResultsStore(store_path) as st:
        (row,) = st.list_runs()
        run = st.get_run(row["run_id"])
    assert run["status"] == "failed" and [p["status"] for p in run["points"]] == ["failed", "failed"]


def test_points_cut_short_by_max_seconds_say_so(store_path):
    _, run = _run(tiny_spec(batch_sizes=[1], measure={"repeats": 100000, "min_seconds": 0.0,
                                                      "max_seconds": 0.05}), store_path)
    (p,) = run["points"]
    assert p["status"] == "ok" and p["n_samples"] < 100000
    assert "max_seconds" in p["capped"] and "cut short" in run["reason"]
    _, full = _run(tiny_spec(batch_sizes=[1]), store_path)
    assert full["reason"] is None and full["points"][0]["capped"] is None


def test_cpu_allocation_failure_reads_as_out_of_memory():
    from perfbench.runner import _is_oom

    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory"))
    assert _is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not _is_oom(RuntimeError("shape mismatch"))


def test_cli_names_the_run_when_the_backend_crashes(tmp_path, write_spec, store_path):
    """A crash inside model code is one clear line naming the stored (failed) run, exit 1."""
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text('{"model_type": "llama"}')  # no weight files
    r = run_cli("run", str(write_spec(tiny_spec(weights=str(weights)))), "--store", str(store_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    with ResultsStore(store_path) as st:
        (row,) = st.list_runs()
    assert row["status"] == "failed"
    assert f"run {row['run_id']} failed" in r.stderr and f"perfbench results show {row['run_id']}" in r.stderr


def test_backend_crash_marks_run_failed(store_path, monkeypatch):
    from perfbench.backends.torch import backend as tb

    def load(self):
        raise ValueError("weights file is broken")

    monkeypatch.setattr(tb.TorchBackend, "load", load)
    spec = parse_spec(tiny_spec())
    with ResultsStore(store_path) as st:
        with pytest.raises(ValueError):
            run_spec(spec, st)
        (r,) = st.list_runs()
    assert r["status"] == "failed" and "weights file is broken" in r["reason"]


def _wait_for_points(store_path, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        if store_path.exists():
            try:
                c = sqlite3.connect(store_path, timeout=5)
                got = c.execute("SELECT COUNT(*) FROM points").fetchone()[0]
                c.close()
                if got >= n:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.1)
    raise AssertionError("no point was stored in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_keeps_completed_points(write_spec, store_path, sig):
    spec = write_spec(tiny_spec(batch_sizes=list(range(1, 40)),
                                measure={"repeats": 2, "min_seconds": 0.4}))
    proc = subprocess.Popen([sys.executable, "-m", "perfbench", "run", str(spec), "--store",
                             str(store_path), "-q"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_if_in_a_terminal)
    _wait_for_points(store_path, 1, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    with ResultsStore(store_path) as st:
        (r,) = st.list_runs()
        run = st.get_run(r["run_id"])
    assert run["status"] == "interrupted", (run["status"], err)
    assert 1 <= len(run["points"]) < 39
    for p in run["points"]:  # every stored point is whole
        assert p["status"] == "ok" and p["n_samples"] == len(p["samples_s"]) >= 2
        assert p["latency_median_s"] is not None and p["tokens_per_s"] is not None
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err


def test_cli_run_and_results(write_spec, store_path):
    spec = write_spec(tiny_spec())
    r = run_cli("run", str(spec), "--store", str(store_path), "-q")
    assert r.returncode == 0, r.stderr
    assert "run " in r.stdout and "tokens/s" in r.stdout

    lst = run_cli("results", "list", "--store", str(store_path), "--format", "json")
    runs = json.loads(lst.stdout)
    assert len(runs) == 1 and {"run_id", "name", "created_at"} <= set(runs[0])
    rid = runs[0]["run_id"]
    assert rid in r.stdout

    show = json.loads(run_cli("results", "show", rid, "--store", str(store_path), "--format", "json").stdout)
    assert {"run_id", "spec", "fingerprint", "versions", "commit", "points"} <= set(show)
    assert show["spec"]["name"] == "tiny-test"
    for p in show["points"]:
        assert {"batch_size", "seq_len", "latency_median_s", "latency_p10_s", "latency_p90_s",
                "tokens_per_s", "peak_memory_bytes", "samples_s"} <= set(p)

    csv_out = run_cli("results", "show", rid, "--store", str(store_path), "--format", "csv").stdout
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(csv_out)))
    header = csv_out.splitlines()[0].split(",")
    assert header[0] == "run_id" and len(header) == len(set(header))  # no column twice
    assert len(rows) == 2 and {r["run_status"] for r in rows} == {"completed"}
    assert {r["status"] for r in rows} == {"ok"} and [int(r["batch_size"]) for r in rows] == [1, 2]
    assert all(len(r["samples_s"].split(";")) == int(r["n_samples"]) for r in rows)

    table = run_cli("results", "show", rid[:10], "--store", str(store_path))
    assert table.returncode == 0 and "tiny-test" in table.stdout

    bad = run_cli("results", "show", "nope", "--store", str(store_path))
    assert bad.returncode == 2 and "no run" in bad.stderr
    assert run_cli("results", "list", "--store", str(store_path), "--format", "xml").returncode == 2


def test_cli_corrupt_store_exit_3(tmp_path, write_spec):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    r = run_cli("run", str(write_spec(tiny_spec())), "--store", str(bad))
    assert r.returncode == 3 and "corrupt" in r.stderr
    assert bad.read_bytes() == b"garbage" * 1000


def test_usage_errors_exit_2_without_traceback():
    for args in (["hw", "detect", "--format", "xml"], ["run", "--bogus"], ["results", "show"]):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_trace_capture_on_cpu(store_path, tmp_path, monkeypatch):
    """measure.trace profiles one extra iteration: samples stay untouched, the trace says 'no GPU'."""
    from perfbench.trace import analyze

    spec = parse_spec(tiny_spec(batch_sizes=[2], measure={"repeats": 3, "trace": True}))
    monkeypatch.chdir(tmp_path)  # a relative trace dir is stored absolute: readers may run elsewhere
    with ResultsStore(store_path) as st:
        res = run_spec(spec, st, trace_dir=Path("traces"))
        (p,) = st.get_run(res.run_id)["points"]
    assert p["n_samples"] == 3 and len(p["samples_s"]) == 3
    path = p["trace_path"]
    assert path.endswith(".json.gz") and res.run_id in path and Path(path).is_absolute()
    figs = analyze(path).figures
    assert figs.has_gpu is False and figs.bound is None and "GPU" in figs.note
    # The point keeps the trace's figures and the traced span against its own timed median.
    assert p["trace_figures"]["has_gpu"] is False
    assert p["timed_median_us"] == pytest.approx(p["latency_median_s"] * 1e6)
    assert p["traced_span_us"] > 0 and p["profiler_overhead_ratio"] > 0

    out = run_cli("trace", "run", res.run_id, "--store", str(store_path), "--format", "json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert {"points", "transition_batch", "methods", "agree"} <= set(d)
    assert d["points"][0]["batch_size"] == 2 and d["points"][0]["has_gpu"] is False
    untraced = run_cli("trace", "run", res.run_id, "--store", str(store_path.parent / "none.sqlite"))
    assert untraced.returncode == 3


def test_failed_trace_capture_keeps_the_timed_point(store_path, monkeypatch):
    """The profiler runs after the timed iterations: if it breaks, the measurement still stands."""
    import perfbench.trace.capture as capture

    def broken(*a, **k):
        raise RuntimeError("profiler already enabled on this thread")

    monkeypatch.setattr(capture, "capture_trace", broken)
    spec = parse_spec(tiny_spec(batch_sizes=[1], measure={"repeats": 3, "trace": True}))
    with ResultsStore(store_path) as st:
        res = run_spec(spec, st, trace_dir=store_path.parent / "traces")
        (p,) = st.get_run(res.run_id)["points"]
    assert res.status == "completed" and p["status"] == "ok" and len(p["samples_s"]) == 3
    assert p["trace_path"] is None
    assert p["trace_error"].startswith("trace capture failed: RuntimeError: profiler already")


def _decode_tokens(spec_overrides: dict, iterations: int = 2) -> tuple[list, dict, object]:
    """Run a decode workload's step `iterations` times (with its reset between) and collect tokens."""
    from perfbench.backends.base import Point
    from perfbench.backends.torch.backend import TorchBackend

    spec = parse_spec(tiny_spec(phase="decode", new_tokens=4, **spec_overrides))
    be = TorchBackend(spec.backend_config, run_context(spec, "cpu"))
    info = be.load()
    wl = be.prepare(Point(2, 16, 4))
    out = []
    for _ in range(iterations):
        out.append(wl.step())
        wl.reset()
    return out, info, wl


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_modes_decode_over_a_static_cache(mode):
    """CUDA-graph modes decode over a StaticCache that is rewound to the context between iterations:
    every iteration produces the same tokens as eager decode over a growing cache."""
    eager, info, wl = _decode_tokens({})
    assert info["kv_cache"] == "dynamic" and wl.info["kv_cache"] == "dynamic"
    graphed, info, wl = _decode_tokens({"backend": {"compile": mode}}, iterations=3)
    assert info["kv_cache"] == "static" and wl.info["kv_cache"] == "static"
    assert all(t.equal(eager[0]) for t in eager + graphed)


def test_static_cache_rewinds_to_the_context():
    """The rewind is what keeps iterations identical: without it the next step writes past the end."""
    import torch

    from perfbench.backends.torch.static_cache import StaticDecodeCache
    from perfbench.models.build import build_model

    spec = parse_spec(tiny_spec(phase="decode", new_tokens=2))
    model = build_model(spec.arch, dtype="float32", device="cpu", seed=0)
    ids = torch.randint(0, spec.arch.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    kv = StaticDecodeCache(model, 1, 16, 2)
    with torch.inference_mode():
        first = model(input_ids=ids, past_key_values=kv.cache, use_cache=True,
                      **kv.prefill_kwargs("cpu")).logits[:, -1:].argmax(-1)
        ref = model(input_ids=ids, use_cache=True)  # dynamic cache, eager
        dyn = ref.past_key_values
        expect = model(input_ids=first, past_key_values=dyn, use_cache=True).logits
        for _ in range(3):
            got = model(input_ids=first, **kv.step_kwargs(0)).logits
            assert torch.allclose(got, expect, atol=1e-5)
            model(input_ids=first, **kv.step_kwargs(1))
            kv.rewind()


@pytest.mark.slow
def test_cuda_graph_mode_generate_matches_eager(store_path):
    """generate under reduce-overhead uses transformers' static cache and our compiled forward."""
    from perfbench.backends.base import Point
    from perfbench.backends.torch.backend import TorchBackend

    outs = {}
    for mode in ("none", "reduce-overhead"):
        spec = parse_spec(tiny_spec(phase="generate", new_tokens=3, backend={"compile": mode}))
        be = TorchBackend(spec.backend_config, run_context(spec, "cpu"))
        info = be.load()
        wl = be.prepare(Point(2, 16, 3))
        outs[mode] = [wl.step().output for _ in range(3)]
        assert info["kv_cache"] == ("static" if mode != "none" else "dynamic")
    assert all(t.equal(outs["none"][0]) for t in outs["none"] + outs["reduce-overhead"])
    assert outs["none"][0].shape == (2, 16 + 3)
    assert wl.step().tokens_out == 2 * 3  # counted from the ids produced


@pytest.mark.slow
def test_torch_compile_default_on_cpu(store_path):
    """The compiled path really compiles (dynamo captures graphs; warm-up pays for it) and measures."""
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    _, run = _run(tiny_spec(batch_sizes=[1, 2], backend={"compile": "default"},
                            measure={"warmup": 2, "repeats": 3}), store_path)
    assert run["backend_info"]["compile"] == "default"
    for p in run["points"]:
        assert p["status"] == "ok", p["error"]
    assert counters["stats"]["unique_graphs"] > graphs_before
    # The first point's warm-up includes compilation: longer than its timed iterations. (A margin
    # of 20x failed under CPU contention, when the timed median itself swells.)
    first = run["points"][0]
    assert first["warmup_s"] > 2 * first["latency_median_s"]


def test_local_weights_path_loads_real_weights(tmp_path, store_path):
    """`weights:` loads a local checkpoint (never a hub): the model is the saved one, not the seed's."""
    import torch

    from perfbench.models import PRESETS
    from perfbench.models.build import build_model

    saved = build_model(PRESETS["tiny-llama"], dtype="float32", device="cpu", seed=123)
    saved.save_pretrained(tmp_path / "ckpt")
    loaded = build_model(PRESETS["tiny-llama"], dtype="float32", device="cpu", seed=0,
                         weights=str(tmp_path / "ckpt"))
    seeded = build_model(PRESETS["tiny-llama"], dtype="float32", device="cpu", seed=0)
    w = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(loaded.state_dict()[w], saved.state_dict()[w])
    assert not torch.equal(loaded.state_dict()[w], seeded.state_dict()[w])
    _, run = _run(tiny_spec(batch_sizes=[1], weights=str(tmp_path / "ckpt")), store_path)
    assert run["points"][0]["status"] == "ok" and run["spec"]["weights"] == str(tmp_path / "ckpt")


def test_timing_runs_without_the_cyclic_gc_and_restores_it():
    """A gc pass inside one timed iteration would be an outlier unrelated to the workload."""
    import gc

    from perfbench.backends.base import PreparedPoint, WallTimer
    from perfbench.runner import measure_point

    seen, warm = [], []
    spec = parse_spec(tiny_spec(measure={"warmup": 2, "repeats": 3, "min_seconds": 0.0}))
    out = measure_point(PreparedPoint(lambda: seen.append(gc.isenabled())), WallTimer(), spec,
                        on_warmup=lambda d, t: warm.append((d, t)))
    assert seen == [True, True, False, False, False]  # warm-up with gc, timed iterations without
    assert gc.isenabled() and warm == [(0, 2), (1, 2)] and len(out["samples_s"]) == 3


def test_table_flags_a_wide_spread_not_a_single_outlier():
    """One OS hiccup inflates the CV but not the p10-p90 spread the median stands on."""
    from rich.console import Console

    from perfbench.cli.run import points_table

    base = {"seq_len": 16, "new_tokens": 0, "status": "ok", "n_samples": 100, "tokens_per_s": 1.0,
            "peak_memory_bytes": 1}
    hiccup = {**base, "batch_size": 1, "latency_median_s": 1e-3, "latency_p10_s": 0.95e-3,
              "latency_p90_s": 1.1e-3, "latency_cv": 1.4}
    con = Console(width=200, record=True)
    con.print(points_table([hiccup]))
    assert "noisy" not in con.export_text()
    wide = {**hiccup, "batch_size": 2, "latency_p90_s": 3e-3, "latency_cv": 0.5}
    con = Console(width=200, record=True)
    con.print(points_table([hiccup, wide]))
    out = con.export_text()
    assert "3.000 ms!" in out and "noisy" in out
