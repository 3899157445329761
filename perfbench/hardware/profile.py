"""Hardware profiles: datasheet ceilings for the roofline model, one YAML file per machine kind.

Profiles live in `hw_profiles/<name>.yaml` (or the directory named by `PERFBENCH_HW_PROFILES`). Every
number carries a `source` note saying where it comes from (datasheet, or how it was derived), and
FLOP/s figures are DENSE: vendors' "with sparsity" figures are halved.

Torch-free on purpose: the roofline and the CLI read profiles without paying for torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import perfbench
from perfbench.errors import InputError, SpecError
from perfbench.validation import problems as validation_problems
from perfbench.validation import read_yaml

#: Environment variable naming a directory of profiles that replaces the shipped one.
PROFILES_ENV = "PERFBENCH_HW_PROFILES"

#: Dtype keys a profile may give a dense peak for, in display order.
DTYPES: tuple[str, ...] = ("float32", "tf32", "float16", "bfloat16", "float8", "int8", "int4")

#: Names accepted by `peak_flops` for each dtype key. "float32" is the plain FP32 (CUDA core / SIMD)
#: figure, never the TF32 tensor-core figure: ask for "tf32" explicitly to get that.
DTYPE_ALIASES: dict[str, str] = {
    "float32": "float32", "fp32": "float32", "f32": "float32", "float": "float32",
    "torch.float32": "float32", "torch.float": "float32",
    "tf32": "tf32", "tensorfloat32": "tf32",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
    "torch.float16": "float16", "torch.half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
    "float8": "float8", "fp8": "float8", "float8_e4m3fn": "float8", "float8_e5m2": "float8",
    "torch.float8_e4m3fn": "float8", "torch.float8_e5m2": "float8", "e4m3": "float8", "e5m2": "float8",
    "int8": "int8", "torch.int8": "int8", "i8": "int8",
    "int4": "int4", "i4": "int4",
}

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class UnknownDtypeError(InputError, KeyError):
    """A profile has no peak for the requested dtype. Also a KeyError, for callers that look up."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveNumber = Annotated[float, Field(gt=0, strict=True)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
# Not only whitespace: every number must say where it comes from.
Source = Annotated[str, Field(pattern=r"\S", description="text saying where the number comes from (datasheet, derivation)")]


class Sourced(_Strict):
    """A positive number and where it comes from (datasheet, or how it was derived)."""

    value: PositiveNumber
    source: Source


class SourcedInt(_Strict):
    """A positive integer (bytes, cores, lanes) and where it comes from."""

    value: PositiveInt
    source: Source


class DenseFlops(_Strict):
    """Dense peak FLOP/s (OP/s for integer types) per dtype. float32 is required."""

    float32: Sourced
    tf32: Sourced | None = None
    float16: Sourced | None = None
    bfloat16: Sourced | None = None
    float8: Sourced | None = None
    int8: Sourced | None = None
    int4: Sourced | None = None


class Memory(_Strict):
    """Main memory of the device: HBM for GPUs, DRAM for CPUs."""

    type: str = Field(min_length=1, description="e.g. HBM3, LPDDR5X, DDR4-3200")
    bandwidth: Sourced = Field(description="peak bytes/s")
    capacity: SourcedInt = Field(description="bytes")


class Host(_Strict):
    """The host CPU (for a CPU profile: the CPU itself). `cores` is null when the host varies."""

    cpu_model: str = Field(min_length=1)
    cores: SourcedInt | None = None
    memory: Memory | None = Field(default=None, description="host DRAM, where it is fixed (GH200)")


