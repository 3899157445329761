"""Shipped prompts, the offline tokenizer, and the random-weight GGUF (loaded by llama.cpp)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from perfbench.models.arch import PRESETS
from perfbench.models.gguf_tiny import ensure_tiny_gguf, vocab, write_llama_gguf
from perfbench.models.tokenizer import build_tokenizer, ensure_tokenizer
from perfbench.prompts import PROMPT_KINDS, load_prompts

TINY = PRESETS["tiny-llama"]
SAMPLES = ["hello world", "Héllo, naïve café! 日本語 🙂", "  leading and trailing  \n\ttabs\n",
           "def f(x):\n    return x ** 2  # square\n", ""]


@pytest.fixture()
def no_network(monkeypatch):
    """Any socket connection fails loudly: the assets must be built and loaded offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- prompts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PROMPT_KINDS)
def test_prompts_load_for_each_kind(kind):
    prompts = load_prompts(kind)
    assert len(prompts) >= 3
    assert all(p.kind == kind and p.text.strip() and p.id for p in prompts)
    if kind == "long_context":
        assert min(len(p.text.split()) for p in prompts) >= 200


def test_all_prompts_have_unique_ids():
    prompts = load_prompts()
    assert {p.kind for p in prompts} == set(PROMPT_KINDS)
    assert len({p.id for p in prompts}) == len(prompts)


def test_unknown_prompt_kind_lists_allowed_kinds():
    with pytest.raises(ValueError, match="short_question, long_context, code"):
        load_prompts("poetry")


# --- tokenizer -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tokenizer(TINY.vocab_size, tmp_path_factory.mktemp("tok"))


def test_tokenizer_round_trips_and_ids_fit_the_model(tok_dir, no_network):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert len(tok) == TINY.vocab_size
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    for text in SAMPLES + [p.text for p in load_prompts()]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert max(ids) < TINY.vocab_size
        assert tok.decode(ids, skip_special_tokens=True) == text
    # Trained on the shipped text: words come out as few tokens, not bytes.
    assert len(tok("the model reads the prompt")["input_ids"]) <= 11


def test_tokenizer_build_is_deterministic(tok_dir, tmp_path):
    again = build_tokenizer(TINY.vocab_size, tmp_path / "again")
    assert (again / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_ensure_tokenizer_caches(tmp_path):
    first = ensure_tokenizer(TINY.vocab_size, tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert ensure_tokenizer(TINY.vocab_size, tmp_path) == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp dirs left behind


def test_tokenizer_rejects_too_small_vocab(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        build_tokenizer(100, tmp_path)


# --- GGUF ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return write_llama_gguf(TINY, tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=0)


def test_gguf_vocab_has_specials_bytes_and_pieces(gguf_path):
    from gguf import GGUFReader, TokenType

    r = GGUFReader(gguf_path)
    tokens = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode()
              for i in r.fields["tokenizer.ggml.tokens"].data]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in r.fields["tokenizer.ggml.token_type"].data]
    assert len(tokens) == TINY.vocab_size == len(set(tokens))
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {TokenType.BYTE}
    assert "\u2581the" in tokens and types.count(TokenType.NORMAL) == TINY.vocab_size - 259
    names = {t.name for t in r.tensors}
    assert "output.weight" not in names and "token_embd.weight" in names  # tied embeddings


def test_gguf_bytes_are_deterministic_per_seed(gguf_path, tmp_path):
    same = write_llama_gguf(TINY, tmp_path / "same.gguf", seed=0)
    other = write_llama_gguf(TINY, tmp_path / "other.gguf", seed=1)
    assert same.read_bytes() == gguf_path.read_bytes()
    assert other.read_bytes() != gguf_path.read_bytes()


def test_ensure_tiny_gguf_reuses_the_cached_file(tmp_path, monkeypatch):
    import perfbench.models.gguf_tiny as gt

    first = ensure_tiny_gguf(TINY, 0, tmp_path)
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(gt, "write_llama_gguf", lambda *a, **k: pytest.fail("rewrote a cached GGUF"))
    assert ensure_tiny_gguf(TINY, 0, tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    assert ensure_tiny_gguf(TINY, 0, tmp_path, dtype="f16") != first
    assert sorted(p.suffix for p in first.parent.iterdir()) == [".gguf", ".gguf"]  # no temp files


def test_gguf_vocab_pads_when_the_corpus_runs_out():
    tokens, _, types = vocab(30522)
    assert len(tokens) == 30522 == len(set(tokens)) and types[-1] == 5  # UNUSED


def test_gguf_rejects_bert():
    with pytest.raises(ValueError, match="llama family"):
        write_llama_gguf(PRESETS["tiny-bert"], "unused.gguf", seed=0)


# --- llama.cpp -----------------------------------------------------------------------------------

def _load(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, seed=0, verbose=False)


def _last_logits(llm) -> np.ndarray:
    """llm.scores stays empty unless logits_all=True (0.3.x samples inside llama.cpp)."""
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def test_llama_cpp_loads_tokenizes_evals_and_generates(gguf_path, no_network):
    llm = _load(gguf_path)
    try:
        assert llm.n_vocab() == TINY.vocab_size and llm.n_embd() == TINY.hidden_size
        ids = llm.tokenize(b"hello world")
        assert ids[0] == 1 and all(0 <= i < TINY.vocab_size for i in ids)
        assert llm.detokenize(ids[1:]).decode().strip() == "hello world"
        words = llm.tokenize(b"the model reads the prompt", add_bos=False)
        assert len(words) <= 10  # learned pieces, not byte fallback (26 bytes)
        llm.eval(ids)
        logits = _last_logits(llm)
        assert np.isfinite(logits).all() and logits.std() > 0
        out = llm.create_completion("The river", max_tokens=4, temperature=0.0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_llama_cpp_rewind_and_perf_counters(gguf_path):
    """The calls the llama.cpp backend relies on: KV rewind via n_tokens, and perf counters."""
    llm = _load(gguf_path)
    import llama_cpp

    try:
        ids = llm.tokenize(b"The river carries sand down to the sea.")
        llm.eval(ids + [ids[3]])
        fresh = _last_logits(llm)
        llm.n_tokens = len(ids)  # eval() drops KV cells from n_tokens on, then appends
        llama_cpp.llama_perf_context_reset(llm.ctx)
        for _ in range(2):
            llm.n_tokens = len(ids)
            llm.eval([ids[3]])
            llama_cpp.llama_synchronize(llm.ctx)  # counters are booked at synchronize
        np.testing.assert_allclose(_last_logits(llm), fresh, atol=1e-5)
        perf = llama_cpp.llama_perf_context(llm.ctx)
        assert perf.n_eval == 2 and perf.t_eval_ms > 0 and perf.t_p_eval_ms == 0
    finally:
        llm.close()


@pytest.mark.parametrize("update", [{"tie_word_embeddings": False}, {"head_dim": 16}, {}],
                         ids=["untied", "head_dim", "f16"])
def test_llama_cpp_loads_variants(tmp_path, update):
    arch = TINY.model_copy(update=update)
    dtype = "f16" if not update else "f32"
    llm = _load(write_llama_gguf(arch, tmp_path / "m.gguf", seed=3, dtype=dtype))
    try:
        assert llm.n_embd() == arch.hidden_size
        llm.eval(llm.tokenize(b"a short test"))
        assert np.isfinite(_last_logits(llm)).all()
    finally:
        llm.close()
