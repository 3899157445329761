"""The torch backend: transformers models in eager mode or under torch.compile."""

from __future__ import annotations

import time
from typing import Any

import torch

from perfbench.backends.base import Backend as BackendBase
from perfbench.backends.base import Point, PreparedPoint, StepReport
from perfbench.backends.torch.config import Config
from perfbench.models.build import build_model
from perfbench.timing import memory_probe_for, timer_for

#: torch.compile mode names; "default" is torch's own default (mode=None).
_COMPILE_MODES = {"default": None, "reduce-overhead": "reduce-overhead", "max-autotune": "max-autotune"}
#: Modes that capture CUDA graphs on GPU: decode and generate run them over a StaticCache.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class TorchBackend(BackendBase):
    config: Config

    def load(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ctx, ref = self.ctx, self.ctx.model
        self.arch = ref.arch
        weights = ref.path if ref.kind == "hf" else ref.weights
        t0 = time.perf_counter()
        self.model = build_model(self.arch, dtype=ctx.dtype, device=self.device, seed=ctx.seed,
                                 attn_implementation=cfg.attn_implementation,
                                 weights=str(weights) if weights else None, allow_pickle=ref.allow_pickle)
        self._eager_forward = self.model.forward
        # CUDA graphs need fixed shapes at fixed addresses, so their decode uses a StaticCache.
        self._static_cache = (cfg.compile in CUDA_GRAPH_MODES and self.arch.is_decoder
                              and ctx.phase in ("decode", "generate"))
        if cfg.compile != "none":
            dyn = torch._dynamo.config
            # One recompilation per batch size is expected; do not fall back to eager after 8.
            for knob in ("cache_size_limit", "recompile_limit"):
                if hasattr(dyn, knob):
                    setattr(dyn, knob, max(getattr(dyn, knob), 256))
            # Compile forward in place so generate() uses the compiled graph too.
            # Prefill shapes are fixed per point, and so are static-cache decode steps: specialise
            # (dynamic=False). A dynamic cache grows every step: let dynamo mark that dimension
            # dynamic instead of recompiling for every context length.
            dynamic = False if ctx.phase == "prefill" or self._static_cache else None
            self.model.forward = torch.compile(self.model.forward, mode=_COMPILE_MODES[cfg.compile],
                                               dynamic=dynamic)
        return {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "load_s": time.perf_counter() - t0,
            "torch_threads": torch.get_num_threads(),
            "attn_implementation": cfg.attn_implementation,
            "compile": cfg.compile,
            "kv_cache": ("static" if self._static_cache else "dynamic") if ctx.phase != "prefill" else None,
        }

    def engine(self) -> dict[str, Any]:
        import transformers

        return {"name": "torch", "version": torch.__version__, "transformers": transformers.__version__,
                "compile": self.config.compile}

    def timer(self) -> Any:
        return timer_for(self.device)

    def memory_probe(self) -> Any:
        return memory_probe_for(self.device)

    def _input_ids(self, point: Point) -> torch.Tensor:
        g = torch.Generator(device="cpu").manual_seed(self.ctx.seed + point.batch_size)
        ids = torch.randint(0, self.arch.vocab_size, (point.batch_size, point.seq_len), generator=g)
        return ids.to(self.device)

    def prepare(self, point: Point) -> PreparedPoint:
        model, phase = self.model, self.ctx.phase
        ids = self._input_ids(point)
        if not self.arch.is_decoder:
            mask = torch.ones_like(ids)

            def step() -> Any:
                with torch.inference_mode():
                    return model(input_ids=ids, attention_mask=mask)

            return PreparedPoint(step)

        if phase == "prefill":
            def step() -> Any:
                with torch.inference_mode():
                    return model(input_ids=ids, use_cache=False)

            return PreparedPoint(step)

        if phase == "generate":
            mask = torch.ones_like(ids)
            n = point.new_tokens
            extra: dict[str, Any] = {}
            if self._static_cache:
                # generate() keeps one StaticCache and resets it in place between calls. Our forward
                # is compiled already: stop transformers from compiling its own copy on top.
                extra["cache_implementation"] = "static"
                if "disable_compile" in model.generation_config.to_dict():
                    extra["disable_compile"] = True

            def step() -> StepReport:
                with torch.inference_mode():
                    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, **extra)
                # tokens/s from tokens produced (counted from the ids), not tokens asked for
                return StepReport(tokens_out=int(out.shape[0] * (out.shape[1] - ids.shape[1])), output=out)

            return PreparedPoint(step)

        if self._static_cache:
            return self._prepare_static_decode(ids, point)

        # decode: build the KV cache of the context once (untimed), then time `new_tokens` steps;
        # `reset` crops the cache back to the context so every iteration sees the same state.
        out = _prefill_context(model, ids)
        cache = out.past_key_values
        first = out.logits[:, -1:].argmax(-1)
        n, ctx = point.new_tokens, point.seq_len

        def step() -> Any:
            tok = first
            with torch.inference_mode():
                for _ in range(n):
                    o = model(input_ids=tok, past_key_values=cache, use_cache=True)
                    tok = o.logits[:, -1:].argmax(-1)
            return tok

        def reset() -> None:
            # A negative crop removes that many tokens, in transformers 4.4x and 5.x alike.
            extra = cache.get_seq_length() - ctx
            if extra > 0:
                cache.crop(-extra)

        return PreparedPoint(step, reset, info={"context_len": ctx, "kv_cache": "dynamic"})

    def _prepare_static_decode(self, ids: torch.Tensor, point: Point) -> PreparedPoint:
        """Decode `new_tokens` steps over a StaticCache (the CUDA-graph modes' path)."""
        from perfbench.backends.torch.static_cache import StaticDecodeCache

        model, n, ctx = self.model, point.new_tokens, point.seq_len
        kv = StaticDecodeCache(model, point.batch_size, ctx, n)
        # The context goes in through the eager forward: compiling (and graph-capturing) a
        # prefill that is never timed would only cost compile time and graph-pool memory.
        out = _prefill_context(self._eager_forward, ids, past_key_values=kv.cache,
                               **kv.prefill_kwargs(ids.device))
        first = out.logits[:, -1:].argmax(-1)
        del out

        def step() -> Any:
            tok = first
            with torch.inference_mode():
                for i in range(n):
                    o = model(input_ids=tok, **kv.step_kwargs(i))
                    # argmax makes a fresh tensor: the graph's output buffer is reused next replay.
                    tok = o.logits[:, -1:].argmax(-1)
            return tok

        return PreparedPoint(step, kv.rewind, info={"context_len": ctx, "kv_cache": "static"})

    def release(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.model = None
        self.release()


def _prefill_context(forward: Any, ids: torch.Tensor, **kwargs: Any) -> Any:
    """Build decode's KV cache from the context (untimed), keeping the last position's logits."""
    with torch.inference_mode():
        try:  # logits of the last position only: all of them would cost batch*ctx*vocab memory
            return forward(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs)
        except TypeError:  # transformers < 4.50
            return forward(input_ids=ids, use_cache=True, **kwargs)


#: The registry looks the implementation up under this name.
Backend = TorchBackend
