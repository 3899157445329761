"""The llama.cpp backend on the tiny Llama GGUF (CPU, one thread: steady on a small shared box)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from perfbench.errors import SpecError
from perfbench.runner import run_spec
from perfbench.spec import parse_spec
from perfbench.store import ResultsStore
from tests.conftest import REPO, run_cli

llama_cpp = pytest.importorskip("llama_cpp")

#: llama.cpp's counters start after a decode call's batch set-up that perfbench's clock includes;
#: on the tiny model (~0.1 ms a token) that is a 1-3% gap. 5% leaves room for noise, and
#: measure.min_seconds gives ~100 steps a point so one preempted step cannot move a median.
AGREE = 0.05


@pytest.fixture(scope="module", autouse=True)
def gguf_cache(tmp_path_factory):
    """One GGUF cache for this module: each preset is written once, not once per test."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("perfbench-cache")
    mp.setenv("PERFBENCH_CACHE", str(path))
    yield path
    mp.undo()


def llama_spec(**over) -> dict:
    spec = {"name": "llama-cpp-test", "model": "tiny-llama", "phase": "generate", "batch_sizes": [1],
            "seq_len": 32, "new_tokens": 8, "dtype": "float32", "device": "cpu",
            "backend": {"name": "llama-cpp", "n_threads": 1},
            "measure": {"warmup": 2, "repeats": 5, "min_seconds": 0.1, "energy": "off"}}
    for k, v in over.items():
        spec[k] = {**spec[k], **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v
    return spec


def problems(spec: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec)
    return dict(exc.value.problems)


def run(spec: dict, tmp_path) -> dict:
    with ResultsStore(tmp_path / "results.sqlite") as st:
        res = run_spec(parse_spec(spec), st)
        run = st.get_run(res.run_id)
    assert res.status == "completed", res.reason
    return run


# -- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("over, field, says", [
    ({"backend": {"n_ctx": 32}}, "backend.n_ctx", "n_ctx >= 40"),
    ({"backend": {"n_batch": 64, "n_ubatch": 128}}, "backend.n_ubatch", "n_ubatch <= 64"),
    ({"batch_sizes": [1, 2]}, "batch_sizes", "batch_sizes: [1]"),
    ({"model": "meta-llama/Llama-3.2-1B"}, "model", "never downloads"),
    ({"model": "tiny-bert", "phase": "prefill", "new_tokens": 0}, "model", "llama-family"),
    ({"dtype": "bfloat16"}, "dtype", "float32 or float16"),
    ({"backend": {"n_gpu_layers": -1}}, "backend.n_gpu_layers", "n_gpu_layers: 0"),
    ({"backend": {"type_v": "q8_0"}}, "backend.type_v", "flash_attn: true"),
    ({"backend": {"threads": 2}}, "backend.threads", "n_threads"),
])
def test_config_refusals_name_the_field_and_the_fix(over, field, says):
    found = problems(llama_spec(**over))
    assert field in found, found
    assert says in found[field]


