"""Roofline: analytical counts pinned by hand and by FlopCounterMode, bounds, CLI, calibrate, place."""

from __future__ import annotations

import json

import pytest

from perfbench.models import PRESETS
from perfbench.roofline.analytical import analyze, model_ops
from tests.conftest import run_cli, tiny_spec

L1B = PRESETS["llama-3.2-1b"]


def _by_name(ops):
    return {o.name: o for o in ops}


def test_llama_1b_prefill_hand_derived_totals():
    # Llama-3.2-1B: h=2048, 16 layers, 32 q heads, 8 kv heads, d=64, I=8192, V=128256. b1, s128.
    t, h, qd, kvd, inter, v, L = 128, 2048, 32 * 64, 8 * 64, 8192, 128256, 16
    linear_per_layer = 2 * t * (h * qd + 2 * h * kvd + qd * h + 3 * h * inter)
    attention_per_layer = 2 * (2 * 1 * 32 * 128 * 128 * 64)  # QK^T and PV, full S*S convention
    lm_head = 2 * t * h * v
    expected = L * (linear_per_layer + attention_per_layer) + lm_head
    assert expected == 318_498_668_544
    rep = analyze(L1B, phase="prefill", batch=1, seq=128, peak_flops=989.4e12, bandwidth=3.35e12)
    assert rep["total"]["matmul_flops"] == expected
    # Weights dominate the bytes at batch 1: every bf16 weight is read once (the tied embedding
    # table is read by the LM head; the embedding lookup only gathers 128 rows).
    weight_bytes = 2 * (L * (h * qd + 2 * h * kvd + qd * h + 3 * h * inter + 2 * h) + h + v * h)
    assert weight_bytes <= rep["total"]["bytes"] < weight_bytes * 1.2
    assert rep["layers"] == 16 and rep["per_layer"]["flops"] * 16 < rep["total"]["flops"]


def test_llm_viewer_errors_are_not_repeated():
    ops = _by_name(model_ops(L1B, phase="prefill", batch=2, seq=64, dtype="bfloat16"))
    t = 2 * 64
    assert ops["q_proj"].flops == 2 * t * 2048 * (32 * 64)  # Q sized by query heads, not KV heads
    assert ops["k_proj"].flops == 2 * t * 2048 * (8 * 64)
    assert ops["lm_head"].flops == 2 * t * 2048 * 128256  # lm_head with the factor 2
    # The MLP activation is sized by the intermediate size (2 reads + 1 write, bf16).
    assert ops["act_mul"].bytes == 3 * t * 8192 * 2


def test_decode_reads_kv_cache_and_weight_dtype():
    ops = _by_name(model_ops(L1B, phase="decode", batch=4, seq=1000, dtype="bfloat16"))
    att = ops["attention"]
    assert att.bytes == 4 * (32 * 64) * 2 * 2 + 2 * 4 * 1001 * (8 * 64) * 2  # Q+O, then K,V cache
    w8 = _by_name(model_ops(L1B, phase="decode", batch=1, seq=16, dtype="bfloat16", weight_dtype="int8"))
    w16 = _by_name(model_ops(L1B, phase="decode", batch=1, seq=16, dtype="bfloat16"))
    assert w16["down_proj"].bytes - w8["down_proj"].bytes == 2048 * 8192 * 1
    half = _by_name(model_ops(L1B, phase="prefill", batch=1, seq=128, causal="half"))
    full = _by_name(model_ops(L1B, phase="prefill", batch=1, seq=128))
    assert half["attention"].matmul_flops == pytest.approx(full["attention"].matmul_flops * 129 / 256)


