"""Config of the torch backend (torch-free, so spec validation stays fast)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from perfbench.backends.base import BackendConfig, Capabilities, SpecFacts


class Config(BackendConfig):
    """`compile`: none = eager; default/reduce-overhead/max-autotune are torch.compile modes, where
    reduce-overhead captures CUDA graphs on GPU. `threads` sets torch's intra-op CPU threads."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        phases=("prefill", "decode", "generate"), devices=("cpu", "cuda"), model_kinds=("synthetic", "hf"))

    name: Literal["torch"] = "torch"
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    threads: int | None = Field(default=None, gt=0)

    def check(self, facts: SpecFacts) -> list[tuple[str, str]]:
        if facts.model.kind == "hf" and facts.model.arch is None:
            return [("model.path", "the torch backend builds llama and bert checkpoints; this one's "
                                   "config.json names another model_type (try backend: hf-pipeline)")]
        return []
