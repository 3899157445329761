"""The vllm backend: offline `LLM.generate` on token-id prompts of exactly `seq_len` tokens.

A step submits the point's batch of prompts at once and returns when every sequence is done, so
the host wall clock times it. vLLM pre-allocates its KV pool (gpu_memory_utilization), so memory is
the device's use as NVML sees it, not the torch allocator's peak.

vLLM loads models from a folder. A synthetic model is therefore saved once (seeded random weights,
safetensors, with perfbench's local tokenizer) under the cache directory and reused; nothing is
ever fetched from a hub. vLLM is imported only when a run starts, so this module (and its tests of
checkpoints and prompts) works without it.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from perfbench.backends.base import Backend as BackendBase
from perfbench.backends.base import Point, PreparedPoint, StepReport, WallTimer
from perfbench.backends.vllm.config import Config

#: Files that make a folder a tokenizer AutoTokenizer can load.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


class VLLMBackend(BackendBase):
    config: Config

    def load(self) -> dict[str, Any]:
        if self.device != "cuda":
            raise RuntimeError(f"vllm runs on CUDA GPUs; this run's device is {self.device!r}")
        from vllm import LLM

        t0 = time.perf_counter()
        model_dir, tok_dir = model_folders(self.ctx)
        t1 = time.perf_counter()
        # safetensors only, unless the spec opted in to pickle weights (they can run code when loaded)
        load_format = "auto" if self.ctx.model.allow_pickle else "safetensors"
        self.llm = LLM(model=str(model_dir), tokenizer=str(tok_dir), dtype=self.ctx.dtype, seed=self.ctx.seed,
                       load_format=load_format, **self.config.engine_args())
        self._vocab = prompt_vocab(self.ctx, _tokenizer_len(self.llm))
        arch = self.ctx.model.arch
        return {
            "parameters": arch.param_count() if arch else None,
            "checkpoint": str(model_dir),
            "checkpoint_s": t1 - t0,
            "load_s": time.perf_counter() - t1,
            "engine_args": self.config.engine_args(),
            "sampling": "greedy, max_tokens = min_tokens = new_tokens, ignore_eos",
        }

    def engine(self) -> dict[str, Any]:
        import vllm

        return {"name": "vllm", "version": vllm.__version__}

    def timer(self) -> Any:
        return WallTimer()  # LLM.generate blocks until every sequence is finished

    def memory_probe(self) -> Any:
        from perfbench.timing import NvmlDeviceMemory

        return NvmlDeviceMemory(nvml_index())

    def prepare(self, point: Point) -> PreparedPoint:
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids(self.ctx.seed, point, self._vocab)]
        n = point.new_tokens
        params = SamplingParams(n=1, temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True)
        llm = self.llm

        def step() -> StepReport:
            outs = llm.generate(prompts, params, use_tqdm=False)
            new = [o.outputs[0].token_ids for o in outs]
            return StepReport(tokens_out=sum(len(ids) for ids in new), output=new)

        return PreparedPoint(step)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            _shutdown(llm)
        gc.collect()


def _shutdown(llm: Any) -> None:
    """Stop vLLM's engine process now rather than at interpreter exit (versions differ)."""
    engine = getattr(llm, "llm_engine", None)
    for owner, name in ((engine, "engine_core"), (llm, "llm_engine")):
        target = getattr(owner, name, None) if owner is not None else None
        stop = getattr(target, "shutdown", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 - closing must never mask the run's own outcome
                pass
            return


def nvml_index() -> int:
    """NVML's index of the GPU vLLM uses (CUDA device 0, after CUDA_VISIBLE_DEVICES)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def prompt_ids(seed: int, point: Point, vocab: int) -> list[list[int]]:
    """`batch_size` prompts of exactly `seq_len` token ids, seeded and distinct per sequence (a
    shared prefix would let vLLM reuse work if prefix caching were on)."""
    rng = random.Random(f"{seed}:{point.batch_size}:{point.seq_len}")
    return [[rng.randrange(vocab) for _ in range(point.seq_len)] for _ in range(point.batch_size)]


def _tokenizer_len(llm: Any) -> int | None:
    try:
        return len(llm.get_tokenizer())
    except Exception:  # noqa: BLE001 - an engine without a tokenizer API: the model's vocab decides
        return None


def prompt_vocab(ctx: Any, tokenizer_len: int | None) -> int:
    """Ids that both the model and the tokenizer know (vLLM refuses others in a prompt)."""
    sizes = [n for n in (tokenizer_len, ctx.model.arch.vocab_size if ctx.model.arch else None) if n]
    if not sizes:
        raise RuntimeError("cannot tell the vocabulary size: neither the tokenizer nor config.json says")
    return min(sizes)


def model_folders(ctx: Any) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) for vLLM: a local checkpoint as is, a synthetic model
    saved once under the cache. A folder without a tokenizer gets perfbench's local one."""
    ref = ctx.model
    folder = ref.path if ref.kind == "hf" else ref.weights
    if folder is None:
        path = synthetic_checkpoint(ref.arch, ctx.dtype, ctx.seed, Path(ctx.cache_dir))
        return path, path
    folder = Path(folder)
    if any((folder / f).is_file() for f in _TOKENIZER_FILES):
        return folder, folder
    from perfbench.models.tokenizer import ensure_tokenizer

    return folder, ensure_tokenizer(_config_vocab(folder, ref.arch), ctx.cache_dir)


def _config_vocab(folder: Path, arch: Any) -> int:
    import json

    if arch is not None:
        return arch.vocab_size
    return int(json.loads((folder / "config.json").read_text())["vocab_size"])


def synthetic_checkpoint(arch: Any, dtype: str, seed: int, cache_dir: Path) -> Path:
    """The seeded random model as a safetensors checkpoint folder with a tokenizer, built once.

    Built on the CPU: CUDA initialised in this process would force vLLM to spawn its workers and
    keep a CUDA context here for nothing."""
    import transformers

    from perfbench.models.tokenizer import atomic_build_dir, cache_key, ensure_tokenizer

    tok = ensure_tokenizer(arch.vocab_size, cache_dir)
    key = cache_key("vllm-checkpoint", 1, arch.model_dump_json(), dtype, seed, transformers.__version__, tok.name)
    final = cache_dir / "checkpoints" / f"{arch.family}-{dtype}-seed{seed}-{key}"

    def build(tmp: Path) -> None:
        from perfbench.models.build import build_model

        model = build_model(arch, dtype=dtype, device="cpu", seed=seed)
        model.save_pretrained(tmp)
        del model
        for f in tok.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)

    return atomic_build_dir(final, build)


#: The registry looks the implementation up under this name.
Backend = VLLMBackend
