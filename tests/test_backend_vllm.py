"""The vllm backend. Config validation, the synthetic checkpoint and the step logic run on the CPU
without vLLM (a stand-in `vllm` module records what the backend asks of it); the `gpu` tests run
the real engine (`pip install vllm`, then `bash scripts/test.sh -m gpu tests/test_backend_vllm.py`)."""

from __future__ import annotations

import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import yaml

from perfbench.errors import SpecError
from perfbench.runner import run_spec
from perfbench.spec import load_spec, parse_spec
from perfbench.store import ResultsStore
from tests.conftest import REPO, run_cli

WORKLOAD = REPO / "workloads" / "vllm-llama-3.2-1b.yaml"
FAST = {"warmup": 1, "repeats": 3, "min_seconds": 0.0, "energy": "off", "idle_seconds": 0}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PERFBENCH_CACHE", str(tmp_path / "cache"))


def vllm_spec(backend: dict | None = None, **overrides) -> dict:
    spec = {"name": "vllm-test", "model": "tiny-llama", "phase": "generate", "batch_sizes": [1, 4],
            "seq_len": 32, "new_tokens": 8, "dtype": "bfloat16", "device": "cuda",
            "backend": {"name": "vllm", **(backend or {})}, "measure": FAST}
    return {**spec, **overrides}


def problems(spec: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        parse_spec(spec, check_device=False)
    return dict(err.value.problems)


# -- validation, without vLLM -------------------------------------------------------------------

def test_shipped_workload_validates_without_vllm():
    spec = load_spec(WORKLOAD, check_device=False)
    cfg = spec.backend_config
    assert cfg.name == "vllm" and spec.phase == "generate" and spec.new_tokens == 20
    assert max(spec.batch_sizes) == 256 and cfg.max_num_seqs == 256
    assert cfg.engine_args()["enable_prefix_caching"] is False


def test_config_imports_neither_vllm_nor_torch():
    code = ("import sys, perfbench.backends.vllm.config, perfbench.backends.hf_pipeline.config; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "lots"])
def test_bad_gpu_memory_utilization_names_the_field(value):
    found = problems(vllm_spec({"gpu_memory_utilization": value}))
    assert "backend.gpu_memory_utilization" in found, found


@pytest.mark.parametrize("backend,overrides,field", [
    ({"block_size": 24}, {}, "backend.block_size"),
    ({"tensor_parallel_size": 0}, {}, "backend.tensor_parallel_size"),
    ({"tensor_parallel_size": 3}, {}, "backend.tensor_parallel_size"),  # tiny-llama has 4 heads
    ({"max_model_len": 39}, {}, "backend.max_model_len"),  # < seq_len + new_tokens = 40
    ({"max_model_len": 4096}, {}, "backend.max_model_len"),  # > tiny-llama's 1024 positions
    ({"max_num_seqs": 64, "max_num_batched_tokens": 32}, {}, "backend.max_num_batched_tokens"),
    ({"enable_chunked_prefill": False, "max_num_batched_tokens": 512}, {}, "backend.max_num_batched_tokens"),
    ({"temperature": 0.7}, {}, "backend.temperature"),  # sampling is fixed
    ({}, {"phase": "prefill", "new_tokens": 0}, "phase"),
    ({}, {"device": "cpu"}, "device"),
])
def test_validation_names_the_field(backend, overrides, field):
    found = problems(vllm_spec(backend, **overrides))
    assert field in found, found


def test_valid_engine_args():
    spec = parse_spec(vllm_spec({"max_num_seqs": 8, "max_num_batched_tokens": 512, "block_size": 32,
                                 "enforce_eager": True, "max_model_len": 40,
                                 "enable_chunked_prefill": False}), check_device=False)
    assert spec.backend_config.engine_args() == {
        "max_num_seqs": 8, "max_num_batched_tokens": 512, "gpu_memory_utilization": 0.9, "block_size": 32,
        "enforce_eager": True, "tensor_parallel_size": 1, "max_model_len": 40,
        "enable_prefix_caching": False, "enable_chunked_prefill": False}


# -- the backend against a stand-in vllm module (CPU) ---------------------------------------------

class FakeLLM:
    """Records the engine arguments and every generate call; produces `max_tokens` ids each."""

    made: list["FakeLLM"] = []

    def __init__(self, model: str, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        FakeLLM.made.append(self)

    def get_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.kwargs["tokenizer"], local_files_only=True)

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params, use_tqdm))
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(range(params.max_tokens)))])
                for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0.0-fake"
    mod.LLM = FakeLLM
    mod.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    FakeLLM.made = []
    return FakeLLM


def _run(spec: dict, tmp_path) -> dict:
    with ResultsStore(tmp_path / "store.sqlite") as st:
        res = run_spec(parse_spec(spec, check_device=False), st)
        assert res.status == "completed", res.reason
        return st.get_run(res.run_id)


