"""Sweep specs (`workloads/sweeps/*.yaml`): a base workload, the settings to vary, how to search.

A sweep is validated completely before any trial runs, in the style of workload specs: every
problem is collected and raised as one `SpecError` (exit code 2) naming the sweep file, the field
and what is allowed. Every point of a grid is checked with `parse_spec`, so a bad value fails up
front and names the parameter that produced it, rather than burning trials.

Parameters address workload fields by dotted path (`dtype`, `seq_len`, `backend.compile`,
`measure.repeats`, `model.num_hidden_layers`, ...). `batch_size` is special: a trial measures ONE
batch size (`batch_sizes: [v]`), so the landscape has batch size as an axis like any other.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from perfbench.errors import SpecError
from perfbench.schema import metrics
from perfbench.spec import BATCH_SIZE, MeasureConfig, WorkloadSpec, parse_spec, set_path
from perfbench.validation import problems as _problems
from perfbench.validation import NAME_PATTERN, NAME_RULE, env_limit, read_yaml, safe_name

#: Metrics a sweep may optimise (point fields), with the goal used when the spec gives none: every
#: field of the result schema that says whether higher is better.
METRICS: dict[str, str] = metrics()
METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("int_uniform", "uniform", "log_uniform", "int_log_uniform")
#: Cap on the combinations checked up front; every value of every axis is checked at least once
#: whatever the cap, and the rest are checked when their trial starts.
MAX_PRECHECK = 20000
#: Bounds on a sweep's size: values per parameter, and points of a grid (raised by the variable).
MAX_AXIS_VALUES = 10_000
MAX_GRID_ENV = "PERFBENCH_MAX_GRID"


def max_grid() -> int:
    return env_limit(MAX_GRID_ENV, 1_000_000)
#: Workload fields a parameter may not set: they name things, they do not change a measurement.
_NOT_SWEEPABLE = ("name", "description")


class ParamSpec(BaseModel):
    """One axis: a list of `values` (grid, random, bayes), or a range (random and bayes only)."""

    model_config = ConfigDict(extra="forbid")

    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    distribution: Literal["int_uniform", "uniform", "log_uniform", "int_log_uniform"] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "ParamSpec":
        if self.values is not None:
            if self.min is not None or self.max is not None or self.distribution is not None:
                raise ValueError("give either `values: [...]` or `min`/`max`/`distribution`, not both")
            if not self.values:
                raise ValueError("values must not be empty")
            keys = [json.dumps(v, sort_keys=True) for v in self.values]
            dups = sorted({k for k in keys if keys.count(k) > 1})
            if dups:
                raise ValueError(f"values must be unique; repeated: {', '.join(dups)}")
            return self
        if self.min is None or self.max is None:
            raise ValueError("give `values: [...]`, or a range with `min`, `max` and `distribution` "
                             f"({' | '.join(DISTRIBUTIONS)})")
        if self.distribution is None:
            self.distribution = "uniform"
        if not self.min < self.max:
            raise ValueError(f"min ({self.min:g}) must be less than max ({self.max:g})")
        if self.distribution in ("log_uniform", "int_log_uniform") and self.min <= 0:
            raise ValueError(f"{self.distribution} needs min > 0, got {self.min:g}")
        if self.distribution.startswith("int_"):
            if not (float(self.min).is_integer() and float(self.max).is_integer()):
                raise ValueError(f"{self.distribution} needs integer min and max, got "
                                 f"{self.min:g} and {self.max:g}")
        return self

    @property
    def discrete(self) -> bool:
        return self.values is not None

    @property
    def is_int(self) -> bool:
        return bool(self.distribution and self.distribution.startswith("int_"))

    def normalised(self) -> dict[str, Any]:
        if self.discrete:
            return {"values": list(self.values)}
        cast = int if self.is_int else float
        return {"min": cast(self.min), "max": cast(self.max), "distribution": self.distribution}

    def probe_values(self) -> list[Any]:
        """Values checked up front for a range: both ends and the (geometric) middle."""
        if self.discrete:
            return list(self.values)
        lo, hi = float(self.min), float(self.max)
        mid = math.sqrt(lo * hi) if "log" in self.distribution else (lo + hi) / 2
        if self.is_int:
            return sorted({int(lo), int(round(mid)), int(hi)})
        return [lo, round_sig(mid), hi]


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "tokens_per_s"
    goal: Literal["maximize", "minimize"] | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _goal(self) -> "MetricSpec":
        if self.goal is None:
            self.goal = METRICS[self.name]  # type: ignore[assignment]
        return self


class BudgetSpec(BaseModel):
    """`trials` caps how many trials the sweep holds; `seconds` stops launching new ones."""

    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0)


class SweepSpec(BaseModel):
    """The sweep file as written (see docs/sweeps.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    description: str | None = None
    workload: str | dict[str, Any]
    method: Literal["grid", "random", "bayes"] = "grid"
    metric: MetricSpec = Field(default_factory=MetricSpec)
    parameters: dict[str, ParamSpec] = Field(min_length=1)
    constraints: dict[str, float] = Field(default_factory=dict)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    seed: int = 0
    default: dict[str, Any] = Field(default_factory=dict,
                                    description="the 'default' setting where the base workload has none")

    @field_validator("name")
    @classmethod
    def _id_safe(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-' (it becomes part of the "
                             f"sweep id), got {v!r}")
        return v


def round_sig(x: float, digits: int = 6) -> float:
    """Sampled floats are rounded so trial identities stay readable and stable across resumes."""
    return float(f"{x:.{digits}g}")


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def constraint_target(key: str) -> tuple[str, str] | None:
    """`max_peak_memory_bytes` -> ("max", "peak_memory_bytes"); None if not a known constraint."""
    m = re.fullmatch(r"(max|min)_(.+)", key)
    if m and m.group(2) in METRICS:
        return m.group(1), m.group(2)
    return None


def _sub_fields(head: str, base: WorkloadSpec) -> list[str] | None:
    if head == "measure":
        return sorted(MeasureConfig.model_fields)
    if head == "backend":
        from perfbench.backends import config_class

        return sorted(config_class(base.backend["name"]).model_fields)
    if head == "model":
        from perfbench.models.arch import ModelArch

        return sorted([*ModelArch.model_fields, "preset"])
    if head == "load":  # serving load points (docs/serving.md)
        from perfbench.serving.spec import LoadSpec

        return sorted(LoadSpec.model_fields)
    return None


def _path_problem(path: str, base: WorkloadSpec) -> str | None:
    """Why `path` cannot address a workload field, or None when it can."""
    if path == BATCH_SIZE:
        return None
    top = [f for f in WorkloadSpec.model_fields if f not in _NOT_SWEEPABLE]
    parts = path.split(".")
    if parts[0] not in top:
        return f"unknown workload field {parts[0]!r}; allowed: {BATCH_SIZE}, {', '.join(top)}"
    if len(parts) == 1:
        return None
    if len(parts) > 2:
        return "paths go at most two levels deep (e.g. backend.compile, measure.repeats)"
    sub = _sub_fields(parts[0], base)
    if sub is None:
        return f"{parts[0]} has no sub-fields; use {parts[0]!r} itself"
    if parts[1] not in sub:
        return f"unknown field {parts[1]!r} of {parts[0]}; allowed: {', '.join(sub)}"
    return None


class _Ambiguous:
    """Marker: the base workload has no single value here (e.g. several batch sizes)."""

    def __init__(self, why: str):
        self.why = why


def get_path(base: WorkloadSpec, base_dict: dict[str, Any], path: str) -> Any:
    if path == BATCH_SIZE:
        bs = base.batch_sizes
        if len(bs) == 1:
            return bs[0]
        return _Ambiguous(f"the base workload measures batch_sizes {bs}, so it has no single "
                          "default batch size (set `default: {batch_size: N}` in the sweep)")
    head, _, leaf = path.partition(".")
    if not leaf:
        return base_dict.get(head)
    if head == "model":
        model = base_dict["model"]
        if leaf == "preset":
            return model if isinstance(model, str) else model.get("preset")
        return getattr(base.arch, leaf)
    return (base_dict.get(head) or {}).get(leaf)


@dataclass
class Sweep:
    """A validated sweep: the spec, its resolved base workload, and what follows from them."""

    spec: SweepSpec
    base: WorkloadSpec
    source: str
    workload_source: str
    base_dict: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.base_dict = self.base.normalised()

    # -- shape ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def params(self) -> dict[str, ParamSpec]:
        return self.spec.parameters

    @property
    def param_names(self) -> list[str]:
        return list(self.spec.parameters)

    @property
    def backends(self) -> tuple[str, ...]:
        """Every backend a trial may use: the base's, and any a parameter sets."""
        names = {self.base.backend.get("name", "torch")}
        swept = self.params.get("backend.name")
        if swept is not None and swept.values:
            names.update(str(v) for v in swept.values)
        return tuple(sorted(names))

    @property
    def metric(self) -> str:
        return self.spec.metric.name

    @property
    def goal(self) -> str:
        return self.spec.metric.goal  # type: ignore[return-value]

    @property
    def discrete(self) -> bool:
        return all(p.discrete for p in self.params.values())

    def axes(self) -> dict[str, list[Any]]:
        """Ordered values of each discrete axis (the order of the spec): grid neighbours are +-1."""
        return {n: list(p.values) for n, p in self.params.items() if p.discrete}

    def grid_size(self) -> int | None:
        if not self.discrete:
            return None
        return math.prod(len(p.values) for p in self.params.values())

    def grid_points(self) -> list[dict[str, Any]]:
        axes = self.axes()
        names = list(axes)
        return [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]

    def planned_trials(self) -> int:
        """How many trials the sweep holds when it is done (budget.trials caps it)."""
        n = self.spec.budget.trials
        size = self.grid_size()
        if self.spec.method == "grid" or n is None:
            assert size is not None  # validated: only discrete spaces may omit budget.trials
            return min(size, n) if n else size
        return min(n, size) if size is not None else n

    # -- trials -----------------------------------------------------------------------------

    def trial_key(self, params: dict[str, Any]) -> str:
        """A trial is identified by its parameter assignment (canonical JSON)."""
        return canonical({k: params[k] for k in sorted(params)})

    def trial_label(self, params: dict[str, Any]) -> str:
        return ",".join(f"{k}={v}" for k, v in params.items())

    def workload_for(self, params: dict[str, Any]) -> dict[str, Any]:
        """The trial's workload mapping: the base with each parameter set (validate with parse_spec)."""
        w = json.loads(json.dumps(self.base_dict))
        for path, value in params.items():
            set_path(w, path, value)
        w["name"] = safe_name(f"{self.name}:{self.trial_label(params)}")
        w["description"] = f"sweep {self.name} trial ({self.trial_label(params)})"
        return w

    def default_params(self) -> tuple[dict[str, Any] | None, str | None]:
        """The base workload's own setting of every parameter (`default:` overrides), or a note."""
        out: dict[str, Any] = {}
        for name in self.param_names:
            if name in self.spec.default:
                out[name] = self.spec.default[name]
                continue
            v = get_path(self.base, self.base_dict, name)
            if isinstance(v, _Ambiguous):
                return None, v.why
            out[name] = v
        return out, None

    # -- identity ---------------------------------------------------------------------------

    def normalised(self) -> dict[str, Any]:
        """What decides the sweep's measurements; the budget is left out so raising it continues
        the same sweep."""
        base = dict(self.base_dict)
        base.pop("name", None)
        base.pop("description", None)
        return {
            "name": self.name,
            "method": self.spec.method,
            "metric": {"name": self.metric, "goal": self.goal},
            "parameters": {n: p.normalised() for n, p in self.params.items()},
            "constraints": dict(sorted(self.spec.constraints.items())),
            "seed": self.spec.seed,
            "default": dict(sorted(self.spec.default.items())),
            "workload": base,
        }

    def spec_hash(self) -> str:
        return hashlib.sha256(canonical(self.normalised()).encode()).hexdigest()[:16]

    def sweep_id(self, hardware_id: str) -> str:
        """Name + hash of the normalised spec and the hardware: the same sweep on another machine is
        another sweep (so `compare` can set them side by side and resume never mixes them)."""
        h = hashlib.sha256(f"{self.spec_hash()}|{hardware_id}".encode()).hexdigest()[:10]
        return f"{self.name}-{h}"

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this Sweep without the files (stored with the sweep)."""
        return {**self.spec.model_dump(mode="json"), "workload": self.base_dict,
                "_source": self.source, "_workload_source": self.workload_source}


# --------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------


def _find_workload(ref: str, sweep_path: Path | None) -> Path | None:
    """Relative workload paths are tried from the current directory, then from the sweep file's
    directory and each of its parents (so `workloads/x.yaml` works from anywhere in a checkout)."""
    p = Path(ref).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    candidates = [Path.cwd() / p]
    if sweep_path is not None:
        d = sweep_path.resolve().parent
        candidates += [d / p, *(q / p for q in d.parents)]
    return next((c for c in candidates if c.is_file()), None)


def _param_problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for path, msg in _problems(exc, SweepSpec):
        parts = path.split(".")
        if msg == "unknown field" and parts[0] == "parameters":
            msg += "; allowed: values, min, max, distribution"
        if msg == "unknown field" and parts[0] in ("metric", "budget"):
            cls = MetricSpec if parts[0] == "metric" else BudgetSpec
            msg += f"; allowed: {', '.join(cls.model_fields)}"
        out.append((path, msg))
    return out


def _spec_problem_text(exc: SpecError) -> str:
    return "; ".join(f"{p}: {m}" if p else m for p, m in exc.problems)


def parse_sweep(data: Any, source: str = "<sweep>", *, sweep_path: Path | None = None,
                check_points: bool = True) -> Sweep:
    """Validate a sweep mapping; every problem found is reported at once (SpecError, exit 2)."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping of fields, got {type(data).__name__}")])
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, _param_problems(exc)) from None

    # The base workload: a path to a workload spec, or an inline mapping.
    if isinstance(spec.workload, dict):
        wdata = {"name": spec.name, **spec.workload}
        wsource = f"{source} (workload)"
    else:
        found = _find_workload(spec.workload, sweep_path)
        if found is None:
            raise SpecError(source, [("workload", f"workload spec {spec.workload!r} not found (looked "
                                                  "in the current directory and above the sweep file)")])
        wdata, wsource = read_yaml(found), str(found)
    base = parse_spec(wdata, wsource, check_device=False)  # its own errors name its own file
    sweep = Sweep(spec=spec, base=base, source=source, workload_source=wsource)

    problems: list[tuple[str, str]] = []
    names = sweep.param_names
    for name in names:
        why = _path_problem(name, base)
        if why:
            problems.append((f"parameters.{name}", why))
    for a in names:
        for b in names:
            if a != b and (b.startswith(a + ".") or {a, b} == {BATCH_SIZE, "batch_sizes"}):
                problems.append((f"parameters.{b}", f"overlaps parameter {a!r}: set each field once"))
    # What each method can use.
    ranged = [n for n, p in sweep.params.items() if not p.discrete]
    if spec.method == "grid" and ranged:
        problems.append(("method", f"grid needs `values` lists; {', '.join(ranged)} "
                                   "give ranges (use method: random or bayes, or list values)"))
    for n, p in sweep.params.items():
        bad = [v for v in (p.values or []) if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:  # a list or mapping value would make the grid's size and labels unbounded
            problems.append((f"parameters.{n}.values", "values must be scalar values (numbers, strings, "
                                                       f"true/false, null), got {str(bad[0])[:80]}"))
        if p.values is not None and len(p.values) > MAX_AXIS_VALUES:
            problems.append((f"parameters.{n}.values", f"{len(p.values):,} values; at most "
                                                       f"{MAX_AXIS_VALUES:,} per parameter"))
    if not problems and spec.method == "grid" and sweep.planned_trials() > max_grid():
        problems.append(("parameters", f"the grid has {sweep.planned_trials():,} points, over the limit of "
                                       f"{max_grid():,} (fewer values, method: random with budget.trials, "
                                       f"or raise {MAX_GRID_ENV})"))
    if spec.method in ("random", "bayes") and ranged and spec.budget.trials is None:
        problems.append(("budget.trials", f"{spec.method} over ranges ({', '.join(ranged)}) needs "
                                          "budget.trials (how many trials to run)"))
    for key in spec.constraints:
        if constraint_target(key) is None:
            allowed = ", ".join(f"max_{m}" for m in METRICS)
            problems.append((f"constraints.{key}", f"unknown constraint; allowed: max_<metric> or "
                                                   f"min_<metric>, e.g. {allowed}"))
    for key in spec.default:
        if key not in sweep.params:
            problems.append((f"default.{key}", f"not a parameter of this sweep; parameters: "
                                               f"{', '.join(names)}"))
    if problems:
        raise SpecError(source, problems)
    if check_points:
        problems = _check_points(sweep)
        if problems:
            raise SpecError(source, problems)
    return sweep


def _precheck_combos(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The first MAX_PRECHECK combinations of the grid, plus one per value of every axis (the other
    axes at their first value), so a bad value on the slowest axis of a large grid is still seen."""
    names = list(axes)
    out = {canonical(c): c for c in (dict(zip(names, t)) for t in
                                     itertools.islice(itertools.product(*axes.values()), MAX_PRECHECK))}
    first = {n: vals[0] for n, vals in axes.items()}
    for n, vals in axes.items():
        for v in vals:
            c = {**first, n: v}
            out.setdefault(canonical(c), c)
    return list(out.values())


def _check_points(sweep: Sweep) -> list[tuple[str, str]]:
    """Validate the workloads the sweep will run, before any trial.

    Fields can depend on each other (phase generate needs new_tokens >= 1), so values are judged in
    combination: every combination of the discrete values is validated (ranged parameters at a
    middle probe), and a value is reported under its parameter's name only when no combination can
    use it. Ranged parameters' probe values are valid when some discrete combination takes them.
    Combinations that fail although each value works elsewhere are reported as combinations."""
    axes = sweep.axes()
    names = list(axes)
    combos = _precheck_combos(axes)
    ranged = {n: p for n, p in sweep.params.items() if not p.discrete}
    fixed = {n: p.probe_values()[len(p.probe_values()) // 2] for n, p in ranged.items()}

    def error(params: dict[str, Any]) -> SpecError | None:
        try:
            parse_spec(sweep.workload_for(params), check_device=False)
        except SpecError as exc:
            return exc
        return None

    problems: list[tuple[str, str]] = []

    def value_problem(name: str, v: Any, exc: SpecError) -> None:
        p = sweep.params[name]
        hint = ""
        if not p.discrete and not p.is_int and "integer" in _spec_problem_text(exc):
            hint = " (an integer field: use distribution int_uniform or int_log_uniform)"
        problems.append((f"parameters.{name}", f"value {v!r} gives an invalid workload: "
                                               f"{_spec_problem_text(exc)}{hint}"))

    for name, p in ranged.items():
        for v in p.probe_values():
            first = None
            for c in combos:  # stop at the first combination that takes v
                e = error({**c, **fixed, name: v})
                if e is None:
                    break
                first = first or e
            else:
                value_problem(name, v, first)
    if problems:
        return problems
    failed = {i: e for i, c in enumerate(combos) if (e := error({**c, **fixed})) is not None}
    if not failed:
        return []
    for name in names:  # values that fail in every combination they appear in
        for v in axes[name]:
            mine = [i for i, c in enumerate(combos) if c[name] == v]
            if mine and all(i in failed for i in mine):
                value_problem(name, v, failed[mine[0]])
    if problems:
        return problems
    for n, i in enumerate(sorted(failed)):
        if n == 5:
            problems.append(("parameters", f"... and {len(failed) - 5} more invalid combinations"))
            break
        label = ", ".join(f"{k}={v}" for k, v in {**combos[i], **fixed}.items())
        problems.append(("parameters", f"combination {label} gives an invalid workload: "
                                       f"{_spec_problem_text(failed[i])}"))
    return problems


def load_sweep(path: str | Path, *, check_points: bool = True) -> Sweep:
    """Load and validate a sweep file (the base workload is found relative to it, see above)."""
    path = Path(path)
    return parse_sweep(read_yaml(path), str(path), sweep_path=path, check_points=check_points)


def sweep_from_json(d: dict[str, Any]) -> Sweep:
    """Rebuild a stored sweep (the base workload is stored inline, so no files are needed)."""
    d = dict(d)
    source = d.pop("_source", "<stored sweep>")
    wsource = d.pop("_workload_source", "<stored workload>")
    spec = SweepSpec.model_validate(d)
    base = parse_spec(d["workload"], wsource, check_device=False)
    return Sweep(spec=spec, base=base, source=source, workload_source=wsource)
