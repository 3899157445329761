"""Config of the vllm backend: vLLM's engine arguments, validated without vLLM (or torch) installed.

Sampling is fixed, not configurable: greedy (temperature 0), exactly `new_tokens` per sequence
(max_tokens = min_tokens = new_tokens, ignore_eos), so every batch size does the same work and
tokens/s compares across engines. None leaves a field at vLLM's own default.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from perfbench.backends.base import BackendConfig, Capabilities, SpecFacts

#: Config fields passed to vllm.LLM as engine arguments of the same name (when not None).
ENGINE_ARGS = ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "block_size",
               "enforce_eager", "tensor_parallel_size", "max_model_len", "enable_prefix_caching",
               "enable_chunked_prefill")


class Config(BackendConfig):
    """`enable_prefix_caching` is off by default: every step sends the same prompts, and a cached
    prefix would turn the measured prefill into a cache hit after the first iteration."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        phases=("generate",), devices=("cuda",), model_kinds=("synthetic", "hf"),
        batching=True)

    name: Literal["vllm"] = "vllm"
    max_num_seqs: int | None = Field(default=None, gt=0, description="sequences per scheduler step")
    max_num_batched_tokens: int | None = Field(default=None, gt=0, description="tokens per scheduler step")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, allow_inf_nan=False,
                                          description="share of GPU memory vLLM may take (weights + KV pool)")
    block_size: Literal[8, 16, 32, 64, 128] | None = Field(default=None, description="KV-cache block, tokens")
    enforce_eager: bool = False
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, gt=0)
    enable_prefix_caching: bool = False
    enable_chunked_prefill: bool | None = None

    def engine_args(self) -> dict:
        """Keyword arguments for vllm.LLM (None fields left to vLLM)."""
        args = {k: getattr(self, k) for k in ENGINE_ARGS}
        return {k: v for k, v in args.items() if v is not None}

    def check(self, facts: SpecFacts) -> list[tuple[str, str]]:
        return self._check_lengths(facts) + self._check_scheduler(facts) + self._check_parallel(facts)

    def _check_lengths(self, facts: SpecFacts) -> list[tuple[str, str]]:
        need, arch = facts.seq_len + facts.new_tokens, facts.model.arch
        out = []
        if self.max_model_len is not None and self.max_model_len < need:
            out.append(("backend.max_model_len", f"{self.max_model_len} < seq_len + new_tokens = {need}: "
                                                 "vLLM would refuse every prompt"))
        if self.max_model_len is not None and arch and self.max_model_len > arch.max_position_embeddings:
            out.append(("backend.max_model_len", f"{self.max_model_len} exceeds the model's "
                                                 f"max_position_embeddings ({arch.max_position_embeddings})"))
        return out

    def _check_scheduler(self, facts: SpecFacts) -> list[tuple[str, str]]:
        tokens, out = self.max_num_batched_tokens, []
        if tokens is not None and self.max_num_seqs is not None and tokens < self.max_num_seqs:
            out.append(("backend.max_num_batched_tokens", f"{tokens} < max_num_seqs ({self.max_num_seqs}): "
                                                          "vLLM needs at least one token per sequence"))
        if tokens is not None and self.enable_chunked_prefill is False:
            limit = self.max_model_len or (facts.model.arch.max_position_embeddings if facts.model.arch
                                           else facts.seq_len + facts.new_tokens)
            if tokens < limit:
                out.append(("backend.max_num_batched_tokens",
                            f"{tokens} < the model length ({limit}): without chunked prefill a whole "
                            "prompt must fit in one step (raise it, set max_model_len, or enable "
                            "chunked prefill)"))
        return out

    def _check_parallel(self, facts: SpecFacts) -> list[tuple[str, str]]:
        arch, tp = facts.model.arch, self.tensor_parallel_size
        if arch is not None and arch.num_attention_heads % tp:
            return [("backend.tensor_parallel_size", f"{tp} does not divide the model's "
                                                     f"{arch.num_attention_heads} attention heads")]
        return []
