"""The hf-pipeline backend: `pipeline("text-generation")` on real prompts, greedy decoding.

A step is one pipeline call on the point's batch of prompts. Throughput counts the tokens the
pipeline really produced, from the returned token ids (`return_tensors=True`), never the number
asked for. Prompts are the shipped set (`perfbench.prompts`), truncated to at most `seq_len`
tokens from the left (the end, where long prompts put their question, is kept); their real token
count is the point's `prompt_tokens`.

Why the pipeline at all: it is what many users time, and it adds tokenisation, padding, batching
through a DataLoader and decoding around `model.generate`. `overhead_ratio` says how much.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from perfbench.backends.base import Backend as BackendBase
from perfbench.backends.base import Point, PreparedPoint, StepReport
from perfbench.backends.hf_pipeline.config import Config
from perfbench.timing import memory_probe_for, timer_for


@dataclass
class _PointFacts:
    """What prepare() learnt about a point, for summarize()."""

    prompt_tokens: int  # real prompt tokens over the batch, after truncation to seq_len
    generate_s: float | None = None  # median of model.generate on the same inputs


class HFPipelineBackend(BackendBase):
    config: Config

    def load(self) -> dict[str, Any]:
        from transformers import pipeline

        t0 = time.perf_counter()
        self.model, self.tokenizer = _load_model(self.ctx, self.config)
        _prepare_tokenizer(self.tokenizer, self.model)
        self.pipe = pipeline("text-generation", model=self.model, tokenizer=self.tokenizer)
        self._eos = _eos_ids(self.model)
        self._facts: dict[Point, _PointFacts] = {}
        return {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "load_s": time.perf_counter() - t0,
            "pipeline_device": str(self.pipe.device),
            "prompt_kind": self.config.prompt_kind,
            "prompt_truncation": "left (keeps each prompt's end), at most seq_len tokens",
            "torch_threads": torch.get_num_threads(),
        }

    def engine(self) -> dict[str, Any]:
        import transformers

        return {"name": "hf-pipeline", "version": transformers.__version__, "torch": torch.__version__}

    def timer(self) -> Any:
        # The pipeline returns host lists, so it has synchronised; CUDA events cost nothing extra.
        return timer_for(self.device)

    def memory_probe(self) -> Any:
        return memory_probe_for(self.device)

    def prepare(self, point: Point) -> PreparedPoint:
        texts = prompt_texts(self.config.prompt_kind, point.batch_size)
        self.tokenizer.model_max_length = point.seq_len  # the pipeline's truncation=True cuts here
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"]]
        bs = min(self.config.batch_size or point.batch_size, point.batch_size)
        gen = {"max_new_tokens": point.new_tokens, "do_sample": False}
        if self.config.ignore_eos:
            gen["min_new_tokens"] = point.new_tokens
        pipe, eos = self.pipe, self._eos

        def step() -> StepReport:
            outs = pipe(texts, batch_size=bs, truncation=True, return_tensors=True, **gen)
            new = generated_ids(outs, lengths, bs, eos)
            return StepReport(tokens_out=sum(len(ids) for ids in new), output=new)

        facts = _PointFacts(sum(lengths))
        if self.config.compare_generate:
            facts.generate_s = self._time_generate(texts, bs, gen)
        self._facts[point] = facts
        return PreparedPoint(step)

    def _time_generate(self, texts: list[str], bs: int, gen: dict[str, Any]) -> float:
        """Median time of `model.generate` on the batches the pipeline builds (same padding, same
        tokens), once warm. Runs in prepare(), outside the measured iterations."""
        model, tok = self.model, self.tokenizer
        batches = [tok(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt").to(model.device)
                   for i in range(0, len(texts), bs)]

        def call() -> None:
            with torch.inference_mode():
                for b in batches:
                    model.generate(**b, **gen)

        timer = self.timer()
        _warm_up(lambda: timer.time(call)[0])
        return statistics.median(timer.time(call)[0] for _ in range(self.config.compare_repeats))

    def summarize(self, point: Point, reports: list[StepReport], latency_median_s: float) -> dict[str, Any]:
        out = super().summarize(point, reports, latency_median_s)
        facts = self._facts.get(point)
        if facts is None:
            return out
        ref = facts.generate_s
        out.update(overhead_ratio=latency_median_s / ref if ref else None, reference_median_s=ref,
                   prompt_tokens=facts.prompt_tokens)
        return out

    def release(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.pipe = self.model = None
        self.release()


def _warm_up(timed: Any, settle: float = 0.25, most: int = 10) -> None:
    """Call until two calls in a row agree within `settle`: a fresh model's first few calls on
    the CPU run many times slower (measured: 170, 460, 330, then 14 ms), which would flatter the
    pipeline at the first point."""
    last = timed()
    for _ in range(most - 1):
        now = timed()
        if abs(now - last) <= settle * last:
            return
        last = now


def _load_model(ctx: Any, cfg: Config) -> tuple[Any, Any]:
    """The model and its tokenizer. Synthetic: seeded random weights and a tokenizer trained from
    shipped text (offline). hf: the local checkpoint folder, never the hub."""
    from perfbench.models.build import TORCH_DTYPES, build_model, load_kwargs

    ref = ctx.model
    if ref.kind == "synthetic":
        weights = str(ref.weights) if ref.weights else None
        model = build_model(ref.arch, dtype=ctx.dtype, device=ctx.device, seed=ctx.seed, weights=weights,
                            allow_pickle=ref.allow_pickle)
        return model, _tokenizer(ref.weights, model, ctx.cache_dir)
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, TORCH_DTYPES[ctx.dtype])
    kw: dict[str, Any] = load_kwargs(ref.allow_pickle)
    if cfg.device_map:
        kw["device_map"] = cfg.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype, **kw)
    except TypeError:  # transformers < 4.56 calls it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(ref.path, torch_dtype=dtype, **kw)
    if not cfg.device_map:
        model.to(ctx.device)
    model.eval()
    return model, _tokenizer(ref.path, model, ctx.cache_dir)


#: Files that make a folder a tokenizer AutoTokenizer can load.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def _tokenizer(folder: Any, model: Any, cache_dir: Any) -> Any:
    """The checkpoint's own tokenizer where it has one, else perfbench's local one."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from perfbench.models.tokenizer import ensure_tokenizer

    if folder is None or not any((Path(folder) / f).is_file() for f in _TOKENIZER_FILES):
        folder = ensure_tokenizer(model.config.vocab_size, cache_dir)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _prepare_tokenizer(tok: Any, model: Any) -> None:
    """Left padding (decoder-only batches must end at the real last token) and left truncation."""
    tok.padding_side = "left"
    tok.truncation_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.pad_token_id is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def prompt_texts(kind: str, n: int) -> list[str]:
    """`n` prompts of one kind, cycling the set; `mixed` interleaves the kinds."""
    from perfbench.prompts import PROMPT_KINDS, load_prompts

    if kind == "mixed":
        by_kind = [load_prompts(k) for k in PROMPT_KINDS]
        pool = [p for group in _interleave(by_kind) for p in group]
    else:
        pool = load_prompts(kind)
    return [pool[i % len(pool)].text for i in range(n)]


