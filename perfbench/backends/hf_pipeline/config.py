"""Config of the hf-pipeline backend (torch-free, so spec validation stays fast).

What the spec already says is not repeated here: `new_tokens` is the pipeline's `max_new_tokens`,
`dtype` the model's dtype, the point's batch size the number of prompts per step. Decoding is
always greedy (`do_sample=False`), so every run produces the same tokens.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import ClassVar, Literal

from pydantic import Field

from perfbench.backends.base import BackendConfig, Capabilities, SpecFacts

PromptKind = Literal["short_question", "long_context", "code", "mixed"]


class Config(BackendConfig):
    """`batch_size`: the pipeline's own batch size (None = the point's, one generate per step).
    `prompt_kind`: which shipped prompts feed the pipeline (mixed interleaves the kinds); each is
    truncated to at most `seq_len` tokens, keeping its end (where the question is).
    `ignore_eos`: force exactly `new_tokens` per sequence (min_new_tokens), as real checkpoints
    may stop early otherwise; produced tokens are counted from the ids either way.
    `compare_generate`: also time `model.generate` on the same padded inputs (untimed for the
    run's figures) and store `overhead_ratio` = pipeline median / generate median."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        phases=("generate",), devices=("cpu", "cuda"), model_kinds=("synthetic", "hf"),
        batching=True)

    name: Literal["hf-pipeline"] = "hf-pipeline"
    batch_size: int | None = Field(default=None, gt=0)
    device_map: Literal["auto", "cpu", "cuda"] | None = None
    prompt_kind: PromptKind = "short_question"
    ignore_eos: bool = True
    compare_generate: bool = True
    compare_repeats: int = Field(default=5, ge=1, le=50)

    def check(self, facts: SpecFacts) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.device_map is not None and facts.model.kind == "synthetic":
            out.append(("backend.device_map", "a synthetic model is built on the spec's device; "
                                              "device_map applies to model: {path: ...} only"))
        elif self.device_map == "auto" and find_spec("accelerate") is None:
            out.append(("backend.device_map", "device_map: auto needs the accelerate package "
                                              "(pip install accelerate), or use cpu / cuda"))
        elif self.device_map in ("cpu", "cuda") and facts.device not in ("auto", self.device_map):
            out.append(("backend.device_map", f"device_map {self.device_map!r} contradicts "
                                              f"device: {facts.device}"))
        return out
