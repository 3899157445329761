"""Config of the llama.cpp backend (no llama_cpp import, so spec validation stays fast)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from perfbench.backends.base import BackendConfig, Capabilities, SpecFacts

#: KV-cache types llama.cpp accepts (llama-bench's list) -> ggml type ids (ggml.h's enum ggml_type).
KV_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3,
                            "iq4_nl": 20, "q5_0": 6, "q5_1": 7}
KVType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
#: spec dtype -> the GGUF type perfbench writes for a synthetic model. bfloat16 is refused rather
#: than silently measured as f16.
GGUF_DTYPES = {"float32": "f32", "float16": "f16"}
#: The automatic n_ctx is seq_len + new_tokens rounded up to this (llama.cpp pads its KV cache too).
N_CTX_ROUND = 256
_MIN_VOCAB = 259  # 3 specials + 256 byte tokens in a synthetic GGUF vocabulary


def auto_n_ctx(seq_len: int, new_tokens: int) -> int:
    """The context a point needs, rounded up so every point of a run shares one context."""
    need = seq_len + new_tokens
    return -(-need // N_CTX_ROUND) * N_CTX_ROUND


class Config(BackendConfig):
    """llama.cpp in process (llama-cpp-python) on a GGUF file: a local `{path: x.gguf}`, or a
    synthetic llama preset written to a seeded random GGUF in perfbench's cache. One sequence
    (batch_sizes: [1]). device cuda means layers offloaded with n_gpu_layers; device cpu means none.
    Token generation feeds fixed token ids without sampling, like llama-bench's tg test.
    dtype: a synthetic model is written as an f32 (float32) or f16 (float16) GGUF; a GGUF file runs
    with its own weight types and the spec's dtype is not applied (the run stores `gguf_dtype`)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        phases=("prefill", "decode", "generate"), devices=("cpu", "cuda"),
        model_kinds=("synthetic", "gguf"), batching=False)

    name: Literal["llama-cpp"] = "llama-cpp"
    n_threads: int | None = Field(default=None, gt=0, description=(
        "threads for token generation (one-token batches); default: the CPUs this process may use"))
    n_threads_batch: int | None = Field(default=None, gt=0, description=(
        "threads for prompt processing (multi-token batches); default: n_threads"))
    n_batch: int = Field(default=2048, gt=0, description=(
        "logical batch: prompt tokens per llama_decode call (llama.cpp caps it at n_ctx)"))
    n_ubatch: int | None = Field(default=None, gt=0, description=(
        "physical batch: tokens per compute graph, at most n_batch; default: min(512, n_batch)"))
    n_gpu_layers: int = Field(default=0, ge=-1, description=(
        "layers offloaded to the GPU: 0 = CPU only, -1 = all; needs device: cuda"))
    flash_attn: bool = Field(default=False, description=(
        "llama.cpp's fused attention kernel (a quantized V cache needs it)"))
    type_k: KVType = Field(default="f16", description="KV cache type of K")
    type_v: KVType = Field(default="f16", description="KV cache type of V (quantized types need flash_attn)")
    n_ctx: int | None = Field(default=None, gt=0, description=(
        f"context size; default: seq_len + new_tokens rounded up to {N_CTX_ROUND}"))
    use_mmap: bool = Field(default=True, description="map the GGUF file instead of reading it into memory")

    @property
    def ubatch(self) -> int:
        """The physical batch in effect."""
        return self.n_ubatch or min(512, self.n_batch)

    def check(self, facts: SpecFacts) -> list[tuple[str, str]]:
        return (self._check_sizes(facts) + self._check_device(facts) + self._check_kv()
                + (_check_synthetic(facts) if facts.model.kind == "synthetic" else []))

    def _check_sizes(self, facts: SpecFacts) -> list[tuple[str, str]]:
        out = []
        need = facts.seq_len + facts.new_tokens
        if self.n_ctx is not None and self.n_ctx < need:
            out.append(("backend.n_ctx", f"n_ctx {self.n_ctx} is below seq_len + new_tokens = {need}: "
                                         f"set n_ctx >= {need}, or leave it unset (automatic)"))
        if self.n_ubatch is not None and self.n_ubatch > self.n_batch:
            out.append(("backend.n_ubatch", f"n_ubatch {self.n_ubatch} exceeds n_batch {self.n_batch}: "
                                            f"set n_ubatch <= {self.n_batch} or raise n_batch"))
        return out

    def _check_device(self, facts: SpecFacts) -> list[tuple[str, str]]:
        if facts.device == "cuda" and self.n_gpu_layers == 0:
            return [("backend.n_gpu_layers", "device cuda means layers on the GPU: set n_gpu_layers "
                                             "(-1 = all), or use device: cpu")]
        if facts.device == "cpu" and self.n_gpu_layers != 0:
            return [("backend.n_gpu_layers", "device cpu runs every layer on the CPU: set "
                                             "n_gpu_layers: 0, or use device: cuda")]
        return []

    def _check_kv(self) -> list[tuple[str, str]]:
        if self.type_v not in ("f32", "f16", "bf16") and not self.flash_attn:
            return [("backend.type_v", f"a quantized V cache ({self.type_v}) needs flash_attn: true "
                                       "in llama.cpp: set it, or use type_v: f16")]
        return []


def _check_synthetic(facts: SpecFacts) -> list[tuple[str, str]]:
    """perfbench writes the GGUF itself: llama family, f32 or f16, no foreign weights."""
    ref, arch, out = facts.model, facts.model.arch, []
    if arch is not None and arch.family != "llama":
        out.append(("model", f"llama-cpp builds GGUFs of llama-family models only, not {arch.family!r}: "
                             "use a llama preset or model: {path: x.gguf}"))
    elif arch is not None and arch.vocab_size < _MIN_VOCAB:
        out.append(("model.vocab_size", f"a GGUF vocabulary needs at least {_MIN_VOCAB} tokens "
                                        f"(3 specials + 256 bytes), got {arch.vocab_size}"))
    if facts.dtype not in GGUF_DTYPES:
        out.append(("dtype", f"llama-cpp writes synthetic GGUFs in f32 or f16, not {facts.dtype}: "
                             "use dtype: float32 or float16"))
    if ref.weights is not None:
        out.append(("weights", "llama-cpp reads GGUF only: convert the checkpoint (llama.cpp's "
                               "convert_hf_to_gguf.py) and give model: {path: x.gguf}"))
    return out
