"""Workload spec validation: every bad input names the file, the field and what is allowed."""

from __future__ import annotations

import sqlite3

import pytest

from perfbench.errors import SpecError
from perfbench.spec import load_spec, parse_spec
from tests.conftest import REPO, run_cli, tiny_spec

SHIPPED = ["tiny-llama-cpu", "llama-3.2-1b-prefill", "llama-3.2-1b-decode", "bert-base-encoder"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workloads_validate(name):
    spec = load_spec(REPO / "workloads" / f"{name}.yaml", check_device=False)
    assert spec.name == name
    assert spec.batch_sizes
    assert spec.backend_config.name == "torch"


def test_skip_experiment_shape():
    spec = load_spec(REPO / "workloads" / "llama-3.2-1b-prefill.yaml", check_device=False)
    assert spec.batch_sizes == [1, 2, 4, 8, 16, 32, 64, 128]
    assert (spec.seq_len, spec.dtype, spec.phase) == (128, "bfloat16", "prefill")
    arch = spec.arch
    assert (arch.hidden_size, arch.num_hidden_layers, arch.num_attention_heads, arch.kv_heads,
            arch.head_size, arch.intermediate_size, arch.vocab_size) == (2048, 16, 32, 8, 64, 8192, 128256)


def test_defaults_are_filled_and_hash_is_stable():
    a = parse_spec(tiny_spec())
    b = parse_spec(tiny_spec(name="other-name"))
    assert a.normalised()["backend"] == {"name": "torch", "compile": "none",
                                         "attn_implementation": "sdpa", "threads": None}
    assert a.spec_hash() == b.spec_hash()  # the name does not change what is measured
    assert a.spec_hash() != parse_spec(tiny_spec(dtype="bfloat16")).spec_hash()


def _problems(data) -> dict[str, str]:
    with pytest.raises(SpecError) as ei:
        parse_spec(data, "w.yaml")
    assert str(ei.value).startswith("w.yaml: invalid")
    return dict(ei.value.problems)


def test_unknown_field_lists_allowed():
    p = _problems(tiny_spec(batchsize=[1]))
    assert "batchsize" in p and "allowed:" in p["batchsize"] and "batch_sizes" in p["batchsize"]
    p = _problems(tiny_spec(measure={"reps": 3}))
    assert "measure.reps" in p and "repeats" in p["measure.reps"]


def test_wrong_type():
    p = _problems(tiny_spec(seq_len="long"))
    assert "seq_len" in p and "integer" in p["seq_len"]


def test_bad_enum_values_say_what_is_allowed():
    p = _problems(tiny_spec(phase="train", dtype="float64", backend={"compile": "fast"}))
    assert "prefill" in p["phase"] and "decode" in p["phase"]
    assert "bfloat16" in p["dtype"]
    assert "reduce-overhead" in p["backend.compile"]


def test_unknown_preset_and_backend():
    p = _problems(tiny_spec(model="gpt-5", backend={"name": "tensorrt"}))
    assert "unknown preset 'gpt-5'" in p["model"] and "llama-3.2-1b" in p["model"]
    assert "unknown backend 'tensorrt'" in p["backend.name"] and "torch" in p["backend.name"]


def test_custom_architecture_mapping():
    spec = parse_spec(tiny_spec(model={"preset": "tiny-llama", "num_hidden_layers": 1}))
    assert spec.arch.num_hidden_layers == 1
    p = _problems(tiny_spec(model={"family": "llama", "hidden_size": 64}))
    assert "model.intermediate_size" in p
    p = _problems(tiny_spec(model={"family": "gpt", "hidden_size": 64}))
    assert "model.family" in p


def test_empty_and_bad_batch_lists():
    assert "batch_sizes" in _problems(tiny_spec(batch_sizes=[]))
    assert "positive" in _problems(tiny_spec(batch_sizes=[1, 0]))["batch_sizes"]
    assert "unique" in _problems(tiny_spec(batch_sizes=[2, 2]))["batch_sizes"]


def test_phase_rules():
    assert "new_tokens" in _problems(tiny_spec(phase="decode", new_tokens=0))
    assert "phase" in _problems(tiny_spec(model="tiny-bert", phase="generate", new_tokens=4))
    assert "seq_len" in _problems(tiny_spec(seq_len=5000))


def test_weights_folder_must_exist_and_match_the_model(tmp_path):
    from tests.conftest import config_only_checkpoint

    assert "not a directory" in _problems(tiny_spec(weights="/nonexistent/ckpt"))["weights"]
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _problems(tiny_spec(weights=str(tmp_path / "empty")))["weights"]
    big = config_only_checkpoint(tmp_path / "big", "llama-3.2-1b")
    msg = _problems(tiny_spec(weights=str(big)))["weights"]
    assert "hidden_size: checkpoint 2048 vs model 128" in msg
    assert parse_spec(tiny_spec(weights=str(config_only_checkpoint(tmp_path / "ok")))).weights


def test_more_bad_values_fail_validation_not_the_run():
    assert "integer" in _problems(tiny_spec(batch_sizes=[True]))["batch_sizes.0"]
    assert "integer" in _problems(tiny_spec(seq_len=True))["seq_len"]
    assert "less than" in _problems(tiny_spec(seed=2**70))["seed"]
    p = _problems(tiny_spec(measure={"min_seconds": float("inf"), "max_seconds": float("inf")}))
    assert "finite" in p["measure.min_seconds"]
    p = _problems(tiny_spec(model={"family": "bert", "hidden_size": 100, "intermediate_size": 64,
                                   "num_hidden_layers": 1, "num_attention_heads": 3, "head_dim": 32,
                                   "vocab_size": 100}))
    assert "divide evenly" in p["model"]
    # CUDA-graph modes are valid for every phase: decode and generate run them over a StaticCache.
    for phase in ("decode", "generate"):
        spec = parse_spec(tiny_spec(phase=phase, new_tokens=2, backend={"compile": "reduce-overhead"}))
        assert spec.backend_config.compile == "reduce-overhead"


def test_backend_name_defaults_to_torch():
    d = tiny_spec()
    d["backend"] = {"compile": "default"}
    assert parse_spec(d).backend_config.compile == "default"


def test_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr("perfbench.devices.cuda_available", lambda: False)
    p = _problems(tiny_spec(device="cuda"))
    assert "no CUDA GPU" in p["device"] and "cpu" in p["device"]


def test_unreadable_yaml(write_spec):
    path = write_spec("name: x\nbatch_sizes: [1, 2\n")
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert str(path) in str(ei.value) and "not valid YAML" in str(ei.value) and "line" in str(ei.value)
    with pytest.raises(SpecError, match="file not found"):
        load_spec(path.parent / "missing.yaml")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(write_spec("- just\n- a list\n", "list.yaml"))


@pytest.mark.parametrize("bad", [
    tiny_spec(batch_sizes=[]),
    tiny_spec(model="nope"),
    tiny_spec(extra_field=1),
    "name: [unclosed\n",
])
def test_cli_rejects_bad_spec_with_exit_2_and_writes_nothing(write_spec, store_path, bad):
    # A store that already has content must be left exactly as it was.
    ok = run_cli("run", str(write_spec(tiny_spec(batch_sizes=[1]), "ok.yaml")), "--store",
                 str(store_path), "-q")
    assert ok.returncode == 0, ok.stderr
    before = sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    r = run_cli("run", str(write_spec(bad)), "--store", str(store_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "spec.yaml" in r.stderr and "invalid" in r.stderr
    assert sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == before


def test_cli_bad_spec_creates_no_store(write_spec, store_path):
    r = run_cli("run", str(write_spec(tiny_spec(seq_len=-1))), "--store", str(store_path))
    assert r.returncode == 2
    assert "seq_len" in r.stderr
    assert not store_path.exists()


def test_overrides_by_dotted_path(write_spec):
    from perfbench.spec import load_spec

    path = write_spec(tiny_spec())
    spec = load_spec(path, overrides=["backend.compile=default", "batch_sizes=[1, 8]",
                                      "measure.trace=true", "model.num_hidden_layers=1"])
    assert spec.backend_config.compile == "default" and spec.batch_sizes == [1, 8]
    assert spec.measure.trace is True and spec.arch.num_hidden_layers == 1
    assert load_spec(path, overrides=["batch_size=4"]).batch_sizes == [4]
    with pytest.raises(SpecError) as ei:
        load_spec(path, overrides=["measure.repeats=0"])
    assert "--set measure.repeats=0" in str(ei.value) and "measure.repeats" in dict(ei.value.problems)
    with pytest.raises(SpecError, match="KEY=VALUE"):
        load_spec(path, overrides=["oops"])


def test_binary_and_duplicate_key_yaml_exit_2_without_a_store(tmp_path, write_spec):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    dup = write_spec("name: d\nmodel: tiny-llama\nphase: prefill\nbatch_sizes: [1]\nseq_len: 8\n"
                     "backend: {name: torch, compile: turbo, compile: none}\n", name="dup.yaml")
    store = tmp_path / "s.sqlite"
    for path, needle in ((binary, "not UTF-8"), (dup, "duplicate key 'compile'")):
        r = run_cli("run", str(path), "--store", str(store))
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert str(path) in r.stderr
    assert not store.exists()


def test_set_into_a_plain_value_is_a_spec_error(write_spec, tmp_path):
    r = run_cli("run", str(write_spec(tiny_spec())), "--set", "seq_len.x=1", "--store", str(tmp_path / "s.sqlite"))
    assert r.returncode == 2 and "not a mapping" in r.stderr and "Traceback" not in r.stderr


def test_hash_follows_the_architecture_not_its_spelling():
    """`tiny-llama`, `{preset: tiny-llama}` and the full field mapping are one workload; a changed
    field is another. The stored spec carries the resolved architecture."""
    from perfbench.models.arch import PRESETS

    full = PRESETS["tiny-llama"].model_dump(mode="json")
    a, b, c = (parse_spec(tiny_spec(model=m)) for m in ("tiny-llama", {"preset": "tiny-llama"}, full))
    assert a.spec_hash() == b.spec_hash() == c.spec_hash()
    assert parse_spec(tiny_spec(model={"preset": "tiny-llama", "num_hidden_layers": 1})).spec_hash() != a.spec_hash()
    assert a.stored()["arch"] == full and "arch" not in a.normalised()
