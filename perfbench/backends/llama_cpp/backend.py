"""The llama.cpp backend: llama-cpp-python's C API, in process, on a GGUF file.

Why the C API and not `llama_cpp.Llama`: the context is sized per point (n_ctx follows seq_len +
new_tokens, which `load()` is not told), and the timed loops must be as thin as a bare loop. Steps
are llama-bench's tests: pp decodes the prompt in n_batch chunks; tg decodes one fixed token at a
time (no sampling) and synchronises after each, as llama-bench does, which is also what makes
llama.cpp's own counters book each token as generation rather than as one prompt batch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from pathlib import Path
from typing import Any

from perfbench.backends.base import Backend as BackendBase
from perfbench.backends.base import Point, PreparedPoint, StepReport
from perfbench.backends.llama_cpp.config import GGUF_DTYPES, KV_TYPES, Config, auto_n_ctx

_TOKEN_P = ctypes.POINTER(ctypes.c_int32)


class LlamaCppBackend(BackendBase):
    config: Config

    def __init__(self, config: Config, ctx: Any):
        super().__init__(config, ctx)
        self.model = self.lctx = self._n_ctx = self._ids = None  # llama_model*, llama_context*

    def load(self) -> dict[str, Any]:
        import llama_cpp

        self.L = L = llama_cpp.llama_cpp
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's log callback
        L.llama_backend_init()
        self._check_placement()
        t0 = time.perf_counter()
        path, gguf_dtype = self._gguf()
        built_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.model = L.llama_model_load_from_file(str(path).encode(), self._model_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path} (not a GGUF it supports?)")
        return {**self._model_facts(path, gguf_dtype), "gguf_build_s": built_s,
                "load_s": time.perf_counter() - t0, **self._settings()}

    def _check_placement(self) -> None:
        """Where the layers run must match the device the run is stored under (device: auto is
        resolved only now, so the spec could not check it)."""
        layers = self.config.n_gpu_layers
        if layers and not self.L.llama_supports_gpu_offload():
            raise RuntimeError("n_gpu_layers is set but this llama-cpp-python build has no GPU "
                               "offload: install a CUDA build, or use n_gpu_layers: 0 and device: cpu")
        if self.device == "cuda" and not layers:
            raise ValueError("device resolved to cuda but backend.n_gpu_layers is 0: set device: cpu, "
                             "or n_gpu_layers (-1 = all)")
        if self.device == "cpu" and layers:
            raise ValueError(f"device resolved to cpu but backend.n_gpu_layers is {layers}: set "
                             "n_gpu_layers: 0, or device: cuda")

    def _gguf(self) -> tuple[Path, str]:
        """The GGUF to load: the spec's file, or the synthetic arch written once into the cache."""
        ref = self.ctx.model
        if ref.kind == "gguf":
            return Path(ref.path), "from the file"
        from perfbench.models.gguf_tiny import ensure_tiny_gguf

        dtype = GGUF_DTYPES[self.ctx.dtype]
        return ensure_tiny_gguf(ref.arch, self.ctx.seed, self.ctx.cache_dir, dtype=dtype), dtype

    def _model_params(self) -> Any:
        p = self.L.llama_model_default_params()
        p.n_gpu_layers = 0x7FFFFFFF if self.config.n_gpu_layers == -1 else self.config.n_gpu_layers
        p.load_mode = self.L.LLAMA_LOAD_MODE_MMAP if self.config.use_mmap else self.L.LLAMA_LOAD_MODE_NONE
        return p

    def _model_facts(self, path: Path, gguf_dtype: str) -> dict[str, Any]:
        L, buf = self.L, ctypes.create_string_buffer(256)
        L.llama_model_desc(self.model, buf, len(buf))
        return {"gguf": str(path), "gguf_bytes": path.stat().st_size, "gguf_dtype": gguf_dtype,
                "model_desc": buf.value.decode(errors="replace"),
                "parameters": int(L.llama_model_n_params(self.model)),
                "model_bytes": int(L.llama_model_size(self.model))}

    def _threads(self) -> tuple[int, int]:
        n = self.config.n_threads or len(os.sched_getaffinity(0))
        return n, self.config.n_threads_batch or n

    def _settings(self) -> dict[str, Any]:
        c = self.config
        n, nb = self._threads()
        return {"n_threads": n, "n_threads_batch": nb, "n_batch": c.n_batch, "n_ubatch": c.ubatch,
                "n_ctx": c.n_ctx or "auto (seq_len + new_tokens, rounded up)",
                "n_gpu_layers": c.n_gpu_layers, "flash_attn": c.flash_attn, "type_k": c.type_k,
                "type_v": c.type_v, "use_mmap": c.use_mmap, "tg_tokens": "fixed ids, no sampling"}

    def engine(self) -> dict[str, Any]:
        import llama_cpp

        return {"name": "llama.cpp", "version": llama_cpp.__version__, "binding": "llama-cpp-python",
                **_ggml_build(), "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
                "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())}

    def memory_probe(self) -> Any:
        from perfbench.timing import NvmlDeviceMemory, PeakRSS

        return NvmlDeviceMemory() if self.device == "cuda" else PeakRSS()

    # -- per point ----------------------------------------------------------------------------

    def _context(self, point: Point) -> None:
        """One llama.cpp context per needed size, reused by every point that fits it."""
        n_ctx = self.config.n_ctx or auto_n_ctx(point.seq_len, point.new_tokens)
        if self.lctx is not None and self._n_ctx == n_ctx:
            return
        self._free_context()
        self.lctx = self.L.llama_init_from_model(self.model, self._context_params(n_ctx))
        if not self.lctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens (out of "
                               "memory, or a KV type this build lacks?)")
        self._n_ctx, self.mem = n_ctx, self.L.llama_get_memory(self.lctx)

    def _context_params(self, n_ctx: int) -> Any:
        c, L = self.config, self.L
        p = L.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = n_ctx, c.n_batch, c.ubatch, 1
        p.n_threads, p.n_threads_batch = self._threads()
        p.flash_attn_type = (L.LLAMA_FLASH_ATTN_TYPE_ENABLED if c.flash_attn
                             else L.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        p.type_k, p.type_v = KV_TYPES[c.type_k], KV_TYPES[c.type_v]
        p.no_perf = False  # keep llama.cpp's own counters: they are reported next to ours
        return p

    def _tokens(self, n: int) -> ctypes.Array:
        """`n` token ids: perfbench's shipped long-context prompts (which one first: the seed),
        tokenized by the model's own vocabulary and repeated until long enough."""
        from perfbench.prompts import load_prompts

        prompts = load_prompts("long_context")
        k = self.ctx.seed % len(prompts)
        text = "\n\n".join(p.text for p in prompts[k:] + prompts[:k])
        ids = self._tokenize(text, bos=True)
        more = self._tokenize("\n\n" + text, bos=False)
        while len(ids) < n:
            ids += more
        return (ctypes.c_int32 * n)(*ids[:n])

    def _tokenize(self, text: str, *, bos: bool) -> list[int]:
        L, raw = self.L, text.encode()
        vocab = L.llama_model_get_vocab(self.model)
        buf = (ctypes.c_int32 * (len(raw) + 8))()
        n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), bos, False)
        if n <= 0:
            raise RuntimeError("the model's vocabulary produced no tokens for perfbench's prompts")
        return list(buf[:n])

    def _batches(self, ids: ctypes.Array, start: int, stop: int, size: int) -> list[Any]:
        """llama_batch views of ids[start:stop] in chunks of `size`, built once per point so the
        timed loops only call llama_decode (positions follow the KV cache: pos is NULL)."""
        base = ctypes.addressof(ids)
        return [self.L.llama_batch_get_one(ctypes.cast(base + 4 * i, _TOKEN_P), min(size, stop - i))
                for i in range(start, stop, size)]

    def prepare(self, point: Point) -> PreparedPoint:
        self._context(point)
        # kept on self: the batches point into it (one point is prepared at a time)
        self._ids = ids = self._tokens(point.seq_len + point.new_tokens)
        pp = self._batches(ids, 0, point.seq_len, self.L.llama_n_batch(self.lctx))
        tg = self._batches(ids, point.seq_len, point.seq_len + point.new_tokens, 1)
        phase = self.ctx.phase
        if phase == "prefill":
            return self._prepare_prefill(pp)
        if phase == "decode":
            return self._prepare_decode(pp, tg, point.seq_len)
        return self._prepare_generate(pp, tg)

    def _prepare_prefill(self, pp: list[Any]) -> PreparedPoint:
        run_pp, perf = self._pp_loop(pp), self._perf(pp=True, tg=False)

        def step() -> StepReport:
            t = run_pp()
            return StepReport(None, {"pp": t}, perf())

        self._clear()
        return PreparedPoint(step, self._clear)

    def _prepare_decode(self, pp: list[Any], tg: list[Any], ctx_len: int) -> PreparedPoint:
        self._clear()
        self._pp_loop(pp)()  # the context, untimed
        run_tg, perf, n = self._tg_loop(tg), self._perf(pp=False, tg=True), len(tg)

        def step() -> StepReport:
            t = run_tg()
            return StepReport(n, {"tg": t}, perf())

        def reset() -> None:
            self.L.llama_memory_seq_rm(self.mem, 0, ctx_len, -1)
            self.L.llama_perf_context_reset(self.lctx)

        reset()
        return PreparedPoint(step, reset, info={"context_len": ctx_len, "kv_cache": "static"})

    def _prepare_generate(self, pp: list[Any], tg: list[Any]) -> PreparedPoint:
        run_pp, run_tg, n = self._pp_loop(pp), self._tg_loop(tg), len(tg)
        perf = self._perf(pp=True, tg=True)

        def step() -> StepReport:
            t_pp = run_pp()
            t_tg = run_tg()
            return StepReport(n, {"pp": t_pp, "tg": t_tg}, perf())

        self._clear()
        return PreparedPoint(step, self._clear)

    def _pp_loop(self, batches: list[Any]):
        """Prompt processing: decode every chunk, synchronise once; returns seconds."""
        decode, sync, ctx, ns = self.L.llama_decode, self.L.llama_synchronize, self.lctx, time.perf_counter_ns

        def run() -> float:
            t0 = ns()
            for b in batches:
                if decode(ctx, b):
                    raise RuntimeError("llama_decode failed during prompt processing (KV cache full?)")
            sync(ctx)
            return (ns() - t0) / 1e9

        return run

    def _tg_loop(self, batches: list[Any]):
        """Token generation: one token per llama_decode, synchronised each (llama-bench's tg)."""
        decode, sync, ctx, ns = self.L.llama_decode, self.L.llama_synchronize, self.lctx, time.perf_counter_ns

        def run() -> float:
            t0 = ns()
            for b in batches:
                if decode(ctx, b):
                    raise RuntimeError("llama_decode failed during token generation (KV cache full?)")
                sync(ctx)
            return (ns() - t0) / 1e9

        return run

    def _perf(self, pp: bool, tg: bool):
        """A reader of llama.cpp's own counters since the last reset, in perfbench.reports'
        convention. Only the parts the phase runs: llama.cpp reports an idle count as 1, not 0."""
        perf, lctx = self.L.llama_perf_context, self.lctx

        def read() -> dict[str, float]:
            d = perf(lctx)
            out: dict[str, float] = {"n_graph_reused": d.n_reused}
            if pp:
                out.update(n_pp=d.n_p_eval, t_pp_s=d.t_p_eval_ms / 1e3)
            if tg:
                out.update(n_tg=d.n_eval, t_tg_s=d.t_eval_ms / 1e3)
            return out

        return read

    def _clear(self) -> None:
        """Empty KV cache and fresh counters (untimed, between steps)."""
        self.L.llama_memory_clear(self.mem, False)
        self.L.llama_perf_context_reset(self.lctx)

    def _free_context(self) -> None:
        if self.lctx:
            self.L.llama_free(self.lctx)
        self.lctx = self._n_ctx = None

    def close(self) -> None:
        if self.model:
            self._free_context()
            self.L.llama_model_free(self.model)
            self.model = None


def _ggml_build() -> dict[str, Any]:
    """llama.cpp's build as its ggml library reports it (the binding does not wrap these calls)."""
    from llama_cpp import llama_cpp as L

    try:
        lib = ctypes.CDLL(str(next(Path(L._lib._name).parent.glob("libggml-base.*"))))
        out = {}
        for key, fn in (("build", "ggml_commit"), ("ggml_version", "ggml_version")):
            f = getattr(lib, fn)
            f.restype = ctypes.c_char_p
            out[key] = f().decode()
        return out
    except (OSError, AttributeError, StopIteration):
        return {"build": None}


#: The registry looks the implementation up under this name.
Backend = LlamaCppBackend
