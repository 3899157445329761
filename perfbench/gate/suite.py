"""A gate suite (`workloads/suites/*.yaml`): workloads plus a threshold per metric.

    name: tiny-cpu
    workloads:
      - spec: ../tiny-llama-cpu.yaml          # relative to the suite file
        set: {batch_sizes: [1, 2]}            # dotted overrides, validated like `run --set`
    thresholds: {latency_median_s: 5%, tokens_per_s: 5%, peak_memory_bytes: 2%}
    baseline: {branch: main, runs: 5}         # the history compared against
    interleave: {rounds: 50, block: 5, pairs: 6}  # --interleave: rounds per pair of worker processes,
                                              # steps per side per round, fresh process pairs;
                                              # pin (default true): both workers of a pair
                                              # on one CPU (single-threaded workloads);
                                              # hugepages (default true): workers' malloc on
                                              # transparent huge pages
    alpha: 0.01                               # significance level

Every problem is reported with the file, the field and what is allowed (exit 2), before anything
runs or is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfbench.errors import SpecError

_KEYS = ("name", "description", "workloads", "thresholds", "baseline", "interleave", "alpha", "confirm")


@dataclass
class Workload:
    spec_path: Path
    overrides: list[str]
    spec: Any  # WorkloadSpec

    @property
    def name(self) -> str:
        return self.spec.name


#: Interleaving defaults. Fresh worker pairs are what narrow the interval (two processes of the
#: same code differ by about 2% here, more than 50 rounds' own noise): a pair costs a process
#: start (seconds), a round a few steps (milliseconds). Measured: docs/ci.md, figures 1 and 2.
ROUNDS, BLOCK, PAIRS = 50, 5, 6
#: Pin both workers of a pair to one CPU once loaded (single-threaded workloads only).
PIN = True
#: Workers' glibc malloc asks for transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1):
#: on 4 KiB pages about one worker process in ten settled 13% slower for its whole life here
#: (scripts/bench_gate.py --verbose, docs/ci.md); on huge pages none did.
HUGEPAGES = True


@dataclass
class Suite:
    path: Path
    name: str
    workloads: list[Workload]
    thresholds: dict[str, float]
    baseline_branch: str = "main"
    baseline_runs: int = 5
    rounds: int = ROUNDS
    block: int = BLOCK
    pairs: int = PAIRS
    pin: bool = PIN
    alpha: float = 0.01
    confirm: bool = True
    raw: dict = field(default_factory=dict)
    hugepages: bool = HUGEPAGES


def _yaml_value(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def load_suite(path: str | Path, *, check_device: bool = True) -> Suite:
    """Read and validate a suite and every workload it names."""
    from perfbench.validation import read_yaml

    path = Path(path)
    data = read_yaml(path)
    src = str(path)
    if not isinstance(data, dict):
        raise SpecError(src, [("", f"expected a mapping with workloads and thresholds, got {type(data).__name__}")])
    problems: list[tuple[str, str]] = []
    for k in sorted(set(data) - set(_KEYS)):
        problems.append((k, f"unknown field; allowed: {', '.join(_KEYS)}"))
    thresholds = _thresholds(data.get("thresholds"), problems)
    baseline = _mapping(data, "baseline", {"branch": str, "runs": int}, problems)
    interleave = _mapping(data, "interleave", {"rounds": int, "block": int, "pairs": int, "pin": bool,
                                                        "hugepages": bool}, problems)
    alpha = data.get("alpha", 0.01)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        problems.append(("alpha", f"must be a number between 0 and 0.5, got {alpha!r}"))
    confirm = data.get("confirm", True)
    if not isinstance(confirm, bool):
        problems.append(("confirm", f"must be true or false, got {confirm!r}"))
    runs, rounds, block = baseline.get("runs", 5), interleave.get("rounds", ROUNDS), interleave.get("block", BLOCK)
    pairs = interleave.get("pairs", PAIRS)
    if isinstance(runs, int) and runs < 1:
        problems.append(("baseline.runs", f"must be at least 1, got {runs}"))
    if isinstance(rounds, int) and not 8 <= rounds <= 10000:
        problems.append(("interleave.rounds", f"must be from 8 to 10000 (the paired test needs 8 to reach "
                                              f"p < 0.01), got {rounds}"))
    if isinstance(block, int) and not 1 <= block <= 10000:
        problems.append(("interleave.block", f"steps per side per round, from 1 to 10000, got {block}"))
    if isinstance(pairs, int) and not 1 <= pairs <= 100:
        problems.append(("interleave.pairs", f"fresh pairs of worker processes, from 1 to 100, got {pairs}"))
    workloads = _workloads(path, data.get("workloads"), problems, check_device)
    if problems:
        raise SpecError(src, problems)
    name = data.get("name") or path.stem
    return Suite(path, str(name), workloads, thresholds, baseline.get("branch", "main"), runs, rounds,
                 block, pairs, bool(interleave.get("pin", PIN)), float(alpha), confirm, data,
                 bool(interleave.get("hugepages", HUGEPAGES)))


def _thresholds(raw: Any, problems: list) -> dict[str, float]:
    from perfbench.cli.compare import parse_pct
    from perfbench.errors import InputError
    from perfbench.schema import FIELDS

    allowed = ", ".join(n for n, f in FIELDS.items() if f.is_metric)
    if raw is None:
        return {"latency_median_s": 0.05}
    if not isinstance(raw, dict) or not raw:
        problems.append(("thresholds", f"expected a mapping of metric: percentage (e.g. tokens_per_s: 5%), got {raw!r}"))
        return {}
    out = {}
    for metric, value in raw.items():
        f = FIELDS.get(str(metric))
        if f is None or not f.is_metric:
            problems.append((f"thresholds.{metric}", f"unknown metric; allowed: {allowed}"))
            continue
        try:
            out[str(metric)] = parse_pct(str(value), f"thresholds.{metric}")
        except InputError as exc:
            problems.append((f"thresholds.{metric}", str(exc).split(": ", 1)[-1]))
    return out


def _mapping(data: dict, key: str, types: dict[str, type], problems: list) -> dict:
    raw = data.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append((key, f"expected a mapping with {', '.join(types)}, got {raw!r}"))
        return {}
    for k, v in raw.items():
        if k not in types:
            problems.append((f"{key}.{k}", f"unknown field; allowed: {', '.join(types)}"))
        elif not isinstance(v, types[k]) or (isinstance(v, bool) and types[k] is not bool):
            what = {int: "a whole number", bool: "true or false", str: "text"}[types[k]]
            problems.append((f"{key}.{k}", f"expected {what}, got {v!r}"))
    return raw


def _workloads(path: Path, raw: Any, problems: list, check_device: bool) -> list[Workload]:
    from perfbench.spec import load_spec

    if not isinstance(raw, list) or not raw:
        problems.append(("workloads", "expected a list of workload specs (a path, or {spec: PATH, set: {...}})"))
        return []
    out, names = [], set()
    for i, item in enumerate(raw):
        where = f"workloads[{i}]"
        item = {"spec": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("spec"), str) or set(item) - {"spec", "set"}:
            problems.append((where, f"expected a path or {{spec: PATH, set: {{FIELD: VALUE}}}}, got {item!r}"))
            continue
        sets = item.get("set") or {}
        if not isinstance(sets, dict):
            problems.append((f"{where}.set", f"expected a mapping of dotted field: value, got {sets!r}"))
            continue
        spec_path = (path.parent / item["spec"]).resolve()
        if not spec_path.is_file():
            problems.append((f"{where}.spec", f"no such workload spec: {spec_path}"))
            continue
        overrides = [f"{k}={_yaml_value(v)}" for k, v in sets.items()]
        try:
            spec = load_spec(spec_path, check_device=check_device, overrides=overrides)
        except SpecError as exc:
            problems.extend((f"{where} ({p or exc.source})", m) for p, m in exc.problems)
            continue
        if spec.name in names:
            problems.append((f"{where}.spec", f"workload name {spec.name!r} appears twice; set a distinct name "
                                              "(set: {name: ...})"))
        names.add(spec.name)
        out.append(Workload(spec_path, overrides, spec))
    return out