def _interleave(groups: list[list[Any]]) -> list[list[Any]]:
    """Round-robin rows: [[a0, b0, c0], [a1, b1, c1], ...], shorter groups dropping out."""
    rows = max(len(g) for g in groups)
    return [[g[i] for g in groups if i < len(g)] for i in range(rows)]


def generated_ids(outs: list[Any], lengths: list[int], bs: int, eos: set[int]) -> list[list[int]]:
    """The tokens each sequence produced, from the ids the pipeline returned.

    Each returned sequence is [left padding] + prompt + new tokens, every sequence of one pipeline
    batch padded to that batch's longest prompt, so its new tokens start there. After an EOS,
    generate pads finished sequences to the batch's length: those pads are not produced tokens."""
    new: list[list[int]] = []
    for start in range(0, len(outs), bs):
        prompt_len = max(lengths[start:start + bs])
        for out in outs[start:start + bs]:
            ids = list(out[0]["generated_token_ids"])
            if len(ids) < prompt_len:
                raise RuntimeError(f"pipeline returned {len(ids)} ids for a {prompt_len}-token prompt: "
                                   "it no longer pads a batch to its longest prompt")
            new.append(_until_eos(ids[prompt_len:], eos))
    return new


def _until_eos(new: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(new):
        if t in eos:
            return new[:i + 1]
    return new


#: The registry looks the implementation up under this name.
Backend = HFPipelineBackend
