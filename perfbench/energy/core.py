"""Meter, window and reading types shared by every energy method.

A meter is opened once per run; each measured point is one window (start/stop), so the runner
treats every method, and "unavailable", the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class MeterError(Exception):
    """A reading failed mid-run (the meter opened fine); becomes a note, never a crash."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy of one window. joules is None when it could not be measured (note says why)."""

    joules: float | None
    seconds: float
    resolution_j: float | None
    method: str | None
    note: str | None = None


def join_notes(*notes: str | None) -> str | None:
    """Join non-empty notes with '; ', dropping repeats, so caveats from meter and window stack."""
    seen: list[str] = []
    for n in notes:
        if n and n not in seen:
            seen.append(n)
    return "; ".join(seen) or None


def short_window_note(seconds: float, update_s: float) -> str | None:
    """Flag windows shorter than the counter's update period: the delta is then mostly step noise."""
    if seconds >= update_s:
        return None
    return (f"short window ({seconds * 1e3:.3g} ms < ~{update_s * 1e3:g} ms counter update): "
            "energy is coarse")


def checked_joules(joules: float | None) -> tuple[float | None, str | None]:
    """Negative or non-finite energy is a broken counter, not a measurement."""
    if joules is None or (math.isfinite(joules) and joules >= 0):
        return joules, None
    return None, f"energy: discarded an impossible value ({joules!r} J)"


class Meter:
    """Base meter. clock/sleep are injectable so tests can drive time deterministically."""

    method: str | None = None
    note: str | None = None

    def __init__(self, clock: Clock | None = None, sleep: Sleep | None = None):
        self.clock = clock or time.perf_counter
        self.sleep = sleep or time.sleep

    def start(self):
        raise NotImplementedError

    def idle_baseline(self, seconds: float) -> float | None:
        """Average watts over `seconds` of sleeping: what the machine draws doing nothing."""
        if not seconds or seconds <= 0:
            return None
        window = self.start()
        self.sleep(seconds)
        r = window.stop()
        if r.joules is None or r.seconds <= 0:
            return None
        return r.joules / r.seconds

    def close(self) -> None:
        """Release the method's resources (NVML handle, sampler); safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UnavailableMeter(Meter):
    """No energy method (or `off`): windows still time themselves and carry the note."""

    def __init__(self, note: str, **kw):
        super().__init__(**kw)
        self.note = note

    def idle_baseline(self, seconds: float) -> float | None:
        return None  # nothing to measure, so do not spend the seconds

    def start(self) -> _NullWindow:
        return _NullWindow(self)


class _NullWindow:
    def __init__(self, meter: UnavailableMeter):
        self.meter, self.t0 = meter, meter.clock()

    def stop(self) -> EnergyReading:
        return EnergyReading(None, self.meter.clock() - self.t0, None, None, self.meter.note)


class CounterMeter(Meter):
    """A meter over monotonically increasing energy counters (one per source, summed).

    Subclasses set unit_j (joules per count), update_s, resolution_j and implement _read();
    _ranges holds each counter's wrap range (None when it does not wrap).
    """

    unit_j = 1.0
    update_s = 0.0
    resolution_j: float | None = None
    _ranges: Sequence[int | None] = ()
    wrap_name = "counter"

    def _read(self) -> list[int]:
        raise NotImplementedError

    def start(self) -> CounterWindow:
        return CounterWindow(self)


class CounterWindow:
    """Two counter reads, a delta per source with wrap-around, and the caveats of this window."""

    def __init__(self, meter: CounterMeter):
        self.meter, self.error = meter, None
        try:
            self.start_counts: list[int] | None = meter._read()
        except MeterError as e:  # start stays non-raising; stop reports it
            self.start_counts, self.error = None, str(e)
        self.t0 = meter.clock()

    def stop(self) -> EnergyReading:
        m = self.meter
        t1 = m.clock()
        seconds = t1 - self.t0
        try:
            if self.start_counts is None:
                raise MeterError(self.error)
            end = m._read()
        except MeterError as e:
            return EnergyReading(None, seconds, m.resolution_j, m.method, f"energy: read failed ({e})")
        total, wraps = 0, 0
        for s, e, rng in zip(self.start_counts, end, m._ranges):
            d = e - s
            if d < 0 and rng:
                d, wraps = d + rng, wraps + 1
            total += d
        joules, bad = checked_joules(total * m.unit_j)
        wrap_note = f"{m.wrap_name} wrapped {wraps}x (handled)" if wraps else None
        note = join_notes(bad, wrap_note, short_window_note(seconds, m.update_s))
        return EnergyReading(joules, seconds, m.resolution_j, m.method, note)
