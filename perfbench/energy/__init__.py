"""Energy per measured window: NVML counters, RAPL, or Raspberry Pi 5 PMIC sampling.

    meter = open_meter(mode, device)        # never raises for a method the machine lacks
    idle_w = meter.idle_baseline(2.0)
    window = meter.start(); ...; reading = window.stop()
    row.update(energy_fields(reading, meter, tokens, idle_w))
    meter.close()
"""

from __future__ import annotations

from perfbench.energy.choose import ENERGY_MODES, open_meter
from perfbench.energy.core import EnergyReading, Meter, UnavailableMeter
from perfbench.energy.fields import energy_fields

__all__ = ["ENERGY_MODES", "EnergyReading", "Meter", "UnavailableMeter", "energy_fields",
           "open_meter"]
