"""What machine is this? A fingerprint stored with every result, and the profile it matches.

`hardware_id` (a short hash over the hardware identity only: CPU model, logical cores, memory, GPUs)
is the key that keeps results from different hardware apart. Host name, OS and software versions are
recorded but do not change it.

torch is imported lazily inside `fingerprint()` and is optional: GPUs are read through NVML
(nvidia-ml-py) first, and through torch.cuda only when NVML is unavailable.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perfbench.errors import InputError
from perfbench.hardware.profile import HardwareProfile, list_profiles, load_profile

#: The profile offered when nothing matches on x86-64 (never returned as a match).
FALLBACK_X86_64 = "generic-x86-64"

_X86_64 = {"x86_64", "amd64", "x64", "i686-64"}

#: Arm "CPU part" ids (implementer 0x41) -> core name, for /proc/cpuinfo on Arm Linux.
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4a": "Neoverse-E1", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720",
    "0xd82": "Cortex-X4", "0xd84": "Neoverse-V3", "0xd8e": "Neoverse-N3",
}

_GIB = 1024**3


# --------------------------------------------------------------------------------------------------
# CPU and memory
# --------------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _cpuinfo_fields(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out.append((k.strip(), v.strip()))
    return out


def _lscpu_model_names() -> list[str]:
    try:
        res = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5,
                             env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return []
    names = []
    for k, v in _cpuinfo_fields(res.stdout):
        if k == "Model name" and v and v != "-" and v not in names:
            names.append(v)
    return names


def parse_cpu_model(cpuinfo: str, device_tree_model: str | None = None,
                    lscpu_names: list[str] | None = None) -> tuple[str, str | None, list[str]]:
    """(cpu_model, board_model, core_types) from /proc/cpuinfo text (pure; tested on samples).

    x86: the "model name" line. Arm: the board (device-tree model, or the Raspberry Pi "Model" line)
    followed by the core names, e.g. "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)"; on Arm servers
    without a device tree just the core names, e.g. "Neoverse-V2". `lscpu_names` is used for the
    core names when the "CPU part" ids are unknown.
    """
    fields = _cpuinfo_fields(cpuinfo)
    is_arm = any(k == "CPU implementer" for k, _ in fields)
    if not is_arm:
        for k, v in fields:
            if k == "model name" and v:
                return v, None, []
    cores: list[str] = []
    implementer = None
    for k, v in fields:
        if k == "CPU implementer":
            implementer = v.lower()
        elif k == "CPU part" and implementer == "0x41":
            name = _ARM_PARTS.get(v.lower())
            if name and name not in cores:
                cores.append(name)
    if not cores and lscpu_names:
        cores = list(lscpu_names)
    board = (device_tree_model or "").strip("\x00\n ") or None
    if board is None:
        board = next((v for k, v in fields if k == "Model" and v), None)
    if board and cores:
        return f"{board} ({', '.join(cores)})", board, cores
    if board:
        return board, board, cores
    if cores:
        return ", ".join(cores), None, cores
    if is_arm:  # 32-bit Arm kernels print "model name: ARMv7 Processor rev 3 (v7l)"
        for k, v in fields:
            if k == "model name" and v:
                return v, None, cores
    return "", None, cores


def _cpu_model() -> tuple[str, str | None, list[str]]:
    text = _read("/proc/cpuinfo") or ""
    dt = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    model, board, cores = parse_cpu_model(text, dt)
    if not cores and "CPU implementer" in text:
        model, board, cores = parse_cpu_model(text, dt, _lscpu_model_names())
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    return model, board, cores


def _memory_total() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        pass
    text = _read("/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def _cores() -> tuple[int | None, int | None]:
    logical = os.cpu_count()
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        logical = psutil.cpu_count(logical=True) or logical
    except Exception:  # noqa: BLE001
        pass
    return physical, logical


# --------------------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------------------


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _gpus_nvml() -> tuple[list[dict], str | None, str | None] | None:
    """(gpus, driver_version, cuda_driver_version) via NVML, or None if NVML is unavailable."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no library: NVMLError_LibraryNotFound etc.
        return None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda_driver = None
        try:
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
            cuda_driver = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:  # noqa: BLE001
            pass
        gpus = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            g: dict[str, Any] = {
                "index": i,
                "name": _text(pynvml.nvmlDeviceGetName(h)),
                "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                "driver": driver,
            }
            try:
                g["uuid"] = _text(pynvml.nvmlDeviceGetUUID(h))
            except Exception:  # noqa: BLE001
                pass
            gpus.append(g)
        return gpus, driver, cuda_driver
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _gpus_torch(torch: Any) -> list[dict]:
    try:
        if not torch.cuda.is_available():
            return []
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            g: dict[str, Any] = {"index": i, "name": props.name,
                                 "memory_total_bytes": int(props.total_memory), "driver": None}
            uuid = getattr(props, "uuid", None)
            if uuid is not None:
                g["uuid"] = f"GPU-{uuid}"
            gpus.append(g)
        return gpus
    except Exception:  # noqa: BLE001
        return []


