"""Decode over a fixed-size KV cache, so CUDA graphs can replay it.

A CUDA graph replays fixed shapes at fixed addresses. A growing (dynamic) KV cache changes both every
step, so `reduce-overhead` and `max-autotune` decode need transformers' `StaticCache`: allocated once
for context + new tokens and written in place. Between measured iterations the cache is rewound to
the context: the slots after it are simply overwritten by the next iteration and masked until then.

transformers changed how a static cache learns its write position. Up to 4.5x the caller passes
`cache_position` to `forward`; from 5.x each layer keeps a `cumulative_length` tensor that `update`
advances in place. Both are handled here, and tested against each other token by token.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def forward_takes_cache_position(model: torch.nn.Module) -> bool:
    """True on transformers versions whose model forward takes `cache_position` (< 5)."""
    return "cache_position" in inspect.signature(type(model).forward).parameters


class StaticDecodeCache:
    """A StaticCache holding a prefilled context, rewindable to it between iterations."""

    def __init__(self, model: torch.nn.Module, batch_size: int, context_len: int, new_tokens: int):
        from transformers import StaticCache

        self.context_len = context_len
        self.new_tokens = new_tokens
        self.explicit_positions = forward_takes_cache_position(model)
        # max_batch_size/device/dtype: required by transformers 4.4x, ignored (lazy init) by 5.x.
        self.cache = StaticCache(config=model.config, max_cache_len=context_len + new_tokens,
                                 max_batch_size=batch_size, device=model.device, dtype=model.dtype)
        # One position tensor per step, built now so the timed loop allocates nothing.
        self._positions = [torch.tensor([context_len + i], device=model.device) for i in range(new_tokens)]

    def prefill_kwargs(self, device: torch.device | str) -> dict[str, Any]:
        """Extra forward arguments for writing the context into slots 0..context_len-1."""
        if self.explicit_positions:
            return {"cache_position": torch.arange(self.context_len, device=device)}
        return {}

    def step_kwargs(self, i: int) -> dict[str, Any]:
        """Extra forward arguments for decode step i (writes slot context_len + i)."""
        kw: dict[str, Any] = {"past_key_values": self.cache, "use_cache": True}
        if self.explicit_positions:
            kw["cache_position"] = self._positions[i]
        return kw

    def rewind(self) -> None:
        """Make the next step write right after the context again (untimed, in place)."""
        if self.explicit_positions:
            return  # positions are passed explicitly each step
        layers = getattr(self.cache, "layers", None) or []
        counters = [getattr(layer, "cumulative_length", None) for layer in layers]
        if not counters or any(c is None for c in counters):
            import transformers

            raise RuntimeError(
                f"transformers {transformers.__version__}: StaticCache has neither cache_position nor "
                "per-layer cumulative_length; perfbench cannot rewind it. Use backend.compile none or "
                "default for decode with this version.")
        # In place, since compiled graphs hold this tensor's address; under inference mode, since
        # the cache may have been allocated in it and inference tensors refuse updates outside it.
        with torch.inference_mode():
            for c in counters:
                c.fill_(self.context_len)