class Link(_Strict):
    """Host-device link. `bandwidth` is peak bytes/s per direction."""

    type: Literal["pcie", "nvlink-c2c", "none"]
    pcie_gen: SourcedInt | None = None
    pcie_lanes: SourcedInt | None = None
    bandwidth: Sourced | None = Field(default=None, description="bytes/s per direction")

    @model_validator(mode="after")
    def _fields_for_type(self) -> "Link":
        if self.type == "pcie":
            missing = [f for f in ("pcie_gen", "pcie_lanes", "bandwidth") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"type 'pcie' needs {', '.join(missing)}")
        elif self.type == "nvlink-c2c":
            if self.bandwidth is None:
                raise ValueError("type 'nvlink-c2c' needs bandwidth (bytes/s per direction)")
            extra = [f for f in ("pcie_gen", "pcie_lanes") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"type 'nvlink-c2c' takes no {', '.join(extra)}")
        else:
            extra = [f for f in ("pcie_gen", "pcie_lanes", "bandwidth") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"type 'none' takes no {', '.join(extra)}")
        return self


class Match(_Strict):
    """How detection recognises this hardware. Regexes are searched case-insensitively."""

    gpu_name: str | None = Field(default=None, description="regex on the GPU name (NVML)")
    cpu_model: str | None = Field(default=None, description="regex on the fingerprint's cpu_model")
    cpu_cores_logical: list[PositiveInt] | None = Field(
        default=None, description="if set, the logical core count must be one of these")

    @field_validator("gpu_name", "cpu_model")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("empty regex would match everything; leave the field out instead")
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    def gpu_matches(self, gpu_name: str) -> bool:
        return self.gpu_name is not None and re.search(self.gpu_name, gpu_name, re.IGNORECASE) is not None

    def cpu_matches(self, cpu_model: str, cores_logical: int | None) -> bool:
        if self.cpu_model is None or re.search(self.cpu_model, cpu_model, re.IGNORECASE) is None:
            return False
        return self.cpu_cores_logical is None or cores_logical in self.cpu_cores_logical


