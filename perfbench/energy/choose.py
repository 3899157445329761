"""open_meter: the one entry point the runner calls; picks a method and never raises for one
that this machine lacks (it returns an unavailable meter whose note says why)."""

from __future__ import annotations

from pathlib import Path

from perfbench.energy.core import Clock, Meter, Sleep, UnavailableMeter, join_notes
from perfbench.energy.nvml import open_nvml
from perfbench.energy.pi5 import AdcReader, open_pi5
from perfbench.energy.rapl import DEFAULT_POWERCAP, open_rapl

ENERGY_MODES = ("auto", "off", "nvml", "rapl", "pi5-pmic")


def open_meter(mode: str, device: str, *, powercap_root: str | Path = DEFAULT_POWERCAP,
               vcgencmd: str | AdcReader = "vcgencmd", clock: Clock | None = None,
               sleep: Sleep | None = None) -> Meter:
    """A meter for `mode` on `device` ("cpu", "cuda", "cuda:N"). Unknown modes raise ValueError
    (a spec bug); a missing method gives an unavailable meter with a note."""
    if mode not in ENERGY_MODES:
        raise ValueError(f"energy mode must be one of {', '.join(ENERGY_MODES)}, not {mode!r}")
    kw = {"clock": clock, "sleep": sleep}
    if mode == "off":
        return UnavailableMeter("energy: off", **kw)
    openers = {
        "nvml": lambda: open_nvml(device, **kw),
        "rapl": lambda: open_rapl(powercap_root, **kw),
        "pi5-pmic": lambda: open_pi5(vcgencmd, **kw),
    }
    if mode != "auto":
        got = openers[mode]()
        return got if isinstance(got, Meter) else UnavailableMeter(f"energy: unavailable, {got}", **kw)
    reasons = []
    for name, opener in openers.items():
        if name == "nvml" and not device.startswith("cuda"):
            reasons.append(f"NVML not tried (device is {device})")
            continue
        got = opener()
        if isinstance(got, Meter):
            if name != "nvml" and device.startswith("cuda"):  # a CUDA run without NVML: say why
                got.note = join_notes(f"energy: no GPU energy ({'; '.join(reasons)})", got.note)
            return got
        reasons.append(got)
    return UnavailableMeter(f"energy: unavailable ({'; '.join(reasons)})", **kw)
