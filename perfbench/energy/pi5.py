"""Raspberry Pi 5 board power from the PMIC's ADCs (`vcgencmd pmic_read_adc`).

The PMIC reports current and voltage per rail; power is the sum of V*I over rails that have both
(EXT5V has only a voltage). It is power, not an energy counter, so windows integrate samples.
These are the board's own rails after the PMIC: they miss the 5 V input path, USB peripherals and
conversion losses, so they under-read what a wall meter shows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Callable

from perfbench.energy.core import MeterError
from perfbench.energy.sampling import SampledMeter

PI5_SAMPLE_INTERVAL_S = 0.1  # each vcgencmd call forks and costs ~10 ms of CPU on the Pi itself
PI5_NOTE = ("pi5-pmic: sampled PMIC board rails (sum of V*I); board rails under-read wall power "
            "(no 5 V input path, USB devices or PSU losses)")
_LINE = re.compile(r"^\s*(?P<rail>\S+?)_[AV]\s+(?P<kind>current|volt)\(\d+\)="
                   r"(?P<value>[-+0-9.eE]+)[AV]\s*$")

AdcReader = Callable[[], str]


def parse_pmic_adc(text: str) -> dict[str, dict[str, float]]:
    """{rail: {"current": A, "volt": V}} from pmic_read_adc output; unknown lines are ignored."""
    rails: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            rails.setdefault(m["rail"], {})[m["kind"]] = float(m["value"])
    return rails


def pmic_power_w(text: str) -> float:
    """Board power: sum of V*I over rails with both readings. MeterError if there are none."""
    pairs = [r for r in parse_pmic_adc(text).values() if "current" in r and "volt" in r]
    if not pairs:
        raise MeterError("no rail with both current and volt in pmic_read_adc output")
    return sum(r["current"] * r["volt"] for r in pairs)


def command_reader(cmd: str) -> AdcReader:
    """A reader that runs `cmd pmic_read_adc` and returns its stdout."""

    def read() -> str:
        try:
            p = subprocess.run([cmd, "pmic_read_adc"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MeterError(f"vcgencmd failed: {e}") from None
        if p.returncode != 0:
            raise MeterError(f"vcgencmd pmic_read_adc exited {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    return read


class Pi5PmicMeter(SampledMeter):
    """Samples board power every PI5_SAMPLE_INTERVAL_S and integrates it over the window."""

    method = "pi5-pmic"
    interval_s = PI5_SAMPLE_INTERVAL_S
    note = PI5_NOTE

    def __init__(self, read: AdcReader, **kw):
        super().__init__(**kw)
        self.read = read

    def _power_w(self) -> float:
        return pmic_power_w(self.read())


def open_pi5(vcgencmd: str | AdcReader = "vcgencmd", **kw) -> Pi5PmicMeter | str:
    """A Pi 5 meter, or a short reason. vcgencmd is a command name/path or a callable returning
    pmic_read_adc output (tests feed recorded output this way)."""
    if isinstance(vcgencmd, str):
        path = shutil.which(vcgencmd)
        if path is None:
            return "vcgencmd not found"
        vcgencmd = command_reader(path)
    try:
        pmic_power_w(vcgencmd())
    except MeterError as e:
        return f"vcgencmd pmic_read_adc unusable ({e})"
    return Pi5PmicMeter(vcgencmd, **kw)
