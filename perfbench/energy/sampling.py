"""Energy from sampled power: a background thread samples watts, the window integrates them.

Used where there is no energy counter (Pi 5 PMIC, NVML power on pre-Volta GPUs). The result is an
estimate whose accuracy depends on the sampling interval, so every reading says it was sampled.
"""

from __future__ import annotations

import threading
from typing import Sequence

from perfbench.energy.core import EnergyReading, Meter, MeterError, checked_joules, join_notes


def integrate(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Trapezoid over (time, watts) samples inside [t0, t1]; the edges hold the nearest sample.

    Returns None with no samples. A lone sample (window shorter than one interval) is held flat.
    """
    pts = [(t, p) for t, p in samples if t0 <= t <= t1] or list(samples[:1])
    if not pts:
        return None
    pts = [(t0, pts[0][1]), *pts, (t1, pts[-1][1])]
    return sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in zip(pts, pts[1:]))


class SampledMeter(Meter):
    """Subclasses implement _power_w() (raising MeterError on failure) and set interval_s."""

    interval_s = 0.1

    def _power_w(self) -> float:
        raise NotImplementedError

    def start(self) -> SampledWindow:
        return SampledWindow(self)


class SampledWindow:
    """Starts a daemon sampler thread; stop() joins it and integrates (start stays cheap)."""

    def __init__(self, meter: SampledMeter):
        self.meter = meter
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._done = threading.Event()
        self.t0 = meter.clock()
        self._thread = threading.Thread(target=self._run, name="perfbench-energy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        m = self.meter
        while True:  # sample first, so even an instant window gets one sample
            a = m.clock()
            try:
                p = m._power_w()
            except MeterError as e:
                self.errors.append(str(e))
            else:
                self.samples.append(((a + m.clock()) / 2, p))
            if self._done.wait(m.interval_s):
                return

    def stop(self) -> EnergyReading:
        m = self.meter
        t1 = m.clock()
        self._done.set()
        self._thread.join()
        seconds = t1 - self.t0
        joules, bad = checked_joules(integrate(self.samples, self.t0, t1))
        n, failed = len(self.samples), len(self.errors)
        notes = [bad, f"sampled power: {n} samples every {m.interval_s * 1e3:g} ms (trapezoid)"]
        if failed:
            notes.append(f"{failed} of {n + failed} samples failed ({self.errors[-1]})")
        if not n:
            notes.insert(0, "energy: no power samples")
        res = joules / seconds * m.interval_s if joules is not None and seconds > 0 else None
        return EnergyReading(joules, seconds, res, m.method, join_notes(*notes))
