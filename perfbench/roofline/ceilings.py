"""Ceilings for a roofline: the datasheet's (hardware profile) and the machine's own (calibrate).

Measured ceilings live in the results store keyed by hardware fingerprint. A machine's measured
ceilings are the best of its calibrations on that device; a profile's are those of the newest
calibrated machine that matches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def measured_from_calibrations(cals: list[dict[str, Any]]) -> dict[str, Any]:
    """The `hw show` shape (dense_flops per dtype, memory and link bandwidth, launch overhead) of
    the best of several calibrations of one machine, ceiling by ceiling: highest FLOP/s and
    bandwidths, lowest launch cost. Why the best and not the newest: a ceiling is what the machine
    can do, and noise (other load, a `--quick` run, clocks still ramping) only ever lowers it.
    `cals` newest first, as the store returns them."""
    flops: dict[str, float] = {}
    mem = launch = link = None
    for cal in cals:
        res = cal["results"]
        for d, m in res.get("matmul", {}).items():
            if m.get("flops_per_s"):
                flops[d] = max(flops.get(d, 0.0), m["flops_per_s"])
        bw = res.get("memory", {}).get("bytes_per_s")
        if bw:
            mem = max(mem or 0.0, bw)
        lu = res.get("launch", {}).get("launch_us")
        if lu:
            launch = min(launch, lu) if launch else lu
        hd = res.get("host_device")
        if hd:
            link = max(link or 0.0, min(hd["h2d_bytes_per_s"], hd["d2h_bytes_per_s"]))
    new = cals[0]
    what = (f"perfbench calibrate {new['calibration_id']}" if len(cals) == 1 else
            f"best of {len(cals)} perfbench calibrations, newest {new['calibration_id']}")
    out: dict[str, Any] = {
        "dense_flops": flops,
        "memory_bandwidth": mem,
        "launch_us": launch,
        "source": f"{what} ({new['created_at'][:19]}, {new['device']}, hardware_id {new['hardware_id']})",
        "calibration_id": new["calibration_id"],
        "calibrations": len(cals),
        "hardware_id": new["hardware_id"],
    }
    if link:
        out["link_bandwidth"] = link
    return out


def profile_for_fingerprint(fp: dict[str, Any]):
    """(profile, how): the matching profile, else the generic fallback, else (None, 'none')."""
    from perfbench.hardware.detect import fallback_profile, match_profile

    prof = match_profile(fp)
    if prof is not None:
        return prof, "matched"
    prof = fallback_profile(fp)
    return (prof, "fallback") if prof is not None else (None, "none")


def measured_for_profile(store_path: str | Path, profile_name: str) -> dict[str, Any] | None:
    """Measured ceilings of the newest calibrated machine that matches `profile_name`, on that
    profile's kind of device (a GPU profile never shows a CPU calibration of a GPU host). The best
    of that machine's calibrations. None if none, or no store."""
    from perfbench.hardware.profile import load_profile
    from perfbench.store import ResultsStore

    if not Path(store_path).exists():
        return None
    device = "cuda" if load_profile(profile_name).kind == "gpu" else "cpu"
    with ResultsStore(store_path, create=False) as st:
        for cal in st.calibrations(device=device):
            prof, _ = profile_for_fingerprint(cal["fingerprint"])
            if prof is not None and prof.name == profile_name:
                return measured_for_hardware(st, cal["hardware_id"], device)
    return None


def measured_for_hardware(store, hardware_id: str, device: str) -> dict[str, Any] | None:
    """The best of the calibrations of exactly this hardware id and device, from an open store."""
    cals = store.calibrations(hardware_id=hardware_id, device=device)
    return measured_from_calibrations(cals) if cals else None


def run_ceilings(store, run: dict[str, Any], *, hardware: str | None = None,
                 choice: str = "auto") -> dict[str, Any]:
    """Ceilings to place `run` against.

    `choice`: auto (measured if this exact hardware was calibrated, else datasheet), measured, or
    datasheet. Returns {"peak", "bandwidth", "source", "profile", "profile_match", "datasheet",
    "measured", "launch_us"}; the last three feed the plots.
    """
    from perfbench.errors import InputError
    from perfbench.hardware.profile import load_profile

    dtype = run["spec"]["dtype"]
    if hardware:
        prof, how = load_profile(hardware), "given"
    else:
        prof, how = profile_for_fingerprint(run["fingerprint"])
    datasheet = None
    if prof is not None and prof.has_dtype(dtype):
        datasheet = {"peak": prof.peak_flops(dtype), "bandwidth": prof.memory_bandwidth}
    measured = None
    cal = measured_for_hardware(store, run["hardware_id"], run["device"])
    if cal and cal["dense_flops"].get(dtype) and cal.get("memory_bandwidth"):
        measured = {"peak": cal["dense_flops"][dtype], "bandwidth": cal["memory_bandwidth"]}
    if choice == "measured" and measured is None:
        raise InputError(f"no measured {dtype} ceilings for hardware {run['hardware_id']} on "
                         f"{run['device']}: run `perfbench calibrate` on that machine first")
    if choice == "datasheet" and datasheet is None:
        raise InputError(f"no datasheet ceilings for this run's hardware (profile: "
                         f"{prof.name if prof else 'none matched'}); pass --hardware PROFILE")
    if choice not in ("auto", "measured", "datasheet"):
        raise InputError(f"--ceilings must be auto, measured or datasheet, got {choice!r}")
    use = measured if (choice == "measured" or (choice == "auto" and measured)) else datasheet
    if use is None:
        raise InputError("no ceilings for this run: no matching hardware profile and no calibration; "
                         "pass --hardware PROFILE or run `perfbench calibrate`")
    return {"peak": use["peak"], "bandwidth": use["bandwidth"],
            "source": "measured" if use is measured else "datasheet",
            "profile": prof.name if prof else None, "profile_match": how,
            "datasheet": datasheet, "measured": measured,
            "launch_us": cal.get("launch_us") if cal else None}
