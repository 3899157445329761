"""Energy measurement: fake RAPL trees, recorded Pi 5 PMIC output, modes, and the schema fields.

All CPU tests are deterministic: counters are files the test rewrites, clocks are injected where
seconds matter. The NVML test needs a GPU and skips cleanly without one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pytest

from perfbench.energy import ENERGY_MODES, EnergyReading, energy_fields, open_meter
from perfbench.energy import rapl
from perfbench.energy.pi5 import parse_pmic_adc, pmic_power_w
from perfbench.energy.sampling import integrate

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "energy"
PMIC_TEXT = (FIXTURES / "pi5_pmic_read_adc.txt").read_text()
FIELD_KEYS = {"energy_j", "power_avg_w", "energy_per_token_j", "energy_method",
              "energy_resolution_j", "idle_power_w", "energy_note"}
RANGE_UJ = 262143328850  # a real package's max_energy_range_uj


class FakeClock:
    """A clock the test advances by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_zone(root: Path, zone: str, name: str, uj: int, range_uj: int = RANGE_UJ) -> None:
    d = root / zone
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{range_uj}\n")


def set_uj(root: Path, zone: str, uj: int) -> None:
    """Move one fake counter, as the CPU would between start and stop."""
    (root / zone / "energy_uj").write_text(f"{uj}\n")


@pytest.fixture
def powercap(tmp_path) -> Path:
    """Two packages, a dram subzone (must not count), a psys zone and an mmio mirror (neither)."""
    root = tmp_path / "powercap"
    write_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    write_zone(root, "intel-rapl:0:0", "dram", 5_000_000)
    write_zone(root, "intel-rapl:1", "package-1", 2_000_000)
    write_zone(root, "intel-rapl:2", "psys", 9_000_000)
    write_zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)
    return root


# --- RAPL -------------------------------------------------------------------------------------


def test_rapl_sums_packages_only(powercap):
    clock = FakeClock()
    meter = open_meter("rapl", "cpu", powercap_root=powercap, clock=clock)
    assert meter.method == "rapl"
    assert [z.name for z in meter.zones] == ["intel-rapl:0", "intel-rapl:1"]
    window = meter.start()
    set_uj(powercap, "intel-rapl:0", 1_000_000 + 30_000_000)  # +30 J
    set_uj(powercap, "intel-rapl:1", 2_000_000 + 20_000_000)  # +20 J
    set_uj(powercap, "intel-rapl:0:0", 5_000_000 + 99_000_000)  # dram: ignored
    set_uj(powercap, "intel-rapl:2", 9_000_000 + 99_000_000)  # psys: ignored
    set_uj(powercap, "intel-rapl-mmio:0", 1_000_000 + 99_000_000)  # mirror: ignored
    clock.t += 2.0
    r = window.stop()
    assert r.joules == pytest.approx(50.0)
    assert r.seconds == pytest.approx(2.0)
    assert (r.method, r.resolution_j) == ("rapl", 1e-6)
    f = energy_fields(r, meter, tokens=100, idle_w=12.5)
    assert set(f) == FIELD_KEYS
    assert f["energy_j"] == pytest.approx(50.0)
    assert f["power_avg_w"] == pytest.approx(25.0)
    assert f["energy_per_token_j"] == pytest.approx(0.5)
    assert (f["energy_method"], f["energy_resolution_j"], f["idle_power_w"]) == ("rapl", 1e-6, 12.5)
    assert "CPU package" in f["energy_note"] and "1 ms" in f["energy_note"]
    meter.close()


def test_rapl_wraparound(powercap):
    clock = FakeClock()
    set_uj(powercap, "intel-rapl:0", RANGE_UJ - 4_000_000)  # 4 J before the wrap
    meter = open_meter("rapl", "cpu", powercap_root=powercap, clock=clock)
    window = meter.start()
    set_uj(powercap, "intel-rapl:0", 6_000_000)  # wrapped, then 6 J more
    set_uj(powercap, "intel-rapl:1", 2_000_000 + 1_000_000)
    clock.t += 1.0
    r = window.stop()
    assert r.joules == pytest.approx(4.0 + 6.0 + 1.0)
    assert "wrapped 1x (handled)" in r.note


