"""Config of the torch backend (torch-free, so spec validation stays fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from perfbench.backends.base import BackendConfig


class Config(BackendConfig):
    """`compile`: none = eager; default/reduce-overhead/max-autotune are torch.compile modes, where
    reduce-overhead captures CUDA graphs on GPU. `threads` sets torch's intra-op CPU threads."""

    name: Literal["torch"] = "torch"
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    threads: int | None = Field(default=None, gt=0)
