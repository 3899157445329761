"""CPU package energy from RAPL counters in /sys/class/powercap.

Only top-level package zones (intel-rapl:N) are summed: their dram/core subzones are already
inside the package (or a separate domain), and psys covers the whole platform, so adding either
would double count. intel-rapl-mmio:N mirrors a package through another interface; also skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

from perfbench.energy.core import CounterMeter, MeterError

DEFAULT_POWERCAP = "/sys/class/powercap"
RAPL_UPDATE_S = 0.001  # the RAPL MSRs update about every 1 ms (976 us on Intel)
NEEDS_ROOT = "RAPL needs root (energy_uj is readable by root only)"  # since CVE-2020-8694
_TOP_ZONE = re.compile(r"^intel-rapl:(\d+)$")


def read_counter(path: Path) -> int:
    """One sysfs integer (energy_uj or max_energy_range_uj). Tests monkeypatch this."""
    return int(Path(path).read_text().strip())


def package_zones(root: Path) -> list[Path]:
    """intel-rapl:N folders whose name is package-* (no name file: assume a package)."""
    zones = []
    for p in root.glob("intel-rapl:*"):
        m = _TOP_ZONE.match(p.name)
        name_file = p / "name"
        name = name_file.read_text().strip() if name_file.exists() else "package"
        if m and name.startswith("package"):
            zones.append((int(m.group(1)), p))
    return [p for _, p in sorted(zones)]


def _wrap_range(zone: Path) -> int | None:
    try:
        return read_counter(zone / "max_energy_range_uj") or None
    except (OSError, ValueError):
        return None  # then a backwards step is discarded as impossible rather than guessed


class RaplMeter(CounterMeter):
    """Sum of package energy_uj deltas; a counter that wrapped gets its max_energy_range_uj back."""

    method = "rapl"
    unit_j = 1e-6
    update_s = RAPL_UPDATE_S
    resolution_j = 1e-6
    wrap_name = "RAPL counter"

    def __init__(self, zones: list[Path], **kw):
        super().__init__(**kw)
        self.zones = zones
        self._ranges = [_wrap_range(z) for z in zones]
        names = ", ".join(z.name for z in zones)
        self.note = (f"rapl: CPU package energy only ({names}; no DRAM, GPU or rest of board); "
                     "1 uJ counter units, updates ~1 ms")

    def _read(self) -> list[int]:
        try:
            return [read_counter(z / "energy_uj") for z in self.zones]
        except PermissionError:
            raise MeterError(NEEDS_ROOT) from None
        except (OSError, ValueError) as e:
            raise MeterError(f"RAPL read failed: {e}") from None


def open_rapl(powercap_root: str | Path = DEFAULT_POWERCAP, **kw) -> RaplMeter | str:
    """A RaplMeter, or a short reason string why RAPL is not usable here."""
    root = Path(powercap_root)
    if not root.is_dir():
        return f"RAPL not found (no {root})"
    try:
        zones = package_zones(root)
    except OSError as e:
        return f"RAPL not readable ({e})"
    if not zones:
        return f"RAPL not found (no intel-rapl package zones in {root})"
    meter = RaplMeter(zones, **kw)
    try:
        meter._read()
    except MeterError as e:
        return str(e)
    return meter
