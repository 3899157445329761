"""Workload specs: YAML in `workloads/`, validated before anything runs or is stored.

Every validation problem is reported with the file, the dotted field path and what is allowed, and
raises `SpecError` (exit code 2) so that nothing reaches the results store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from perfbench.backends import BACKENDS, config_class
from perfbench.backends.base import BackendConfig, Point, SpecFacts
from perfbench.errors import SpecError
from perfbench.models.arch import PRESETS, ModelArch
from perfbench.models.ref import ModelRef, ModelRefError, model_ref, weights_problem
from perfbench.serving.spec import LoadSpec
from perfbench.validation import problems as validation_problems
from perfbench.validation import NAME_PATTERN, NAME_RULE, load_yaml_text, read_yaml

Phase = Literal["prefill", "decode", "generate", "serve"]
#: Bounds on sizes a spec may ask for: far above any real workload, far below what breaks storage
#: or arithmetic (a batch of 10^20 would pass to the store and fail there).
MAX_BATCH = 1 << 20
MAX_TOKENS = 1 << 24
DType = Literal["float32", "float16", "bfloat16"]


class MeasureConfig(BaseModel):
    """Repeat until both `repeats` and `min_seconds` are met, capped by `max_seconds` per point."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    warmup: int = Field(default=3, ge=0, le=100_000)
    repeats: int = Field(default=20, ge=1, le=1_000_000)
    min_seconds: float = Field(default=1.0, ge=0, le=86_400, strict=False)
    max_seconds: float = Field(default=600.0, gt=0, le=604_800, strict=False, description="safety cap per point")
    trace: bool = False
    energy: Literal["auto", "off", "nvml", "rapl", "pi5-pmic"] = "auto"
    idle_seconds: float = Field(default=0.5, ge=0, le=60, strict=False,
                                description="idle power baseline measured before each point")

    @model_validator(mode="after")
    def _caps(self) -> "MeasureConfig":
        if self.max_seconds < self.min_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must be >= min_seconds ({self.min_seconds})")
        return self