# --------------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------------


def hardware_id(fp: dict) -> str:
    """sha256[:12] over the hardware identity only: cpu_model, logical cores, memory (GiB, rounded)
    and the sorted (GPU name, GPU memory GiB rounded) pairs. Host name and software do not count."""
    mem = fp.get("memory_total_bytes")
    ident = {
        "cpu_model": fp.get("cpu_model"),
        "cpu_cores_logical": fp.get("cpu_cores_logical"),
        "memory_gib": round(mem / _GIB) if mem else None,
        "gpus": sorted([str(g.get("name")), round((g.get("memory_total_bytes") or 0) / _GIB)]
                       for g in fp.get("gpus", [])),
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def fingerprint() -> dict:
    """Describe this machine: hardware identity, GPUs, driver and software versions, hardware_id."""
    cpu_model, board, core_types = _cpu_model()
    physical, logical = _cores()
    fp: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "os": platform.system(),
        "platform": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": cpu_model,
        "board_model": board,
        "cpu_core_types": core_types,
        "cpu_cores_physical": physical,
        "cpu_cores_logical": logical,
        "memory_total_bytes": _memory_total(),
        "gpus": [],
        "gpu_count": 0,
        "gpu_source": None,
        "driver_version": None,
        "cuda_driver_version": None,
        "cuda_version": None,
        "torch_version": None,
        "python_version": platform.python_version(),
    }
    nvml = _gpus_nvml()
    if nvml is not None:
        fp["gpus"], fp["driver_version"], fp["cuda_driver_version"] = nvml
        fp["gpu_source"] = "nvml"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        fp["torch_version"] = str(torch.__version__)
        fp["cuda_version"] = torch.version.cuda
        if not fp["gpus"]:
            gpus = _gpus_torch(torch)
            if gpus:
                fp["gpus"], fp["gpu_source"] = gpus, "torch"
    fp["gpu_count"] = len(fp["gpus"])
    fp["hardware_id"] = hardware_id(fp)
    return fp


# --------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------


def matching_profiles(fp: dict, profiles: Iterable[HardwareProfile] | None = None,
                      gpu_index: int = 0) -> list[HardwareProfile]:
    """Every profile whose match rules fit `fp`: GPU profiles on the name of GPU `gpu_index` when
    the machine has GPUs, otherwise CPU profiles on cpu_model (and logical cores where set)."""
    profiles = list(profiles) if profiles is not None else list_profiles()
    gpus = fp.get("gpus") or []
    if gpus:
        if not 0 <= gpu_index < len(gpus):
            return []
        name = str(gpus[gpu_index].get("name", ""))
        return [p for p in profiles if p.kind == "gpu" and p.match.gpu_matches(name)]
    cpu = str(fp.get("cpu_model") or "")
    cores = fp.get("cpu_cores_logical")
    return [p for p in profiles if p.kind == "cpu" and p.match.cpu_matches(cpu, cores)]


def match_profile(fp: dict, profiles: Iterable[HardwareProfile] | None = None,
                  gpu_index: int = 0) -> HardwareProfile | None:
    """The profile for this machine, or None when no profile matches (the fallback is not a match:
    see `fallback_profile`). If several match, the first by name wins; shipped profiles are tested
    to match unambiguously."""
    found = matching_profiles(fp, profiles, gpu_index)
    return found[0] if found else None


def fallback_profile(fp: dict, profiles: Iterable[HardwareProfile] | None = None
                     ) -> HardwareProfile | None:
    """The conservative CPU fallback: generic-x86-64 on x86-64 machines, else None."""
    if str(fp.get("arch", "")).lower() not in _X86_64:
        return None
    if profiles is not None:
        return next((p for p in profiles if p.name == FALLBACK_X86_64), None)
    try:
        return load_profile(FALLBACK_X86_64)
    except InputError:  # a custom profile directory without it
        return None
