"""Write a llama-architecture GGUF with seeded random weights, for the llama.cpp backend.

Synthetic presets have no checkpoint to convert, and downloading one would make runs depend on the
network; llama.cpp only reads GGUF. So the file is written straight from a `ModelArch`: same shapes
as the torch backend builds, random weights (numpy, seeded), and a real SentencePiece-style
vocabulary learned from perfbench's shipped text so prompts tokenize like words, not bytes.
Torch-free: writing the tiny preset takes well under a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from perfbench.models.arch import ModelArch

#: Bump when the bytes `write_llama_gguf` produces change for the same inputs (invalidates caches).
FORMAT_VERSION = 1
WEIGHT_STD = 0.02  # small, like transformers' initializer_range: logits stay finite and tame
SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in llama's SentencePiece vocabulary
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
GGUFDtype = Literal["f32", "f16"]


def vocab(vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: specials, the 256 byte tokens, learned pieces, then padding.

    Byte tokens give llama.cpp's SPM tokenizer a fallback for any character outside the pieces.
    Padding (`[PAD{i}]`, type UNUSED) only appears when the corpus has fewer pieces than needed.
    """
    from gguf import TokenType

    from perfbench.models.tokenizer import spm_pieces

    tokens = list(SPECIALS) + [f"<0x{b:02X}>" for b in range(256)]
    if vocab_size < len(tokens):
        raise ValueError(f"vocab_size {vocab_size} is too small for a GGUF vocabulary "
                         f"(needs at least {len(tokens)}: 3 specials and 256 byte tokens)")
    scores = [0.0] * len(tokens)
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    seen = set(tokens)
    for piece, score in spm_pieces(vocab_size - len(SPECIALS)):  # a few spare for collisions
        if len(tokens) == vocab_size:
            break
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            scores.append(score)
            types.append(TokenType.NORMAL)
    for i in range(vocab_size - len(tokens)):
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(TokenType.UNUSED)
    return tokens, scores, [int(t) for t in types]


def _check_arch(arch: ModelArch) -> None:
    if arch.family != "llama":
        raise ValueError(f"GGUF export supports the llama family only, not {arch.family!r}")


def _add_hparams(w, arch: ModelArch, dtype: GGUFDtype) -> None:
    """The llama.* keys llama.cpp reads to size and run the graph."""
    from gguf import LlamaFileType

    w.add_name(f"perfbench-random-llama-{arch.hidden_size}x{arch.num_hidden_layers}")
    w.add_file_type(LlamaFileType.ALL_F32 if dtype == "f32" else LlamaFileType.MOSTLY_F16)
    w.add_context_length(arch.max_position_embeddings)
    w.add_embedding_length(arch.hidden_size)
    w.add_block_count(arch.num_hidden_layers)
    w.add_feed_forward_length(arch.intermediate_size)
    w.add_head_count(arch.num_attention_heads)
    w.add_head_count_kv(arch.kv_heads)
    w.add_rope_dimension_count(arch.head_size)
    w.add_rope_freq_base(arch.rope_theta)
    w.add_layer_norm_rms_eps(arch.rms_norm_eps)
    w.add_vocab_size(arch.vocab_size)
    if arch.head_size * arch.num_attention_heads != arch.hidden_size:
        w.add_key_length(arch.head_size)  # llama.cpp assumes hidden / heads otherwise
        w.add_value_length(arch.head_size)


def _add_tokenizer(w, vocab_size: int) -> None:
    tokens, scores, types = vocab(vocab_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK_ID)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)


def _tensors(arch: ModelArch, seed: int, dtype: GGUFDtype):
    """(name, array) in a fixed order; numpy shapes are (out, in), i.e. ggml's ne reversed.

    Norm weights are ones and stay f32 (llama.cpp's converters keep 1-D tensors f32).
    Tied embeddings: no `output` tensor, and llama.cpp reuses token_embd for the head.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    wdt = np.float32 if dtype == "f32" else np.float16
    h, ff, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    q, kv = arch.num_attention_heads * arch.head_size, arch.kv_heads * arch.head_size

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * WEIGHT_STD).astype(wdt)

    def ones() -> np.ndarray:
        return np.ones(h, dtype=np.float32)

    yield "token_embd.weight", mat(v, h)
    for i in range(arch.num_hidden_layers):
        b = f"blk.{i}"
        yield f"{b}.attn_norm.weight", ones()
        yield f"{b}.attn_q.weight", mat(q, h)
        yield f"{b}.attn_k.weight", mat(kv, h)
        yield f"{b}.attn_v.weight", mat(kv, h)
        yield f"{b}.attn_output.weight", mat(h, q)
        yield f"{b}.ffn_norm.weight", ones()
        yield f"{b}.ffn_gate.weight", mat(ff, h)
        yield f"{b}.ffn_up.weight", mat(ff, h)
        yield f"{b}.ffn_down.weight", mat(h, ff)
    yield "output_norm.weight", ones()
    if not arch.tie_word_embeddings:
        yield "output.weight", mat(v, h)


def write_llama_gguf(arch: ModelArch, path: str | os.PathLike, *, seed: int,
                     dtype: GGUFDtype = "f32") -> Path:
    """Write `arch` as a llama GGUF with seeded random weights; same inputs give identical bytes."""
    from gguf import GGUFWriter

    _check_arch(arch)
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
    path = Path(path)
    w = GGUFWriter(path, arch="llama")
    _add_hparams(w, arch, dtype)
    _add_tokenizer(w, arch.vocab_size)
    for name, array in _tensors(arch, seed, dtype):
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_cache_key(arch: ModelArch, seed: int, dtype: GGUFDtype) -> str:
    """Hash of everything that decides the file's bytes (the vocabulary depends on shipped text)."""
    import hashlib

    from perfbench.models.tokenizer import cache_key, training_text

    return cache_key("gguf", FORMAT_VERSION, json.dumps(arch.model_dump(mode="json"), sort_keys=True),
                     seed, dtype, hashlib.sha256(training_text().encode()).hexdigest())


def ensure_tiny_gguf(arch: ModelArch, seed: int, cache_dir: str | os.PathLike, *,
                     dtype: GGUFDtype = "f32") -> Path:
    """The cached GGUF for (arch, seed, dtype), written on first use (atomic, safe across processes)."""
    from perfbench.models.tokenizer import atomic_build_file

    _check_arch(arch)
    final = Path(cache_dir) / "gguf" / f"llama-{gguf_cache_key(arch, seed, dtype)}-{dtype}.gguf"
    return atomic_build_file(final, lambda tmp: write_llama_gguf(arch, tmp, seed=seed, dtype=dtype))