class WorkloadSpec(BaseModel):
    """A normalised workload. `model` keeps what the user wrote; `arch` is the resolved shape."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    description: str | None = None
    model: str | dict[str, Any]
    phase: Phase
    batch_sizes: list[StrictInt] = Field(min_length=1, max_length=1024)
    seq_len: StrictInt = Field(gt=0, le=MAX_TOKENS)
    new_tokens: StrictInt = Field(default=0, ge=0, le=MAX_TOKENS)
    dtype: DType = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: dict[str, Any] = Field(default_factory=lambda: {"name": "torch"})
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    seed: StrictInt = Field(default=0, ge=0, lt=2**63, description="seeds torch's generators (64-bit)")
    weights: str | None = Field(default=None, description="local path to real weights (optional)")
    allow_pickle_weights: bool = Field(default=False, description=(
        "load pickle weight files (.bin, .pt): they can run code when loaded, so only for files you trust"))
    load: LoadSpec | None = Field(default=None, description="phase serve: the load points (docs/serving.md)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if not 0 < b <= MAX_BATCH]
        if bad:
            raise ValueError(f"batch sizes must be positive integers up to {MAX_BATCH:,}, got {bad[:5]}")
        if len(set(v)) != len(v):
            raise ValueError(f"batch sizes must be unique, got {v}")
        return v

    @property
    def model_ref(self) -> ModelRef:
        return model_ref(self.model, self.weights, self.allow_pickle_weights)

    @property
    def arch(self) -> ModelArch | None:
        """The resolved shape; None for a model whose shape is unknown (a GGUF file)."""
        return self.model_ref.arch

    @property
    def model_label(self) -> str:
        return self.model_ref.label

    @property
    def backend_config(self) -> BackendConfig:
        return config_class(self.backend["name"]).model_validate(self.backend)

    def points(self) -> list[Point]:
        if self.phase == "serve" and self.load is not None:
            # one point per load level: batch_size = requests in flight (closed) or the cap (open,
            # 0 = none), seq_len 0 (prompts vary: input_tokens_mean), new_tokens = max_tokens
            return [Point(p.plan.concurrency or 0, 0, self.load.max_tokens, load=p) for p in self.load.points(self.seed)]
        return [Point(b, self.seq_len, self.new_tokens) for b in self.batch_sizes]

    def normalised(self) -> dict[str, Any]:
        """The spec with every default filled in (still a valid spec: sweeps re-parse it)."""
        d = self.model_dump(mode="json")
        d["backend"] = self.backend_config.model_dump(mode="json")
        return d

    def stored(self) -> dict[str, Any]:
        """What a run stores: the normalised spec plus the architecture it resolved to, so the run
        still says what was measured if a preset's definition changes later."""
        arch = self.arch
        return {**self.normalised(), "arch": arch.model_dump(mode="json") if arch else None}

    def spec_hash(self) -> str:
        """Hash of what decides the measurement: the resolved architecture, not how the model was
        written (`tiny-llama`, `{preset: tiny-llama}` and the full mapping are one workload); name
        and description excluded."""
        d = self.normalised()
        if self.arch is not None and self.model_ref.kind == "synthetic":
            d["model"] = self.arch.model_dump(mode="json")
        d.pop("name", None)
        d.pop("description", None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Override path that means "measure just this batch size" (sets batch_sizes: [v]).
BATCH_SIZE = "batch_size"


def set_path(workload: dict[str, Any], path: str, value: Any) -> None:
    """Set one field of a workload mapping by dotted path (`backend.compile`, `measure.repeats`).

    Used by sweeps and by `perfbench run --set`; the result is validated like any spec, so a bad
    path or value is reported with its field. `batch_size` sets `batch_sizes: [value]`; a field of
    a preset model (`model.num_hidden_layers`) turns the preset into {preset: ..., field: value}.
    """
    if path == BATCH_SIZE:
        workload["batch_sizes"] = [value]
        return
    head, _, leaf = path.partition(".")
    if not leaf:
        workload[head] = value
        return
    parent = workload.get(head)
    if head == "model" and isinstance(parent, str):
        parent = {"preset": parent}  # a preset with one field overridden
    if parent is not None and not isinstance(parent, dict):
        raise SpecError(f"--set {path}", [(head, f"is {type(parent).__name__} {parent!r}, not a mapping: "
                                                 f"set {head} itself (e.g. {head}=VALUE), not {path}")])
    parent = dict(parent or {})
    parent[leaf] = value
    workload[head] = parent


def parse_spec(data: Any, source: str = "<spec>", *, check_device: bool = True) -> WorkloadSpec:
    """Validate a spec mapping. All problems found are reported at once."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping of fields, got {type(data).__name__}")])
    problems: list[tuple[str, str]] = []
    if data.get("phase") == "serve":  # a serving spec states load points, not batches
        data = {"batch_sizes": [1], "seq_len": 1, **data}
    if isinstance(data.get("backend"), dict) and "name" not in data["backend"]:
        data = {**data, "backend": {"name": "torch", **data["backend"]}}  # torch is the default backend
    try:
        spec = WorkloadSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, WorkloadSpec))
        spec = None

    # The model: a preset, an architecture mapping, or a local checkpoint / GGUF ({path: ...}).
    ref, arch = _check_model(data, problems)
    problems.extend(_check_backend(data, spec, ref, check_device))

    # Cross-field rules: the phase's for every model, the shape's where the shape is known.
    if spec is not None:
        problems.extend(_phase_rules(spec))
    if spec is not None and arch is not None:
        if not arch.is_decoder and spec.phase != "prefill":
            problems.append(("phase", f"{spec.phase!r} needs a decoder model; {arch.family} is an "
                                      "encoder: use phase: prefill"))
        limit = arch.max_position_embeddings
        need = spec.seq_len + spec.new_tokens
        if need > limit:
            problems.append(("seq_len", f"seq_len + new_tokens = {need} exceeds the model's "
                                        f"max_position_embeddings ({limit})"))
    if spec is not None and ref is not None and ref.kind == "hf":
        why = weights_problem(ref.path, spec.allow_pickle_weights)
        if why:
            problems.append(("model.path", why))
    if spec is not None and spec.weights:
        if ref is not None and ref.kind != "synthetic":
            problems.append(("weights", "weights: goes with a preset or architecture mapping; "
                                        "model: {path: ...} already names the checkpoint"))
        else:
            problems.extend(_check_weights(Path(spec.weights).expanduser(), arch))
            if Path(spec.weights).expanduser().is_dir():
                why = weights_problem(Path(spec.weights).expanduser(), spec.allow_pickle_weights)
                problems.extend([("weights", why)] if why else [])
    if spec is not None and check_device and spec.device == "cuda" and not problems:
        from perfbench.devices import cuda_available

        if not cuda_available():
            problems.append(("device", "cuda requested but no CUDA GPU is available on this host; "
                                       "allowed here: auto, cpu"))
    if problems:
        raise SpecError(source, problems)
    assert spec is not None
    return spec


def _phase_rules(spec: "WorkloadSpec") -> list[tuple[str, str]]:
    if spec.phase == "serve":
        return [] if spec.load is not None else [("load", "phase serve needs a load: section "
                                                          "(concurrency: [...] or rates_rps: [...])")]
    if spec.load is not None:
        return [("load", "load: goes with phase: serve (a server measured under load)")]
    if spec.phase in ("decode", "generate") and spec.new_tokens < 1:
        return [("new_tokens", f"phase {spec.phase} needs new_tokens >= 1 "
                               "(tokens to produce per measured iteration)")]
    if spec.phase == "prefill" and spec.new_tokens:
        return [("new_tokens", "prefill produces no tokens: set new_tokens: 0 or use phase: generate")]
    return []


def _check_model(data: dict, problems: list[tuple[str, str]]) -> tuple[ModelRef | None, ModelArch | None]:
    model = data.get("model")
    if not isinstance(model, (str, dict)):
        return None, None  # the schema already said what `model` must be
    try:
        ref = model_ref(model, None)
    except ModelRefError as exc:
        problems.append((exc.field, str(exc)))
        return None, None
    except KeyError as exc:
        problems.append(("model" + (".preset" if isinstance(model, dict) else ""),
                         f"unknown preset {exc.args[0]!r}; allowed: {', '.join(PRESETS)}, a mapping of "
                         "architecture fields (family: llama|bert, hidden_size, ...), or {path: LOCAL}"))
        return None, None
    except ValidationError as exc:
        problems.extend(validation_problems(exc, ModelArch, prefix="model."))
        return None, None
    return ref, ref.arch


def _check_backend(data: dict, spec: "WorkloadSpec | None", ref: ModelRef | None,
                   check_device: bool = True) -> list[tuple[str, str]]:
    """The backend's own config, then what it can do against what the spec asks."""
    backend = data.get("backend", {"name": "torch"})
    if not isinstance(backend, dict):
        return [("backend", f"expected a mapping like {{name: torch}}, got {backend!r}")]
    name = backend.get("name")
    if name not in BACKENDS:
        return [("backend.name", f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")]
    cls = config_class(name)
    try:
        cfg = cls.model_validate(backend)
    except ValidationError as exc:
        return validation_problems(exc, cls, prefix="backend.")
    if spec is None or ref is None:
        return []
    caps, out = cls.capabilities, []
    if spec.phase not in caps.phases:
        out.append(("phase", f"backend {name} does not run phase {spec.phase!r}; allowed: {', '.join(caps.phases)}"))
    if spec.device != "auto" and spec.device not in caps.devices:
        out.append(("device", f"backend {name} does not run on {spec.device!r}; allowed: {', '.join(caps.devices)}"))
    elif spec.device == "auto" and check_device and "cpu" not in caps.devices:
        from perfbench.devices import resolve_device  # imports torch: only for GPU-only backends

        if resolve_device("auto") not in caps.devices:
            out.append(("device", f"backend {name} runs on {', '.join(caps.devices)} only, and this host "
                                  "has none: run it on a GPU machine"))
    if ref.kind not in caps.model_kinds:
        out.append(("model", f"backend {name} takes {' or '.join(caps.model_kinds)} models, not a {ref.kind} "
                             "model"))
    if not caps.batching and any(b > 1 for b in spec.batch_sizes):
        out.append(("batch_sizes", f"backend {name} runs one sequence at a time: use batch_sizes: [1]"))
    facts = SpecFacts(spec.phase, spec.dtype, spec.device, tuple(spec.batch_sizes), spec.seq_len,
                      spec.new_tokens, ref)
    return out + cfg.check(facts)  # full field paths: backend.n_ctx, seq_len, ...


#: Checkpoint config fields that must agree with the spec's model: the roofline, the input ids and
#: every label come from `model:`, so a checkpoint of another shape would be measured mislabelled.
_WEIGHTS_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "vocab_size")


def _check_weights(folder: Path, arch: ModelArch | None) -> list[tuple[str, str]]:
    import json

    if not folder.is_dir():
        return [("weights", f"{str(folder)!r} is not a directory; give a local checkpoint folder "
                            "(config.json + weights), or drop the field for seeded random weights")]
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        return [("weights", f"no config.json in {folder}: not a transformers checkpoint folder")]
    except (OSError, ValueError) as exc:
        return [("weights", f"cannot read {cfg_path}: {exc}")]
    if arch is None:
        return []
    out = []
    if cfg.get("model_type") not in (None, arch.family):
        out.append(("weights", f"the checkpoint is a {cfg.get('model_type')!r} model but model: is "
                               f"family {arch.family!r}"))
    ours = {"num_key_value_heads": arch.kv_heads}
    diffs = [f"{k}: checkpoint {cfg[k]} vs model {ours.get(k, getattr(arch, k))}" for k in _WEIGHTS_FIELDS
             if k in cfg and cfg[k] is not None and cfg[k] != ours.get(k, getattr(arch, k))]
    if diffs:
        out.append(("weights", "checkpoint shape differs from model: (" + "; ".join(diffs) + "); set model: "
                               "to the checkpoint's architecture (a preset or a mapping of these fields)"))
    return out


def load_spec(path: str | Path, *, check_device: bool = True,
              overrides: list[str] | None = None) -> WorkloadSpec:
    """Load and validate a workload spec file, with optional `KEY=VALUE` overrides (values are
    YAML: `backend.compile=reduce-overhead`, `batch_sizes=[1,8]`, `measure.trace=true`)."""
    import copy

    path = Path(path)
    data = read_yaml(path)
    source = str(path)
    if overrides:
        if not isinstance(data, dict):
            raise SpecError(source, [("", f"expected a mapping of fields, got {type(data).__name__}")])
        data = copy.deepcopy(data)
        for item in overrides:
            key, eq, raw = item.partition("=")
            if not eq or not key.strip():
                raise SpecError(source, [("--set", f"expected KEY=VALUE (e.g. backend.compile=default), got {item!r}")])
            try:
                value = load_yaml_text(raw, f"--set {key.strip()}")
            except SpecError as exc:
                if "not valid YAML" not in str(exc):
                    raise  # too big, too deep: refused, never taken as a plain string
                value = raw
            set_path(data, key.strip(), value)
        source += " (with --set " + ", ".join(overrides) + ")"
    return parse_spec(data, source, check_device=check_device)