class HardwareProfile(_Strict):
    """One kind of machine: its dense compute peaks, memory, host, link and power, with sources."""

    name: str = Field(pattern=_NAME_PATTERN, description="same as the file name without .yaml")
    description: str = Field(min_length=1)
    kind: Literal["gpu", "cpu"]
    dense_flops: DenseFlops
    memory: Memory
    host: Host
    link: Link
    tdp_watts: Sourced | None = None
    match: Match = Field(default_factory=Match)
    notes: str | None = None

    # -- convenience API used by the roofline, runner and CLI ------------------------------------

    @property
    def dtypes(self) -> list[str]:
        """Dtype keys this profile has a peak for, in DTYPES order."""
        return [d for d in DTYPES if getattr(self.dense_flops, d) is not None]

    def has_dtype(self, dtype: str) -> bool:
        key = DTYPE_ALIASES.get(str(dtype).strip().lower())
        return key is not None and getattr(self.dense_flops, key) is not None

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s (OP/s for int8/int4) for `dtype`.

        Accepts the keys in DTYPES and common aliases ("bf16", "fp16", "torch.bfloat16", ...).
        "float32" is the plain FP32 figure, never TF32. Raises UnknownDtypeError (an InputError and
        a KeyError) naming the available dtypes when the profile has no figure for it.
        """
        key = DTYPE_ALIASES.get(str(dtype).strip().lower())
        if key is None:
            raise UnknownDtypeError(
                f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        entry = getattr(self.dense_flops, key)
        if entry is None:
            raise UnknownDtypeError(
                f"hardware profile {self.name!r} has no {key} peak; available: {', '.join(self.dtypes)}")
        return float(entry.value)

    def ridge_point(self, dtype: str) -> float:
        """Arithmetic intensity (FLOP/byte) where the roofline turns from memory- to compute-bound."""
        return self.peak_flops(dtype) / self.memory_bandwidth

    @property
    def memory_bandwidth(self) -> float:
        """Peak device memory bandwidth in bytes/s."""
        return float(self.memory.bandwidth.value)

    @property
    def memory_capacity(self) -> int:
        """Device memory capacity in bytes."""
        return int(self.memory.capacity.value)

    @property
    def link_bandwidth(self) -> float | None:
        """Host-device link bandwidth in bytes/s per direction, or None when there is no link."""
        return float(self.link.bandwidth.value) if self.link.bandwidth is not None else None


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def profiles_dir() -> Path:
    """`$PERFBENCH_HW_PROFILES` if set, else `<repo root>/hw_profiles`."""
    env = os.environ.get(PROFILES_ENV)
    if env:
        return Path(env).expanduser()
    return Path(perfbench.__file__).resolve().parents[1] / "hw_profiles"


def _profile_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        raise InputError(f"hardware profile directory {directory} does not exist "
                         f"(set {PROFILES_ENV} to a directory of <name>.yaml files)")
    files: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        if p.suffix in (".yaml", ".yml") and p.is_file():
            if p.stem in files:
                raise InputError(f"two hardware profiles named {p.stem!r}: {files[p.stem]} and {p}")
            files[p.stem] = p
    return files


def profile_names(directory: Path | None = None) -> list[str]:
    """Names of the profiles in `directory` (default `profiles_dir()`), from file names only."""
    return sorted(_profile_files(directory or profiles_dir()))


def _consistency(p: HardwareProfile) -> list[tuple[str, str]]:
    """Cross-field rules, reported with the field path they concern."""
    problems = []
    if p.kind == "gpu":
        if p.link.type == "none":
            problems.append(("link.type", "a gpu profile needs a host link: pcie or nvlink-c2c"))
        if p.match.cpu_model is not None or p.match.cpu_cores_logical is not None:
            problems.append(("match", "a gpu profile is matched on gpu_name only; drop cpu_model/"
                                      "cpu_cores_logical"))
    else:
        if p.link.type != "none":
            problems.append(("link.type", "a cpu profile has no host-device link: use type: none"))
        if p.match.gpu_name is not None:
            problems.append(("match.gpu_name", "a cpu profile is matched on cpu_model; drop gpu_name"))
        if p.match.cpu_cores_logical is not None and p.match.cpu_model is None:
            problems.append(("match.cpu_cores_logical", "only used together with match.cpu_model"))
    return problems


def parse_profile(data: Any, source: str = "<profile>", *, expected_name: str | None = None
                  ) -> HardwareProfile:
    """Validate a profile mapping; every problem is reported at once as a SpecError."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping of profile fields, got {type(data).__name__}")])
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, validation_problems(exc, HardwareProfile)) from None
    problems = _consistency(profile)
    if expected_name is not None and profile.name != expected_name:
        problems.insert(0, ("name", f"must match the file name: expected {expected_name!r}, "
                                    f"got {profile.name!r}"))
    if problems:
        raise SpecError(source, problems)
    return profile


def _load_file(path: Path) -> HardwareProfile:
    return parse_profile(read_yaml(path), str(path), expected_name=path.stem)


def _looks_like_path(s: str) -> bool:
    return "/" in s or os.sep in s or s.endswith((".yaml", ".yml"))


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a profile by name (from `profiles_dir()`) or from a YAML file path.

    Raises SpecError for an invalid file (file, dotted field path, what is allowed) and InputError
    for an unknown name (listing the known names) or a missing file.
    """
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise InputError(f"hardware profile file {path} not found")
        return _load_file(path)
    name = str(name_or_path).strip().lower()
    directory = profiles_dir()
    files = _profile_files(directory)
    if name not in files:
        known = ", ".join(sorted(files)) or "(none)"
        raise InputError(f"unknown hardware profile {name!r}; known: {known} (in {directory})")
    return _load_file(files[name])


def list_profiles(directory: Path | None = None) -> list[HardwareProfile]:
    """Every profile in `directory` (default `profiles_dir()`), sorted by name. A bad file raises."""
    files = _profile_files(directory or profiles_dir())
    return [_load_file(files[n]) for n in sorted(files)]
