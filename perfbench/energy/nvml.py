"""GPU energy from NVML: the total-energy counter where the GPU has one, sampled power otherwise.

nvmlDeviceGetTotalEnergyConsumption (mJ since driver load, Volta and newer) is the real thing: a
counter difference over the window, summed over the GPUs in use. Older GPUs only report power, so
that path samples watts and says so ("nvml-power-sampled"); it is never reported as a counter.
pynvml is imported lazily so importing perfbench never needs the NVIDIA driver.
"""

from __future__ import annotations

import os

from perfbench.energy.core import CounterMeter, MeterError
from perfbench.energy.sampling import SampledMeter

# The driver refreshes the energy counter in steps. NVML does not document the period; we
# assume ~100 ms (what recent GPUs show in practice), so a shorter window is flagged as coarse.
NVML_COUNTER_UPDATE_S = 0.1
NVML_SAMPLE_INTERVAL_S = 0.05  # power calls are cheap (~tens of us); 50 ms follows the driver


def _handle(nv, token: str):
    """One CUDA_VISIBLE_DEVICES entry -> NVML handle (whole GPU), or None where CUDA would stop."""
    if token.isdigit():
        i = int(token)
        return nv.nvmlDeviceGetHandleByIndex(i) if i < nv.nvmlDeviceGetCount() else None
    if token.startswith("MIG-"):  # energy is only counted per whole GPU: use the parent
        return nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nv.nvmlDeviceGetHandleByUUID(token))
    if token.startswith("GPU-"):  # CUDA accepts a unique UUID prefix; NVML wants it whole
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            if str(nv.nvmlDeviceGetUUID(h)).startswith(token):
                return h
    return None


def visible_handles(nv, device: str) -> list:
    """Handles of the GPUs in use: CUDA_VISIBLE_DEVICES (or all), narrowed by a 'cuda:N' device.

    Index entries follow NVML's PCI order, which is CUDA's only with CUDA_DEVICE_ORDER=PCI_BUS_ID;
    on a box of identical GPUs summed together the order does not matter.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    tokens = env.split(",") if env is not None else [str(i) for i in range(nv.nvmlDeviceGetCount())]
    handles, uuids = [], set()
    for tok in (t.strip() for t in tokens):
        h = _handle(nv, tok) if tok else None
        if h is None:
            break  # CUDA ignores everything after the first invalid entry
        uuid = nv.nvmlDeviceGetUUID(h)
        if uuid not in uuids:  # two MIG slices of one GPU: count the GPU once
            uuids.add(uuid)
            handles.append(h)
    _, _, idx = device.partition(":")
    if idx.isdigit():
        handles = handles[int(idx):int(idx) + 1]
    return handles


def _supports(fn, handles, errors) -> bool:
    try:
        for h in handles:
            fn(h)
        return True
    except errors:
        return False


class NvmlCounterMeter(CounterMeter):
    """Sum over GPUs of total-energy counter deltas (mJ)."""

    method = "nvml-counter"
    unit_j = 1e-3
    update_s = NVML_COUNTER_UPDATE_S
    resolution_j = 1e-3
    wrap_name = "NVML counter"

    def __init__(self, nv, handles: list, **kw):
        super().__init__(**kw)
        self.nv, self.handles = nv, handles
        self._ranges = [None] * len(handles)  # 64-bit mJ: does not wrap in practice
        self.note = f"nvml: energy counter summed over {len(handles)} GPUs" if len(handles) > 1 else None

    def _read(self) -> list[int]:
        try:
            return [self.nv.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles]
        except self.nv.NVMLError as e:
            raise MeterError(f"NVML energy read failed: {e}") from None

    def close(self) -> None:
        _shutdown(self)


class NvmlPowerMeter(SampledMeter):
    """Pre-Volta fallback: integrate sampled power. An estimate, labelled as sampled."""

    method = "nvml-power-sampled"
    interval_s = NVML_SAMPLE_INTERVAL_S

    def __init__(self, nv, handles: list, **kw):
        super().__init__(**kw)
        self.nv, self.handles = nv, handles
        self.note = ("nvml: no energy counter on this GPU; energy integrates sampled power "
                     "(an estimate, not a counter)")

    def _power_w(self) -> float:
        try:
            return sum(self.nv.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1e3
        except self.nv.NVMLError as e:
            raise MeterError(f"NVML power read failed: {e}") from None

    def close(self) -> None:
        _shutdown(self)


def _shutdown(meter) -> None:
    if getattr(meter, "nv", None) is not None:
        nv, meter.nv = meter.nv, None
        try:
            nv.nvmlShutdown()
        except nv.NVMLError:
            pass


def open_nvml(device: str, **kw) -> NvmlCounterMeter | NvmlPowerMeter | str:
    """An NVML meter for the GPUs in use, or a short reason string why NVML is not usable."""
    try:
        import pynvml as nv
    except ImportError:
        return "NVML unavailable (nvidia-ml-py not installed)"
    try:
        nv.nvmlInit()
    except nv.NVMLError as e:
        return f"NVML unavailable ({e})"
    try:
        handles = visible_handles(nv, device)
    except nv.NVMLError as e:
        nv.nvmlShutdown()
        return f"NVML unavailable ({e})"
    if not handles:
        nv.nvmlShutdown()
        return "NVML sees no GPU in use (check CUDA_VISIBLE_DEVICES)"
    if _supports(nv.nvmlDeviceGetTotalEnergyConsumption, handles, nv.NVMLError):
        return NvmlCounterMeter(nv, handles, **kw)
    if _supports(nv.nvmlDeviceGetPowerUsage, handles, nv.NVMLError):
        return NvmlPowerMeter(nv, handles, **kw)
    nv.nvmlShutdown()
    return "NVML reports neither an energy counter nor power for these GPUs"