def test_rapl_backwards_without_range_is_discarded(powercap):
    (powercap / "intel-rapl:0" / "max_energy_range_uj").write_text("0\n")
    (powercap / "intel-rapl:1" / "max_energy_range_uj").unlink()
    clock = FakeClock()
    meter = open_meter("rapl", "cpu", powercap_root=powercap, clock=clock)
    window = meter.start()
    set_uj(powercap, "intel-rapl:0", 10)
    clock.t += 1.0
    r = window.stop()
    f = energy_fields(r, meter, tokens=10, idle_w=None)
    assert r.joules is None and f["energy_j"] is None and f["power_avg_w"] is None
    assert "impossible" in f["energy_note"]


def test_rapl_short_window_flagged(powercap):
    clock = FakeClock()
    meter = open_meter("rapl", "cpu", powercap_root=powercap, clock=clock)
    window = meter.start()
    clock.t += 0.0002
    assert "short window" in window.stop().note


def test_rapl_idle_baseline_sleeps_and_divides(powercap):
    clock = FakeClock()

    def sleep(seconds: float) -> None:  # the CPU idles at 8 W on package 0 while we sleep
        clock.t += seconds
        set_uj(powercap, "intel-rapl:0", 1_000_000 + int(8e6 * seconds))

    meter = open_meter("rapl", "cpu", powercap_root=powercap, clock=clock, sleep=sleep)
    assert meter.idle_baseline(2.0) == pytest.approx(8.0)
    assert meter.idle_baseline(0) is None


def test_rapl_permission_error_is_a_note(powercap, monkeypatch):
    if os.geteuid() != 0:
        for zone in ("intel-rapl:0", "intel-rapl:1"):
            (powercap / zone / "energy_uj").chmod(0o000)
    else:  # root reads mode-000 files anyway: simulate the non-root kernel answer
        def deny(path):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(rapl, "read_counter", deny)
    meter = open_meter("rapl", "cpu", powercap_root=powercap)
    assert meter.method is None
    assert meter.note == "energy: unavailable, RAPL needs root (energy_uj is readable by root only)"
    f = energy_fields(meter.start().stop(), meter, tokens=10, idle_w=meter.idle_baseline(1.0))
    assert f["energy_j"] is None and "needs root" in f["energy_note"]
    auto = open_meter("auto", "cpu", powercap_root=powercap, vcgencmd="no-such-vcgencmd")
    assert "needs root" in auto.note


def test_rapl_missing_powercap(tmp_path):
    meter = open_meter("rapl", "cpu", powercap_root=tmp_path / "nope")
    assert meter.method is None and "RAPL not found" in meter.note
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl package zones" in open_meter("rapl", "cpu", powercap_root=tmp_path / "empty").note


# --- Raspberry Pi 5 PMIC ----------------------------------------------------------------------


def test_pi5_parse_and_power_from_recorded_output():
    rails = parse_pmic_adc(PMIC_TEXT)
    assert len(rails) == 14 and rails["EXT5V"] == {"volt": 5.1351}
    assert rails["VDD_CORE"] == {"current": 2.4964, "volt": 0.815}
    # by hand from the fixture: V*I for the 12 rails with both readings (EXT5V, BATT: volt only)
    expected = (3.71532 * 0.00390372 + 3.319903 * 0.0526968 + 1.8006 * 0.1698252
                + 1.111538 * 0.0283068 + 0.6043956 * 0.0 + 1.10622 * 0.199113
                + 0.8036777 * 0.3172044 + 0.815 * 2.4964 + 3.30768 * 0.0004884
                + 3.30402 * 0.0004203 + 0.7996344 * 0.00464958 + 5.1489 * 0.023424)
    assert pmic_power_w(PMIC_TEXT) == pytest.approx(expected, rel=1e-12)
    assert pmic_power_w(PMIC_TEXT) == pytest.approx(3.16379, abs=1e-5)


