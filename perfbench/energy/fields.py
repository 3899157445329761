"""Turn a window's reading into the result-schema energy fields, with sanity checks."""

from __future__ import annotations

import math

from perfbench.energy.core import EnergyReading, Meter, checked_joules, join_notes

PLAUSIBLE_MAX_W = 100_000.0  # a full 8-GPU node draws ~10 kW; far above that is a broken counter


def _watts(value: float | None) -> float | None:
    ok = value is not None and math.isfinite(value) and 0 <= value <= PLAUSIBLE_MAX_W
    return value if ok else None


def energy_fields(reading: EnergyReading | None, meter: Meter, tokens: int | None,
                  idle_w: float | None) -> dict:
    """energy_j, power_avg_w, energy_per_token_j, energy_method, energy_resolution_j,
    idle_power_w, energy_note. energy_note is never empty when energy_j is None."""
    joules, bad = checked_joules(reading.joules) if reading else (None, None)
    seconds = reading.seconds if reading else 0.0
    watts = joules / seconds if joules is not None and seconds > 0 else None
    if watts is not None and _watts(watts) is None:
        bad, joules, watts = f"energy: discarded an implausible {watts:.3g} W average", None, None
    idle = _watts(idle_w)
    notes = [meter.note, reading.note if reading else None, bad]
    if idle_w is not None and idle is None:
        notes.append(f"energy: discarded an impossible idle baseline ({idle_w!r} W)")
    if joules is None and not join_notes(*notes):
        notes.append("energy: no measured window" if reading is None else "energy: not measured")
    return {
        "energy_j": joules,
        "power_avg_w": watts,
        "energy_per_token_j": joules / tokens if joules is not None and tokens else None,
        "energy_method": reading.method if reading else meter.method,
        "energy_resolution_j": reading.resolution_j if reading else None,
        "idle_power_w": idle,
        "energy_note": join_notes(*notes),
    }