def test_bounds_on_h100():
    from perfbench.hardware import load_profile

    h100 = load_profile("h100-sxm")
    peak, bw = h100.peak_flops("bfloat16"), h100.memory_bandwidth
    dec = analyze(L1B, phase="decode", batch=1, seq=512, peak_flops=peak, bandwidth=bw)
    assert dec["total"]["bound"] == "memory" and dec["total"]["arithmetic_intensity"] < 2
    pre = analyze(L1B, phase="prefill", batch=64, seq=128, peak_flops=peak, bandwidth=bw)
    assert pre["total"]["bound"] == "compute" and pre["total"]["arithmetic_intensity"] > h100.ridge_point("bfloat16")
    assert {o["name"]: o["bound"] for o in pre["ops"]}["gate_proj"] == "compute"
    assert {o["name"]: o["bound"] for o in pre["ops"]}["input_norm"] == "memory"


@pytest.mark.parametrize("name,phase", [("tiny-llama", "prefill"), ("tiny-bert", "prefill"),
                                        ("tiny-llama", "decode")])
def test_flop_counter_mode_agrees(name, phase):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from perfbench.models.build import build_model

    arch = PRESETS[name]
    # Eager attention: explicit matmuls that FlopCounterMode counts on CPU (full S*S, as we do).
    model = build_model(arch, dtype="float32", device="cpu", seed=0, attn_implementation="eager")
    b, s = 2, 16
    ids = torch.randint(0, arch.vocab_size, (b, s))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode():
        if phase == "prefill":
            with counter:
                model(input_ids=ids) if not arch.is_decoder else model(input_ids=ids, use_cache=False)
        else:
            cache = model(input_ids=ids, use_cache=True).past_key_values
            with counter:
                model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
    rep = analyze(arch, phase=phase, batch=b, seq=s, peak_flops=1e12, bandwidth=1e11, dtype="float32")
    ours, torch_count = rep["total"]["matmul_flops"], counter.get_total_flops()
    # Some transformers versions (4.4x) build RoPE's angles as a matmul, inv_freq[d/2, 1] @
    # positions[1, tokens] (one position row for the batch): 2 * (d/2) * tokens FLOPs that are not a
    # model matmul, which 5.x no longer counts.
    rope_outer = 2 * (arch.head_size // 2) * (s if phase == "prefill" else 1) if arch.is_decoder else 0
    assert torch_count in (ours, ours + rope_outer)


def test_cli_analyze_json_contract():
    r = run_cli("roofline", "analyze", "--model", "llama-3.2-1b", "--phase", "decode", "--batch", "1",
                "--seq", "512", "--hardware", "h100-sxm", "--format", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"conventions", "total", "ops"}
    assert set(d["total"]) >= {"flops", "bytes", "arithmetic_intensity", "bound", "roofline_time_s"}
    assert d["total"]["bound"] == "memory"
    for op in d["ops"]:
        assert set(op) >= {"name", "flops", "bytes", "arithmetic_intensity", "bound", "roofline_time_s"}
    assert "causal_attention" in d["conventions"]


@pytest.mark.parametrize("args,needle", [
    (["--model", "gpt-9"], "unknown preset"),
    (["--hardware", "tpu-v9"], "unknown hardware profile"),
    (["--batch", "0"], "positive"),
    (["--seq", "-3"], "positive"),
])
def test_cli_analyze_errors(args, needle):
    base = {"--model": "llama-3.2-1b", "--phase": "prefill", "--batch": "1", "--seq": "128",
            "--hardware": "h100-sxm"}
    base.update(dict(zip(args[::2], args[1::2])))
    r = run_cli("roofline", "analyze", *[x for kv in base.items() for x in kv])
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr


def test_calibrate_place_plot_on_cpu(tmp_path, write_spec):
    store = tmp_path / "s.sqlite"
    cal = run_cli("calibrate", "--quick", "--device", "cpu", "--store", str(store), "--format", "json")
    assert cal.returncode == 0, cal.stderr
    c = json.loads(cal.stdout)
    assert c["device"] == "cpu" and c["torch_threads"] >= 1
    assert c["matmul"]["float32"]["flops_per_s"] > 1e8 and c["matmul"]["float32"]["best_shape"]
    assert c["memory"]["copy_bytes_per_s"] > 1e8 and "read" in c["memory"]["convention"]
    assert 0 < c["launch"]["launch_us"] < 1000

    run = run_cli("run", str(write_spec(tiny_spec(batch_sizes=[1, 4]))), "--store", str(store),
                  "--format", "json", "-q")
    assert run.returncode == 0, run.stderr
    rid = json.loads(run.stdout)["run_id"]
    placed = run_cli("roofline", "place", rid, "--store", str(store), "--format", "json")
    assert placed.returncode == 0, placed.stderr
    d = json.loads(placed.stdout)
    assert d["ceilings"]["source"] == "measured"  # this machine was calibrated just above
    for p in d["points"]:
        assert p["floor_s"] > 0 and p["roof_share"] > 0
        assert "no trace" in p["note"]
        if p["floor_s"] > p["latency_median_s"] or p["roof_share"] > 1.0001:
            # a loaded 2-core machine can calibrate low: the contradiction is said, not hidden
            assert "underestimate" in p["note"]
        else:
            assert p["floor_s"] + p["remainder_s"] == pytest.approx(p["latency_median_s"], rel=1e-6)
    ds = json.loads(run_cli("roofline", "place", rid, "--store", str(store), "--ceilings", "datasheet",
                            "--hardware", "generic-x86-64", "--format", "json").stdout)
    assert ds["ceilings"]["source"] == "datasheet" and ds["ceilings"]["profile"] == "generic-x86-64"

    out = tmp_path / "plots"
    pl = run_cli("roofline", "plot", rid, "--store", str(store), "--out", str(out))
    assert pl.returncode == 0, pl.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{k}_{rid}.{e}" for k in ("roofline", "latency") for e in ("png", "svg"))
    assert all((out / f).stat().st_size > 1000 for f in files)

    hw = run_cli("hw", "show", "generic-x86-64", "--store", str(store), "--format", "json")
    meas = json.loads(hw.stdout)["measured_ceilings"]
    from perfbench.hardware.detect import fingerprint
    from perfbench.roofline.ceilings import profile_for_fingerprint

    prof, _ = profile_for_fingerprint(fingerprint())
    if prof is not None and prof.name == "generic-x86-64":  # this host falls back to the generic profile
        assert meas["dense_flops"]["float32"] == pytest.approx(c["matmul"]["float32"]["flops_per_s"])
        assert meas["memory_bandwidth"] == pytest.approx(c["memory"]["bytes_per_s"])
    else:
        assert meas is None  # another profile's measured column must not show this host's numbers


def test_plotly_figures_build():
    pytest.importorskip("plotly", reason="plotly is in the dashboard extra")
    from perfbench.roofline.plots import latency_plotly, roofline_plotly

    rows = [{"batch_size": 1, "arithmetic_intensity": 5.0, "achieved_flops_per_s": 1e12, "roof_share": 0.1,
             "floor_s": 1e-3, "cpu_overhead_s": 5e-3, "remainder_s": 1e-3, "latency_median_s": 7e-3,
             "ops": [{"op_type": "matmul", "arithmetic_intensity": 50.0, "achieved_flops_per_s": 2e12}]}]
    f = roofline_plotly(rows, {"datasheet": {"peak": 1e15, "bandwidth": 3e12}})
    assert len(f.data) == 3
    g = latency_plotly(rows)
    assert [t.name for t in g.data][:3] == ["roofline floor", "CPU launch overhead", "remainder"]


def test_place_with_real_h100_traces():
    """The latency split on real H100 traces (the fixtures) with their README's timed medians:
    batch 1 is mostly CPU launch overhead, batch 64 mostly kernels running below the roof."""
    from perfbench.hardware import load_profile
    from perfbench.roofline.place import place_run
    from tests.conftest import FIXTURES

    h100 = load_profile("h100-sxm")
    traces = FIXTURES / "traces" / "h100"
    medians_s = {1: 16.28e-3, 16: 22.36e-3, 64: 48.58e-3}  # tests/fixtures/traces/h100/README.md
    run = {"spec": {"model": "llama-3.2-1b", "phase": "prefill", "dtype": "bfloat16"},
           "points": [{"status": "ok", "batch_size": b, "seq_len": 128, "new_tokens": 0,
                       "latency_median_s": m, "trace_path": str(traces / f"llama1b_prefill_eager_b{b}.json.gz")}
                      for b, m in medians_s.items()]}
    rows = {r["batch_size"]: r for r in place_run(run, peak_flops=h100.peak_flops("bfloat16"),
                                                   bandwidth=h100.memory_bandwidth)}
    for r in rows.values():
        # The parts add up, and the kernels' own time (which the profiler does not slow) is kept whole.
        assert r["floor_s"] + r["cpu_overhead_s"] + r["remainder_s"] == pytest.approx(r["latency_median_s"])
        assert r["floor_s"] + r["below_roof_s"] == pytest.approx(r["gpu_busy_s"])
        assert r["below_roof_s"] + r["other_idle_s"] == pytest.approx(r["remainder_s"])
        assert r["gpu_busy_s"] + r["cpu_overhead_s"] <= r["latency_median_s"] + 1e-12
        assert min(r["below_roof_s"], r["other_idle_s"], r["cpu_overhead_s"]) >= 0 and r["note"] is None
        kinds = {o["op_type"]: o for o in r["ops"]}
        assert 0.3 < kinds["matmul"]["roof_share"] < 1.0
        assert kinds["embedding"]["gpu_time_us"] > 0  # aten::embedding's gather kernels are found
    # The table in docs/roofline.md (python3 scripts/fixture_roofline.py), in ms.
    table = {1: (0.87, 13.11, 2.30, 2.75), 16: (6.21, 10.40, 5.76, 11.45), 64: (24.83, 2.00, 21.75, 45.65)}
    for b, (floor, cpu, rem, busy) in table.items():
        r = rows[b]
        assert (r["floor_s"] * 1e3, r["cpu_overhead_s"] * 1e3, r["remainder_s"] * 1e3, r["gpu_busy_s"] * 1e3) == \
            pytest.approx((floor, cpu, rem, busy), abs=0.006)
    assert [round(rows[b]["roof_share"] * 100, 1) for b in (1, 16, 64)] == [5.3, 23.0, 42.4]
    assert all(rows[b]["bound"] == "compute" for b in (16, 64))


def test_measured_ceilings_best_of_calibrations_and_never_across_devices(tmp_path):
    """A profile's measured column comes from calibrations on that profile's kind of device only,
    and a machine's ceilings are the best of its calibrations (a loaded or --quick run only lowers
    them)."""
    from perfbench.roofline.ceilings import measured_for_hardware, measured_for_profile
    from perfbench.store import ResultsStore

    fp = {"hardware_id": "h100host", "arch": "x86_64", "cpu_model": "Intel Xeon Platinum 8480+",
          "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_000_000_000}]}

    def res(flops, bw, launch):
        return {"matmul": {"bfloat16": {"flops_per_s": flops}}, "memory": {"bytes_per_s": bw},
                "launch": {"launch_us": launch}}

    store = tmp_path / "s.sqlite"
    with ResultsStore(store) as st:
        st.add_calibration(fingerprint=fp, versions={}, commit=None, device="cpu", results=res(7.9e11, 2.5e10, 2.0))
        assert measured_for_profile(store, "h100-sxm") is None  # a CPU calibration of an H100 host
        st.add_calibration(fingerprint=fp, versions={}, commit=None, device="cuda", results=res(7.8e14, 2.9e12, 2.4))
        st.add_calibration(fingerprint=fp, versions={}, commit=None, device="cuda", results=res(6.1e14, 3.0e12, 2.2))
        m = measured_for_hardware(st, "h100host", "cuda")
    assert m["dense_flops"]["bfloat16"] == 7.8e14 and m["memory_bandwidth"] == 3.0e12 and m["launch_us"] == 2.2
    assert m["calibrations"] == 2 and "best of 2" in m["source"]
    shown = measured_for_profile(store, "h100-sxm")
    assert shown is not None and shown["dense_flops"]["bfloat16"] == 7.8e14


def test_place_table_names_its_ceilings(tmp_path, write_spec):
    """The table title says which ceilings and profile were used (Rich must not eat the brackets)."""
    store = tmp_path / "s.sqlite"
    run = run_cli("run", str(write_spec(tiny_spec(batch_sizes=[1]))), "--store", str(store), "--format", "json", "-q")
    rid = json.loads(run.stdout)["run_id"]
    t = run_cli("roofline", "place", rid, "--store", str(store), "--ceilings", "datasheet", "--hardware",
                "generic-x86-64")
    assert t.returncode == 0, t.stderr
    assert "datasheet ceilings" in t.stdout and "[generic-x86-64, given: 768.00 GFLOP/s" in t.stdout
    assert "note: no trace" in t.stdout


def test_bert_conventions_and_refusals():
    ok = run_cli("roofline", "analyze", "--model", "bert-base", "--phase", "prefill", "--batch", "1", "--seq",
                 "128", "--hardware", "h100-sxm", "--format", "json")
    conv = json.loads(ok.stdout)["conventions"]
    assert "bidirectional" in conv["attention"] and not {"gqa", "lm_head", "kv_cache", "causal_attention"} & set(conv)
    half = run_cli("roofline", "analyze", "--model", "bert-base", "--phase", "prefill", "--batch", "1", "--seq",
                   "128", "--hardware", "h100-sxm", "--causal", "half")
    assert half.returncode == 2 and "bidirectionally" in half.stderr
    long = run_cli("roofline", "analyze", "--model", "bert-base", "--phase", "prefill", "--batch", "1", "--seq",
                   "1024", "--hardware", "h100-sxm")
    assert long.returncode == 2 and "max_position_embeddings" in long.stderr


def test_each_projection_is_placed_by_its_recorded_shape(tmp_path):
    """On the H100 traces (record_shapes), every projection's kernels are found by the weight shape
    of their aten::linear: q_proj+o_proj (same shape), k_proj+v_proj, gate_proj+up_proj, down_proj,
    lm_head, each with its own position. Shown by `roofline place --operators` on a stored run."""
    from perfbench.hardware import load_profile
    from perfbench.roofline.place import place_run
    from perfbench.store import ResultsStore
    from tests.conftest import FIXTURES

    trace = str(FIXTURES / "traces" / "h100" / "llama1b_prefill_eager_b16.json.gz")
    point = {"status": "ok", "batch_size": 16, "seq_len": 128, "new_tokens": 0, "latency_median_s": 22.36e-3,
             "trace_path": trace}
    h100 = load_profile("h100-sxm")
    (row,) = place_run({"spec": {"model": "llama-3.2-1b", "phase": "prefill", "dtype": "bfloat16"},
                        "points": [point]}, peak_flops=h100.peak_flops("bfloat16"), bandwidth=h100.memory_bandwidth)
    ops = {o["op"]: o for o in row["operators"]}
    assert set(ops) == {"q_proj+o_proj", "k_proj+v_proj", "gate_proj+up_proj", "down_proj", "lm_head"}
    assert ops["k_proj+v_proj"]["weight_shape"] == [2048, 512] and ops["lm_head"]["weight_shape"] == [2048, 128256]
    # 2 x 16 layers x 2*2048*2048*2048 FLOPs for q and o at 16 x 128 tokens
    assert ops["q_proj+o_proj"]["flops"] == 2 * 16 * 2 * 2048 * 2048 * 2048
    matmul = next(o for o in row["ops"] if o["op_type"] == "matmul")
    assert sum(o["gpu_time_us"] for o in ops.values()) == pytest.approx(matmul["gpu_time_us"], rel=0.01)
    assert all(0.3 < o["roof_share"] < 1.0 for o in ops.values())
    assert ops["gate_proj+up_proj"]["gpu_time_us"] > ops["k_proj+v_proj"]["gpu_time_us"]

    store = tmp_path / "s.sqlite"
    with ResultsStore(store) as st:
        rid = st.create_run(name="h100-b16", spec={"model": "llama-3.2-1b", "phase": "prefill", "dtype": "bfloat16",
                                                   "backend": {"name": "torch"}},
                            spec_hash="h", fingerprint={"hardware_id": "fixture", "gpus": []}, versions={},
                            commit=None, device="cuda")
        st.add_point(rid, {**point, "latency_p10_s": 0.022, "latency_p90_s": 0.023, "tokens_per_s": 1.0,
                           "peak_memory_bytes": 1, "samples_s": [22.36e-3]})
        st.finish_run(rid, "completed")
    r = run_cli("roofline", "place", rid, "--store", str(store), "--hardware", "h100-sxm", "--ceilings",
                "datasheet", "--operators")
    assert r.returncode == 0, r.stderr
    assert "batch 16: operators" in r.stdout and "gate_proj+up_proj" in r.stdout and "attention (all)" in r.stdout


def _lin(t, k, n, a=2, w=2, bias=False):
    """y[t, n] = x[t, k] W[k, n] (+ b): FLOPs (FMA = 2) and bytes (x and y once, W once)."""
    return 2 * t * k * n + (t * n if bias else 0), (t * k + t * n) * a + (k * n + (n if bias else 0)) * w


def _llama_by_hand(phase, b, s):
    """Llama-3.2-1B bf16, every operator written out from the conventions in docs/roofline.md."""
    h, L, hq, hkv, d, inter, vocab = 2048, 16, 32, 8, 64, 8192, 128256
    t = b * s if phase == "prefill" else b
    kv = s if phase == "prefill" else s + 1  # decode reads the cache plus the new token's K/V
    q_len = s if phase == "prefill" else 1
    ops = {"q_proj": _lin(t, h, hq * d), "k_proj": _lin(t, h, hkv * d), "v_proj": _lin(t, h, hkv * d),
           "o_proj": _lin(t, hq * d, h), "gate_proj": _lin(t, h, inter), "up_proj": _lin(t, h, inter),
           "down_proj": _lin(t, inter, h),
           # QK^T and PV (2 x 2 FLOPs per pair per head dim, full S*S) + softmax (5 per score); fused
           # kernel reads Q (query heads) and K, V (KV heads) and writes O
           "attention": (4 * b * hq * q_len * kv * d + 5 * b * hq * q_len * kv,
                         (2 * b * q_len * hq * d + 2 * b * kv * hkv * d) * 2),
           "input_norm": (4 * t * h, 2 * t * h * 2 + h * 2), "post_attention_norm": (4 * t * h, 2 * t * h * 2 + h * 2),
           "rope": (3 * t * (hq + hkv) * d, 2 * t * (hq + hkv) * d * 2),
           "act_mul": (5 * t * inter, 3 * t * inter * 2),  # SiLU(gate) * up, sized by the intermediate size
           "residual_add_1": (t * h, 3 * t * h * 2), "residual_add_2": (t * h, 3 * t * h * 2)}
    if phase == "decode":
        ops["kv_cache_write"] = (0, 2 * b * hkv * d * 2 * 2)  # one K and one V row, written (and read)
    ops = {k: (f * L, by * L) for k, (f, by) in ops.items()}
    ops["embedding"] = (0, t * h * 2 + t * h * 2 + t * 8)  # rows read, activations written, int64 ids
    ops["final_norm"] = (4 * t * h, 2 * t * h * 2 + h * 2)
    ops["lm_head"] = _lin(t if phase == "prefill" else b, h, vocab)  # every position in prefill
    return ops


def _bert_by_hand(b, s):
    h, L, H, d, inter = 768, 12, 12, 64, 3072
    t = b * s
    ops = {"query": _lin(t, h, h, bias=True), "key": _lin(t, h, h, bias=True), "value": _lin(t, h, h, bias=True),
           "attention": (4 * b * H * s * s * d + 5 * b * H * s * s, 4 * t * h * 2),
           "attention_output": _lin(t, h, h, bias=True),
           "attention_add_norm": (8 * t * h, 3 * t * h * 2 + 2 * h * 2),
           "intermediate": _lin(t, h, inter, bias=True), "gelu": (8 * t * inter, 2 * t * inter * 2),
           "output": _lin(t, inter, h, bias=True), "output_add_norm": (8 * t * h, 3 * t * h * 2 + 2 * h * 2)}
    ops = {k: (f * L, by * L) for k, (f, by) in ops.items()}
    ops["embeddings"] = (3 * t * h, 3 * t * h * 2 + t * h * 2 + t * 16)  # word + position + type rows
    ops["embedding_norm"] = (7 * t * h, 2 * t * h * 2 + 2 * h * 2)
    ops["pooler"] = _lin(b, h, h, bias=True)
    ops["pooler_tanh"] = (5 * b * h, 2 * b * h * 2)
    return ops


@pytest.mark.parametrize("model,phase,b,s", [("llama-3.2-1b", "prefill", 1, 128), ("llama-3.2-1b", "decode", 1, 512),
                                             ("llama-3.2-1b", "prefill", 8, 256), ("bert-base", "prefill", 4, 128)])
def test_every_operator_pinned_by_hand(model, phase, b, s):
    """Each operator's FLOPs and bytes, and the totals, equal an independent derivation."""
    r = run_cli("roofline", "analyze", "--model", model, "--phase", phase, "--batch", str(b), "--seq", str(s),
                "--hardware", "h100-sxm", "--format", "json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    got = {o["name"]: (o["flops"], o["bytes"]) for o in rep["ops"]}
    want = _bert_by_hand(b, s) if model == "bert-base" else _llama_by_hand(phase, b, s)
    assert got == {k: (float(f), float(by)) for k, (f, by) in want.items()}
    assert rep["total"]["flops"] == sum(f for f, _ in want.values())
    assert rep["total"]["bytes"] == sum(by for _, by in want.values())
    if (model, phase, b, s) == ("llama-3.2-1b", "prefill", 1, 128):
        assert (rep["total"]["flops"], rep["total"]["bytes"]) == (318_683_217_920, 2_913_932_288)
    if phase == "decode":
        assert (rep["total"]["flops"], rep["total"]["bytes"]) == (2_541_160_960, 2_491_927_048)
        assert rep["total"]["bound"] == "memory"
    # per-layer: one layer's operators, summed over ops inside the layer
    layer = [k for k in want if k not in ("embedding", "embeddings", "final_norm", "lm_head", "embedding_norm",
                                          "pooler", "pooler_tanh")]
    L = 12 if model == "bert-base" else 16
    assert rep["per_layer"]["flops"] == pytest.approx(sum(want[k][0] for k in layer) / L)
    peak, bw = rep["hardware"]["peak_flops"], rep["hardware"]["bandwidth_bytes_per_s"]
    assert rep["per_layer"]["roofline_time_s"] == pytest.approx(
        sum(max(want[k][0] / peak, want[k][1] / bw) for k in layer) / L)
    assert rep["total"]["roofline_time_s"] == pytest.approx(sum(max(f / peak, by / bw) for f, by in want.values()))