def test_gguf_file_phase_rules_are_checked_by_the_backend(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")  # validation only looks at the name
    found = problems(llama_spec(model={"path": str(gguf)}, phase="prefill", new_tokens=8))
    assert "prefill produces no tokens" in found["new_tokens"]


def test_config_imports_neither_torch_nor_llama_cpp():
    code = ("import sys; import perfbench.backends.llama_cpp.config as c; "
            "print(sorted(m for m in ('torch', 'llama_cpp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# -- phases ---------------------------------------------------------------------------------------

def agree(engine: float, ours: float) -> None:
    assert engine == pytest.approx(ours, rel=AGREE), f"engine {engine:.1f} vs perfbench {ours:.1f} tokens/s"


def test_prefill_is_llama_bench_pp(tmp_path):
    run_ = run(llama_spec(phase="prefill", new_tokens=0, seq_len=64, backend={"n_batch": 32}), tmp_path)
    p = run_["points"][0]
    assert p["status"] == "ok" and p["tokens_source"] == "requested" and p["tokens_per_step"] == 64
    assert p["pp_tokens_per_s"] == pytest.approx(64 / p["pp_median_s"])
    assert p["tg_tokens_per_s"] is None and p["engine_tg_tokens_per_s"] is None
    assert p["engine_timings"]["n_pp"] == 64  # two n_batch chunks, counted once each
    agree(p["engine_pp_tokens_per_s"], p["pp_tokens_per_s"])


def test_decode_is_tg_at_depth_and_rewinds_between_steps(tmp_path):
    run_ = run(llama_spec(phase="decode"), tmp_path)
    p = run_["points"][0]
    assert p["context_len"] == 32 and p["kv_cache"] == "static"
    assert p["tokens_source"] == "produced" and p["tokens_per_step"] == 8
    assert p["tg_tokens_per_s"] == pytest.approx(8 / p["tg_median_s"])
    assert p["tokens_per_s"] == pytest.approx(8 / p["latency_median_s"])
    # every step generated 8 tokens one decode each: the cache was rewound to the context each time
    assert p["engine_timings"]["n_tg"] == 8 and "n_pp" not in p["engine_timings"]
    agree(p["engine_tg_tokens_per_s"], p["tg_tokens_per_s"])


def test_generate_reports_pp_and_tg_and_the_engine(tmp_path):
    run_ = run(llama_spec(), tmp_path)
    p = run_["points"][0]
    assert p["tokens_per_step"] == 8 and p["tokens_source"] == "produced"
    assert p["tokens_per_s"] == pytest.approx(8 / p["latency_median_s"])
    assert p["pp_tokens_per_s"] == pytest.approx(32 / p["pp_median_s"])
    assert p["engine_timings"]["n_pp"] == 32 and p["engine_timings"]["n_tg"] == 8
    agree(p["engine_pp_tokens_per_s"], p["pp_tokens_per_s"])
    agree(p["engine_tg_tokens_per_s"], p["tg_tokens_per_s"])
    eng = run_["engine"]
    assert eng["name"] == "llama.cpp" and eng["version"] == llama_cpp.__version__
    assert eng["build"] and "CPU" in eng["system_info"]
    info = run_["backend_info"]
    assert info["parameters"] == 631424 and info["gguf_dtype"] == "f32" and info["n_threads"] == 1


def test_a_gguf_file_runs_with_its_own_types(tmp_path):
    from perfbench.models.arch import PRESETS
    from perfbench.models.gguf_tiny import write_llama_gguf

    gguf = write_llama_gguf(PRESETS["tiny-llama"], tmp_path / "tiny-f16.gguf", seed=1, dtype="f16")
    run_ = run(llama_spec(model={"path": str(gguf)}, phase="decode"), tmp_path)
    assert run_["points"][0]["tg_tokens_per_s"] > 0
    assert run_["backend_info"]["gguf_dtype"] == "from the file" and "F16" in run_["backend_info"]["model_desc"]


def test_float16_and_a_quantized_kv_cache(tmp_path):
    spec = llama_spec(dtype="float16", backend={"flash_attn": True, "type_k": "q8_0", "type_v": "q8_0"})
    run_ = run(spec, tmp_path)
    assert run_["points"][0]["tg_tokens_per_s"] > 0
    assert run_["backend_info"]["gguf_dtype"] == "f16" and run_["backend_info"]["type_v"] == "q8_0"


def test_cli_runs_the_shipped_workload(tmp_path, gguf_cache):
    out = run_cli("run", "workloads/llama-cpp-tiny-cpu.yaml", "--store", str(tmp_path / "r.sqlite"),
                  env={"PERFBENCH_CACHE": str(gguf_cache)}, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "pp tok/s" in out.stdout and "tg tok/s" in out.stdout and "engine tg" in out.stdout
