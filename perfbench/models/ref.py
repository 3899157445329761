"""What a spec's `model:` refers to. Models are referenced, never downloaded.

Three kinds:
- `synthetic`: a preset or an architecture mapping, built with seeded random weights
  (`tiny-llama`, `{preset: llama-3.2-1b, num_hidden_layers: 4}`, `{family: llama, ...}`);
- `hf`: a local Hugging Face checkpoint folder (`{path: ./ckpt}`, config.json inside);
- `gguf`: a local GGUF file (`{path: ./model.gguf}`).

A hub id (`meta-llama/Llama-3.2-1B`) is refused with the offline rule: perfbench never fetches a
model at run time, so a number never depends on what a hub served that day.

Torch-free: validation and labels need no framework.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from perfbench.models.arch import PRESETS, ModelArch, resolve_model

Kind = Literal["synthetic", "hf", "gguf"]
OFFLINE_RULE = ("perfbench never downloads models (offline rule): give a preset "
                f"({', '.join(PRESETS)}), an architecture mapping, or a local checkpoint folder or "
                "GGUF file as {path: ...}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: transformers config.json fields that map onto a ModelArch (family llama and bert).
_ARCH_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
              "tie_word_embeddings", "rope_theta", "rms_norm_eps", "type_vocab_size", "layer_norm_eps")


class ModelRefError(ValueError):
    """`field` is the dotted path under `model` (or `weights`) that is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ModelRef:
    kind: Kind
    label: str
    arch: ModelArch | None  # None where the shape is not known (a GGUF, an unfamiliar checkpoint)
    path: Path | None = None  # the checkpoint folder or GGUF file
    weights: Path | None = None  # a synthetic architecture's real weights (the spec's `weights:`)
    allow_pickle: bool = False  # the spec's allow_pickle_weights: load .bin/.pt files (can run code)

    @property
    def checkpoint(self) -> Path | None:
        """The folder whose weights are loaded: the checkpoint, or a synthetic model's weights."""
        return self.path if self.kind == "hf" else self.weights


def model_ref(model: Any, weights: str | None = None, allow_pickle: bool = False) -> ModelRef:
    """Resolve a spec's `model:` (and `weights:`). Raises ModelRefError, KeyError (unknown preset)
    or pydantic's ValidationError (bad architecture fields)."""
    if isinstance(model, dict) and "path" in model:
        if len(model) > 1:
            extra = sorted(set(model) - {"path"})
            raise ModelRefError("model", f"{{path: ...}} takes no other fields (got {', '.join(extra)})")
        ref = _local(model["path"])
        return ModelRef(ref.kind, ref.label, ref.arch, path=ref.path, allow_pickle=allow_pickle)
    if isinstance(model, str) and model not in PRESETS and ("/" in model or model.endswith(".gguf")):
        if Path(model).expanduser().exists():
            raise ModelRefError("model", f"{model!r} is a local path: write it as model: {{path: {model}}}")
        raise ModelRefError("model", f"{model!r} looks like a model hub id. {OFFLINE_RULE}")
    label, arch = resolve_model(model)
    return ModelRef("synthetic", label, arch, weights=Path(weights).expanduser() if weights else None,
                    allow_pickle=allow_pickle)


def _local(raw: Any) -> ModelRef:
    if not isinstance(raw, str) or not raw.strip():
        raise ModelRefError("model.path", f"expected a local path, got {raw!r}")
    path = Path(raw).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelRef("gguf", path.stem, None, path=path)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelRef("hf", path.name, arch_from_config(path / "config.json"), path=path)
    if not path.exists():
        hint = f" {OFFLINE_RULE}" if _HUB_ID.match(raw) else ""
        raise ModelRefError("model.path", f"{raw!r} does not exist.{hint}")
    raise ModelRefError("model.path", f"{raw!r} is neither a .gguf file nor a checkpoint folder with "
                                      "config.json")


#: Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def weights_problem(folder: Path, allow_pickle: bool) -> str | None:
    """Why a checkpoint's weights may not be loaded, or None. perfbench loads safetensors; pickle
    files are refused unless the spec opts in, rather than trusting a library's default."""
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    if any(p.suffix == ".safetensors" for p in files):
        return None
    pickles = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if not pickles or allow_pickle:
        return None  # no weight files at all: loading says so, naming what it looked for
    return (f"{folder} holds only pickle weights ({', '.join(pickles[:3])}), which can run code when "
            "loaded: convert them to safetensors, or set allow_pickle_weights: true if you trust them")


def arch_from_config(path: Path) -> ModelArch | None:
    """The architecture of a llama or bert checkpoint; None for other model types (they still
    run, but the roofline needs a known shape)."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelRefError("model.path", f"cannot read {path}: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") not in ("llama", "bert"):
        return None
    fields = {k: cfg[k] for k in _ARCH_KEYS if cfg.get(k) is not None}
    try:
        return ModelArch.model_validate({"family": cfg["model_type"], **fields})
    except ValueError:
        return None