def test_pi5_window_integrates_power_times_seconds():
    meter = open_meter("pi5-pmic", "cpu", vcgencmd=lambda: PMIC_TEXT)
    assert meter.method == "pi5-pmic"
    assert "board rails" in meter.note and "under-read wall power" in meter.note
    meter.interval_s = 0.02
    window = meter.start()
    time.sleep(0.1)
    r = window.stop()
    power = pmic_power_w(PMIC_TEXT)
    assert r.joules == pytest.approx(power * r.seconds, rel=1e-9)
    assert r.method == "pi5-pmic" and "sampled power" in r.note
    assert r.resolution_j == pytest.approx(power * 0.02, rel=1e-9)
    f = energy_fields(r, meter, tokens=4, idle_w=meter.idle_baseline(0.05))
    assert f["power_avg_w"] == pytest.approx(power, rel=1e-9)
    assert f["idle_power_w"] == pytest.approx(power, rel=1e-9)
    assert "under-read wall power" in f["energy_note"]
    meter.close()


def test_integrate_trapezoid_holds_edges():
    # 2 W held from t=0 to the first sample at 1, ramp to 4 W at 2, 4 W held to 3: 2 + 3 + 4
    assert integrate([(1.0, 2.0), (2.0, 4.0)], 0.0, 3.0) == pytest.approx(9.0)
    assert integrate([(5.0, 3.0)], 0.0, 2.0) == pytest.approx(6.0)  # lone late sample held flat
    assert integrate([], 0.0, 1.0) is None


def test_pi5_unusable_output_and_missing_command():
    meter = open_meter("pi5-pmic", "cpu", vcgencmd=lambda: 'error=1 error_msg="Command not registered"')
    assert meter.method is None and "pmic_read_adc unusable" in meter.note
    assert open_meter("pi5-pmic", "cpu", vcgencmd="no-such-vcgencmd").note == (
        "energy: unavailable, vcgencmd not found")


# --- modes ------------------------------------------------------------------------------------


def test_modes_and_bad_mode():
    assert ENERGY_MODES == ("auto", "off", "nvml", "rapl", "pi5-pmic")
    with pytest.raises(ValueError, match="energy mode"):
        open_meter("joulemeter", "cpu")


def test_off_mode():
    meter = open_meter("off", "cuda")
    assert meter.method is None and meter.note == "energy: off"
    assert meter.idle_baseline(5.0) is None  # returns at once: nothing to measure
    r = meter.start().stop()
    f = energy_fields(r, meter, tokens=10, idle_w=None)
    assert f["energy_j"] is None and f["energy_note"] == "energy: off"
    meter.close()


def test_auto_unavailable_names_each_reason(tmp_path):
    meter = open_meter("auto", "cpu", powercap_root=tmp_path / "none", vcgencmd="no-such-vcgencmd")
    assert meter.method is None
    for why in ("NVML not tried (device is cpu)", "RAPL not found", "vcgencmd not found"):
        assert why in meter.note
    f = energy_fields(meter.start().stop(), meter, tokens=10, idle_w=meter.idle_baseline(1.0))
    assert f["energy_j"] is None and f["energy_note"].startswith("energy: unavailable")


def test_auto_on_this_machine_never_raises():
    meter = open_meter("auto", "cpu")
    f = energy_fields(meter.start().stop(), meter, tokens=10, idle_w=None)
    assert set(f) == FIELD_KEYS
    if f["energy_j"] is None:
        assert f["energy_note"]
    meter.close()


def test_auto_prefers_rapl_then_pi5(powercap, tmp_path):
    assert open_meter("auto", "cpu", powercap_root=powercap, vcgencmd=lambda: PMIC_TEXT).method == "rapl"
    pi = open_meter("auto", "cpu", powercap_root=tmp_path / "none", vcgencmd=lambda: PMIC_TEXT)
    assert pi.method == "pi5-pmic"


def test_auto_cuda_without_nvml_says_gpu_is_missing(powercap, monkeypatch):
    from perfbench.energy import choose

    monkeypatch.setattr(choose, "open_nvml", lambda device, **kw: "NVML unavailable (no driver)")
    meter = open_meter("auto", "cuda", powercap_root=powercap)
    assert meter.method == "rapl"
    assert meter.note.startswith("energy: no GPU energy (NVML unavailable (no driver))")
    assert "CPU package" in meter.note


