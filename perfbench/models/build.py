"""Build transformers models from a `ModelArch`, with seeded random weights (no hub access)."""

from __future__ import annotations

from typing import Any

from perfbench.models.arch import ModelArch

TORCH_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def hf_config(arch: ModelArch, attn_implementation: str = "sdpa") -> Any:
    """The transformers config for an architecture."""
    if arch.family == "llama":
        from transformers import LlamaConfig

        cfg = LlamaConfig(
            vocab_size=arch.vocab_size, hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_hidden_layers,
            num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.kv_heads,
            head_dim=arch.head_size, max_position_embeddings=arch.max_position_embeddings,
            tie_word_embeddings=arch.tie_word_embeddings, rms_norm_eps=arch.rms_norm_eps,
            rope_theta=arch.rope_theta, pad_token_id=None, bos_token_id=None, eos_token_id=None,
        )
    elif arch.family == "bert":
        from transformers import BertConfig

        cfg = BertConfig(
            vocab_size=arch.vocab_size, hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_hidden_layers,
            num_attention_heads=arch.num_attention_heads,
            max_position_embeddings=arch.max_position_embeddings,
            type_vocab_size=arch.type_vocab_size, layer_norm_eps=arch.layer_norm_eps,
        )
    else:  # pragma: no cover - ModelArch restricts family
        raise ValueError(arch.family)
    cfg._attn_implementation = attn_implementation
    return cfg


def load_kwargs(allow_pickle: bool) -> dict[str, Any]:
    """from_pretrained's arguments for a local checkpoint: never a hub, and safetensors only unless
    the spec opted in to pickle files (which can run code when loaded). Explicit, not the default
    of whichever transformers version is installed."""
    return {"local_files_only": True, "use_safetensors": not allow_pickle}


def build_model(arch: ModelArch, *, dtype: str, device: str, seed: int,
                attn_implementation: str = "sdpa", weights: str | None = None,
                allow_pickle: bool = False) -> Any:
    """A model in eval mode on `device`. Random weights are seeded, so two runs build the same model.

    Weights are created directly on the device: initialising an 8B model on the host first would
    cost minutes and host memory for nothing.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
    cls = AutoModelForCausalLM if arch.is_decoder else AutoModel
    if weights:
        kw = dict(attn_implementation=attn_implementation, **load_kwargs(allow_pickle))
        try:
            model = cls.from_pretrained(weights, dtype=torch_dtype, **kw)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = cls.from_pretrained(weights, torch_dtype=torch_dtype, **kw)
        model.to(device)
    else:
        torch.manual_seed(seed)
        if device == "cuda":
            torch.cuda.manual_seed_all(seed)
        cfg = hf_config(arch, attn_implementation)
        with torch.device(device):
            try:
                model = cls.from_config(cfg, dtype=torch_dtype, attn_implementation=attn_implementation)
            except TypeError:  # transformers < 4.56 calls it torch_dtype
                model = cls.from_config(cfg, torch_dtype=torch_dtype, attn_implementation=attn_implementation)
    model.eval()
    if arch.is_decoder:
        gc = model.generation_config
        # Random weights: never stop early on an EOS, never warn about padding.
        gc.eos_token_id = None
        gc.pad_token_id = 0
    return model
