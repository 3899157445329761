"""Architecture descriptions of the models perfbench builds.

Torch-free on purpose: the roofline model and spec validation need the shapes without paying for
torch. `perfbench.models.build` turns a `ModelArch` into a transformers model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelArch(BaseModel):
    """The architecture fields that decide cost. Names follow transformers' configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["llama", "bert"]
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(default=None, gt=0, description="GQA groups (llama)")
    head_dim: int | None = Field(default=None, gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(default=2048, gt=0)
    tie_word_embeddings: bool = False
    rope_theta: float = Field(default=10000.0, gt=0)
    rms_norm_eps: float = Field(default=1e-5, gt=0)
    # BERT only
    type_vocab_size: int = Field(default=2, gt=0)
    layer_norm_eps: float = Field(default=1e-12, gt=0)

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelArch":
        kv = self.kv_heads
        if self.num_attention_heads % kv:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({kv})"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}), or set head_dim"
            )
        if self.family == "bert" and self.num_key_value_heads not in (None, self.num_attention_heads):
            raise ValueError("bert has no grouped-query attention: drop num_key_value_heads")
        if self.family == "bert" and (self.hidden_size % self.num_attention_heads
                                      or self.head_dim not in (None, self.hidden_size // self.num_attention_heads)):
            raise ValueError(f"bert derives head_dim from hidden_size / num_attention_heads "
                             f"({self.hidden_size} / {self.num_attention_heads}): it must divide evenly, "
                             "and head_dim, if given, must equal it")
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_decoder(self) -> bool:
        return self.family == "llama"

    def param_count(self) -> int:
        """Parameters as transformers builds them (embeddings included, tied head counted once)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_size
        kv = self.kv_heads * self.head_size
        if self.family == "llama":
            per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h  # attn, mlp, 2 RMSNorm
            total = v * h + self.num_hidden_layers * per_layer + h  # embed, layers, final norm
            if not self.tie_word_embeddings:
                total += v * h
            return total
        # BERT: biases everywhere, LayerNorm weight+bias, embeddings with position and token type.
        per_layer = (3 * (h * q + q) + (q * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h)
        emb = (v + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h
        pooler = h * h + h
        return emb + self.num_hidden_layers * per_layer + pooler


#: Real architectures (random weights unless a local weights path is given). Sources: the models'
#: config.json files on their model cards (meta-llama/Llama-3.2-1B, meta-llama/Llama-3.1-8B,
#: google-bert/bert-base-uncased).
PRESETS: dict[str, ModelArch] = {
    "llama-3.2-1b": ModelArch(
        family="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        max_position_embeddings=131072, tie_word_embeddings=True, rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    "llama-3.1-8b": ModelArch(
        family="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        max_position_embeddings=131072, tie_word_embeddings=False, rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    "bert-base": ModelArch(
        family="bert", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, vocab_size=30522, max_position_embeddings=512,
        type_vocab_size=2, layer_norm_eps=1e-12,
    ),
    # Tiny shapes for CPU tests and the demo: same code paths (GQA, tied embeddings), seconds to run.
    "tiny-llama": ModelArch(
        family="llama", hidden_size=128, intermediate_size=352, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=2048,
        max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=10000.0,
    ),
    "tiny-bert": ModelArch(
        family="bert", hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, vocab_size=2048, max_position_embeddings=512,
    ),
}


def resolve_model(model: str | dict) -> tuple[str, ModelArch]:
    """Return (label, arch) for a preset name or an architecture mapping.

    A mapping may name `preset:` and override some of its fields, or give a full architecture.
    Raises KeyError for an unknown preset and pydantic's ValidationError for bad fields.
    """
    if isinstance(model, str):
        if model not in PRESETS:
            raise KeyError(model)
        return model, PRESETS[model]
    fields = dict(model)
    preset = fields.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise KeyError(preset)
        base = PRESETS[preset].model_dump(exclude_unset=False)
        base.update(fields)
        return f"{preset}+custom" if fields else preset, ModelArch.model_validate(base)
    arch = ModelArch.model_validate(fields)
    return f"custom-{arch.family}", arch
