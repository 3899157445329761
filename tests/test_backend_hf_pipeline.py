"""The hf-pipeline backend on the tiny model (CPU, offline): validation, runs, counting, the CLI."""

from __future__ import annotations

import pytest

from perfbench.errors import SpecError
from perfbench.runner import run_spec
from perfbench.spec import load_spec, parse_spec
from perfbench.store import ResultsStore
from tests.conftest import REPO, run_cli, tiny_spec

WORKLOAD = REPO / "workloads" / "hf-pipeline-tiny-cpu.yaml"
SWEEP = REPO / "workloads" / "sweeps" / "hf-pipeline-batch-tokens.yaml"
FAST = {"warmup": 1, "repeats": 3, "min_seconds": 0.0, "energy": "off", "idle_seconds": 0}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No hub, and derived artefacts (tokenizers) in a per-test cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PERFBENCH_CACHE", str(tmp_path / "cache"))


def pipe_spec(**overrides) -> dict:
    """A tiny generate spec on this backend; `backend` replaces (not merges into) tiny_spec's."""
    spec = tiny_spec(phase="generate", new_tokens=4, seq_len=16, measure=FAST)
    spec["backend"] = {"name": "hf-pipeline", "compare_repeats": 1}
    return {**spec, **overrides}


def problems(spec: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    return dict(err.value.problems)


def run(spec: dict, tmp_path) -> dict:
    with ResultsStore(tmp_path / "store.sqlite") as st:
        res = run_spec(parse_spec(spec), st)
        assert res.status == "completed", res.reason
        return st.get_run(res.run_id)


def test_shipped_files_validate():
    spec = load_spec(WORKLOAD)
    assert spec.backend_config.name == "hf-pipeline" and spec.phase == "generate"
    from perfbench.sweep.spec import load_sweep

    sweep = load_sweep(SWEEP)
    assert set(sweep.params) == {"batch_size", "new_tokens"}


@pytest.mark.parametrize("override,field", [
    ({"phase": "prefill", "new_tokens": 0}, "phase"),  # capabilities: generate only
    ({"backend": {"name": "hf-pipeline", "batch_size": 0}}, "backend.batch_size"),
    ({"backend": {"name": "hf-pipeline", "prompt_kind": "poems"}}, "backend.prompt_kind"),
    ({"backend": {"name": "hf-pipeline", "max_new_tokens": 8}}, "backend.max_new_tokens"),  # new_tokens says it
    ({"backend": {"name": "hf-pipeline", "device_map": "cpu"}}, "backend.device_map"),  # synthetic: built on device
])
def test_validation_names_the_field(override, field):
    found = problems(pipe_spec(**override))
    assert field in found, found


def test_run_counts_produced_tokens_and_overhead(tmp_path):
    run_ = run(pipe_spec(batch_sizes=[1, 3], backend={"name": "hf-pipeline", "compare_repeats": 1,
                                                      "prompt_kind": "mixed"}), tmp_path)
    assert run_["engine"]["name"] == "hf-pipeline" and run_["engine"]["version"]
    for p, b in zip(run_["points"], (1, 3)):
        assert p["status"] == "ok", p.get("error")
        # random weights never emit EOS: exactly batch * new_tokens, counted from the returned ids
        assert p["tokens_source"] == "produced" and p["tokens_per_step"] == b * 4
        assert p["tokens_per_s"] == pytest.approx(b * 4 / p["latency_median_s"])
        assert p["overhead_ratio"] > 0
        assert 0 < p["prompt_tokens"] <= b * 16  # truncated to seq_len
        assert p["reference_median_s"] > 0


def test_pipeline_batch_size_and_no_comparison(tmp_path):
    run_ = run(pipe_spec(batch_sizes=[5], backend={"name": "hf-pipeline", "batch_size": 2,
                                                   "compare_generate": False,
                                                   "prompt_kind": "long_context"}), tmp_path)
    (p,) = run_["points"]
    assert p["status"] == "ok", p.get("error")
    assert p["tokens_per_step"] == 5 * 4 and p["overhead_ratio"] is None
    assert p["prompt_tokens"] == 5 * 16  # long prompts: every one cut to seq_len


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_local_checkpoint_folder(tmp_path, with_tokenizer):
    """A transformers checkpoint folder runs as model: {path: ...}, with its own tokenizer or,
    lacking one, perfbench's local one."""
    from transformers import AutoTokenizer

    from perfbench.models.arch import PRESETS
    from perfbench.models.build import build_model
    from perfbench.models.tokenizer import ensure_tokenizer

    ckpt = tmp_path / "ckpt"
    build_model(PRESETS["tiny-llama"], dtype="float32", device="cpu", seed=1).save_pretrained(ckpt)
    if with_tokenizer:
        AutoTokenizer.from_pretrained(str(ensure_tokenizer(2048, tmp_path / "tok"))).save_pretrained(ckpt)
    run_ = run(pipe_spec(model={"path": str(ckpt)}, batch_sizes=[2]), tmp_path)
    (p,) = run_["points"]
    assert p["status"] == "ok", p.get("error")
    assert p["tokens_per_step"] == 2 * 4 and p["overhead_ratio"] > 0


def test_generated_ids_stop_at_eos_and_skip_padding():
    from perfbench.backends.hf_pipeline.backend import generated_ids

    # batch of 3 prompts (lengths 2, 4, 3) in pipeline batches of 2: [0, 1] padded to 4, [2] alone
    outs = [[{"generated_token_ids": [0, 0, 5, 6, 7, 8, 9]}],   # 3 new tokens
            [{"generated_token_ids": [5, 6, 7, 8, 2, 0, 0]}],   # EOS (2) first, then generate's fill
            [{"generated_token_ids": [5, 6, 7, 8]}]]            # 1 new token
    assert generated_ids(outs, [2, 4, 3], 2, eos={2}) == [[7, 8, 9], [2], [8]]
    assert generated_ids(outs, [2, 4, 3], 2, eos=set()) == [[7, 8, 9], [2, 0, 0], [8]]
    with pytest.raises(RuntimeError, match="pads"):
        generated_ids(outs, [2, 9, 3], 2, eos=set())


def test_prompts_cycle_and_mix():
    from perfbench.backends.hf_pipeline.backend import prompt_texts
    from perfbench.prompts import load_prompts

    short = [p.text for p in load_prompts("short_question")]
    assert prompt_texts("short_question", len(short) + 1) == short + short[:1]
    kinds = {p.text: p.kind for p in load_prompts()}
    assert [kinds[t] for t in prompt_texts("mixed", 3)] == ["short_question", "long_context", "code"]


def test_cli_runs_the_workload(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PERFBENCH_CACHE": str(tmp_path / "cache")}
    r = run_cli("run", str(WORKLOAD), "--store", str(tmp_path / "s.sqlite"), "--set", "measure.repeats=3",
                "--set", "measure.min_seconds=0", "--set", "measure.warmup=1", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hf-pipeline-tiny-cpu" in r.stdout and "vs ref" in r.stdout


@pytest.mark.gpu
def test_pipeline_on_gpu(tmp_path):
    """Same counts on CUDA (bf16), timed with CUDA events."""
    run_ = run(pipe_spec(device="cuda", dtype="bfloat16", batch_sizes=[1, 4]), tmp_path)
    for p, b in zip(run_["points"], (1, 4)):
        assert p["status"] == "ok", p.get("error")
        assert p["tokens_per_step"] == b * 4 and p["overhead_ratio"] > 0
        assert p["memory_kind"] == "cuda_max_allocated"