def test_run_with_stand_in_engine(fake_vllm, tmp_path):
    from transformers import AutoModelForCausalLM

    run_ = _run(vllm_spec({"max_model_len": 64, "enforce_eager": True}), tmp_path)
    (llm,) = fake_vllm.made
    # the synthetic model became a local safetensors checkpoint with a tokenizer, in the cache
    ckpt = tmp_path / "cache" / "checkpoints"
    assert llm.model == llm.kwargs["tokenizer"] and llm.model.startswith(str(ckpt))
    AutoModelForCausalLM.from_pretrained(llm.model, local_files_only=True)  # loadable as saved
    assert llm.kwargs["dtype"] == "bfloat16" and llm.kwargs["seed"] == 0
    assert llm.kwargs["max_model_len"] == 64 and llm.kwargs["enable_prefix_caching"] is False
    assert run_["engine"] == {"name": "vllm", "version": "0.0.0-fake"}
    for p, b in zip(run_["points"], (1, 4)):
        assert p["status"] == "ok", p.get("error")
        assert p["tokens_source"] == "produced" and p["tokens_per_step"] == b * 8
        assert p["memory_kind"] == "nvml_device_used"
    prompts, params, tqdm = llm.calls[-1]
    assert not tqdm and len(prompts) == 4
    ids = [p["prompt_token_ids"] for p in prompts]
    assert all(len(x) == 32 for x in ids) and len({tuple(x) for x in ids}) == 4  # distinct
    assert max(max(x) for x in ids) < len(llm.get_tokenizer())
    assert (params.temperature, params.max_tokens, params.min_tokens, params.ignore_eos) == (0.0, 8, 8, True)


def test_synthetic_checkpoint_is_built_once(tmp_path):
    from perfbench.backends.vllm.backend import synthetic_checkpoint
    from perfbench.models.arch import PRESETS

    arch = PRESETS["tiny-llama"]
    a = synthetic_checkpoint(arch, "float16", 3, tmp_path)
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert synthetic_checkpoint(arch, "float16", 3, tmp_path) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    assert synthetic_checkpoint(arch, "float16", 4, tmp_path) != a  # another seed, other weights
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in a.iterdir()}


def test_load_refuses_a_cpu_run(fake_vllm, tmp_path):
    from perfbench.backends.vllm.backend import VLLMBackend
    from perfbench.runner import run_context

    spec = parse_spec(vllm_spec(device="auto"), check_device=False)
    with pytest.raises(RuntimeError, match="CUDA"):
        VLLMBackend(spec.backend_config, run_context(spec, "cpu")).load()


# -- the real engine (GPU) -----------------------------------------------------------------------

def _cli_run(spec_path, tmp_path, *sets: str):
    args = ["run", str(spec_path), "--store", str(tmp_path / "s.sqlite"), "--format", "json"]
    for s in sets:
        args += ["--set", s]
    env = {"HF_HUB_OFFLINE": "1", "PERFBENCH_CACHE": str(tmp_path / "cache")}
    return run_cli(*args, env=env, timeout=1200)  # one process per engine: vLLM frees the GPU at exit


@pytest.mark.gpu
def test_vllm_tiny_model_on_gpu(tmp_path):
    pytest.importorskip("vllm")
    spec = tmp_path / "spec.yaml"
    # head_dim 64: a size every vLLM attention kernel takes (tiny-llama's 32 is not, on some)
    spec.write_text(yaml.safe_dump(vllm_spec({"gpu_memory_utilization": 0.3, "enforce_eager": True,
                                              "max_model_len": 256},
                                             model={"preset": "tiny-llama", "head_dim": 64})))
    r = _cli_run(spec, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with ResultsStore(tmp_path / "s.sqlite") as st:
        run_ = st.get_run(st.list_runs()[0]["run_id"])
    assert run_["engine"]["name"] == "vllm"
    for p, b in zip(run_["points"], (1, 4)):
        assert p["status"] == "ok", p.get("error")
        assert p["tokens_source"] == "produced" and p["tokens_per_step"] == b * 8
        assert p["memory_kind"] == "nvml_device_used" and p["peak_memory_bytes"] > 2**30  # the pool


@pytest.mark.gpu
@pytest.mark.slow
def test_vllm_shipped_workload_on_gpu(tmp_path):
    pytest.importorskip("vllm")
    r = _cli_run(WORKLOAD, tmp_path, "batch_sizes=[1,64]", "measure.repeats=3", "measure.min_seconds=0")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with ResultsStore(tmp_path / "s.sqlite") as st:
        points = st.get_run(st.list_runs()[0]["run_id"])["points"]
    assert [p["tokens_per_step"] for p in points] == [20, 64 * 20]


def test_device_auto_on_a_host_without_a_gpu_is_refused_up_front(monkeypatch):
    """vLLM runs on CUDA only: `device: auto` on a CPU host fails validation, naming the field,
    before anything is stored (not later, when the engine starts)."""
    import perfbench.devices as devices

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    spec = yaml.safe_load((REPO / "workloads" / "vllm-llama-3.2-1b.yaml").read_text())
    spec["device"] = "auto"
    with pytest.raises(SpecError) as err:
        parse_spec(spec, "vllm.yaml")
    assert [f for f, _ in err.value.problems] == ["device"]
    assert parse_spec(spec, "vllm.yaml", check_device=False).device == "auto"