# --- energy_fields sanity ---------------------------------------------------------------------


def test_energy_fields_sanity():
    meter = open_meter("off", "cpu")
    meter.method, meter.note = "rapl", None
    ok = energy_fields(EnergyReading(3.0, 1.5, 1e-6, "rapl"), meter, tokens=0, idle_w=float("nan"))
    assert ok["energy_j"] == 3.0 and ok["power_avg_w"] == 2.0
    assert ok["energy_per_token_j"] is None and ok["idle_power_w"] is None
    assert "idle baseline" in ok["energy_note"]
    for bad in (-1.0, math.inf, math.nan):
        f = energy_fields(EnergyReading(bad, 1.0, 1e-6, "rapl"), meter, tokens=5, idle_w=None)
        assert f["energy_j"] is None and f["energy_per_token_j"] is None and "discarded" in f["energy_note"]
    huge = energy_fields(EnergyReading(1e9, 1.0, 1e-6, "rapl"), meter, tokens=5, idle_w=None)
    assert huge["energy_j"] is None and "implausible" in huge["energy_note"]
    none = energy_fields(None, meter, tokens=5, idle_w=None)
    assert none["energy_j"] is None and none["energy_note"] == "energy: no measured window"


# --- NVML with a fake pynvml (CPU) -------------------------------------------------------------


class FakeNvml:
    """Just enough of pynvml: GPUs by index with mJ counters (None: pre-Volta, no counter)."""

    class NVMLError(Exception):
        pass

    def __init__(self, mj: list, watts: list):
        self.mj, self.watts, self.shutdowns = mj, watts, 0

    def nvmlInit(self): pass
    def nvmlShutdown(self): self.shutdowns += 1
    def nvmlDeviceGetCount(self): return len(self.mj)
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetUUID(self, h): return f"GPU-{h}aaaa"
    def nvmlDeviceGetPowerUsage(self, h): return self.watts[h] * 1000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if self.mj[h] is None:
            raise self.NVMLError("Not Supported")
        return self.mj[h]


def test_nvml_counter_sums_visible_gpus(monkeypatch):
    nv = FakeNvml([1000, 2000, 3000], [0, 0, 0])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-0a,7,1")  # CUDA stops at the invalid 7
    clock = FakeClock()
    meter = open_meter("nvml", "cuda", clock=clock)
    assert (meter.method, meter.handles) == ("nvml-counter", [2, 0])
    window = meter.start()
    nv.mj[:] = [1000 + 400, 2000 + 999, 3000 + 600]  # GPU 1 is not ours
    clock.t += 0.5
    r = window.stop()
    assert r.joules == pytest.approx(1.0) and r.resolution_j == 1e-3 and r.method == "nvml-counter"
    second = open_meter("nvml", "cuda:1")
    assert second.handles == [0]  # the second visible GPU
    for m in (meter, meter, second):
        m.close()
    assert nv.shutdowns == 2  # one per opened meter, never twice for one


def test_nvml_without_counter_is_labelled_sampled(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([None], [150.0]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = open_meter("auto", "cuda")
    assert meter.method == "nvml-power-sampled" and meter.note.startswith("nvml: no energy counter")
    assert "not a counter" in meter.note
    meter.interval_s = 0.01
    window = meter.start()
    time.sleep(0.03)
    r = window.stop()
    assert r.joules == pytest.approx(150.0 * r.seconds) and "sampled power" in r.note
    assert energy_fields(r, meter, 3, None)["energy_method"] == "nvml-power-sampled"
    meter.close()


# --- NVML (GPU only) --------------------------------------------------------------------------


@pytest.mark.gpu
def test_nvml_counter_measures_matmul():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)")
    meter = open_meter("nvml", "cuda")
    assert meter.method == "nvml-counter", meter.note
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    window = meter.start()
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
    r = window.stop()
    f = energy_fields(r, meter, tokens=1, idle_w=None)
    meter.close()
    assert r.method == "nvml-counter" and r.resolution_j == 1e-3
    assert r.joules > 0 and f["power_avg_w"] > 0
