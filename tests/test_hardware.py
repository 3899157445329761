"""Hardware profiles, detection and `perfbench hw` (CPU-only, fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perfbench.errors import InputError, SpecError
from perfbench.hardware import DTYPES, HardwareProfile, UnknownDtypeError, list_profiles, load_profile
from perfbench.hardware.detect import (
    fallback_profile,
    fingerprint,
    hardware_id,
    match_profile,
    matching_profiles,
    parse_cpu_model,
)
from perfbench.hardware.profile import PROFILES_ENV, parse_profile, profiles_dir

REPO = Path(__file__).resolve().parents[1]

SHIPPED = {
    "a100-pcie-40gb", "a100-sxm-80gb", "h100-pcie", "h100-sxm", "h200", "gh200", "grace",
    "generic-x86-64", "raspberry-pi-4", "raspberry-pi-5", "orange-pi-5-pro",
}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "perfbench", "hw", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=full_env)


@pytest.fixture(scope="module")
def profiles() -> list[HardwareProfile]:
    return list_profiles()


def _sourced_values(obj, path=""):
    """Yield (path, value, source) for every {value, source} leaf in a dumped profile."""
    if isinstance(obj, dict):
        if set(obj) == {"value", "source"}:
            yield path, obj["value"], obj["source"]
            return
        for k, v in obj.items():
            yield from _sourced_values(v, f"{path}.{k}" if path else k)


# --------------------------------------------------------------------------------------------------
# Shipped profiles
# --------------------------------------------------------------------------------------------------


def test_profiles_dir_is_repo_hw_profiles(monkeypatch):
    monkeypatch.delenv(PROFILES_ENV, raising=False)
    assert profiles_dir() == REPO / "hw_profiles"


def test_every_shipped_profile_loads(profiles):
    assert {p.name for p in profiles} == SHIPPED
    for p in profiles:
        assert p.kind in ("gpu", "cpu")
        assert p.peak_flops("float32") > 0
        assert p.memory_bandwidth > 0 and p.memory_capacity > 0
        assert load_profile(p.name) == p
        assert load_profile(REPO / "hw_profiles" / f"{p.name}.yaml") == p


def test_every_number_has_a_source(profiles):
    for p in profiles:
        leaves = list(_sourced_values(p.model_dump(mode="json")))
        assert len(leaves) >= 4, p.name
        for path, value, source in leaves:
            assert value > 0, (p.name, path)
            assert len(source.strip()) > 10, (p.name, path)


def test_gpu_profiles_link_and_cpu_profiles_none(profiles):
    for p in profiles:
        if p.kind == "gpu":
            assert p.link_bandwidth is not None and p.match.gpu_name
        else:
            assert p.link.type == "none" and p.link_bandwidth is None


def test_pinned_datasheet_numbers():
    h100 = load_profile("h100-sxm")
    assert h100.peak_flops("bfloat16") == pytest.approx(989.4e12, rel=1e-3)
    assert h100.peak_flops("float16") == pytest.approx(989.4e12, rel=1e-3)
    assert h100.peak_flops("float8") == pytest.approx(1978.9e12, rel=1e-3)
    assert h100.peak_flops("tf32") == pytest.approx(494.7e12, rel=1e-3)
    assert h100.peak_flops("float32") == pytest.approx(67e12, rel=0.01)
    assert h100.memory_bandwidth == pytest.approx(3.35e12)
    assert h100.memory_capacity == 80 * 1024**3
    assert h100.link_bandwidth == pytest.approx(63e9, rel=0.01)

    for name in ("a100-pcie-40gb", "a100-sxm-80gb"):
        a100 = load_profile(name)
        assert a100.peak_flops("bfloat16") == pytest.approx(312e12)
        assert a100.peak_flops("tf32") == pytest.approx(156e12)
        assert a100.peak_flops("float32") == pytest.approx(19.5e12)
        assert not a100.has_dtype("float8")
    assert load_profile("a100-pcie-40gb").memory_bandwidth == pytest.approx(1555e9)
    assert load_profile("a100-sxm-80gb").memory_bandwidth == pytest.approx(2039e9)

    assert load_profile("h100-pcie").peak_flops("bf16") == pytest.approx(756e12, rel=1e-3)
    assert load_profile("h200").memory_bandwidth == pytest.approx(4.8e12)
    gh = load_profile("gh200")
    assert gh.memory_bandwidth == pytest.approx(4.0e12)
    assert gh.link.type == "nvlink-c2c" and gh.link_bandwidth == pytest.approx(450e9)
    assert gh.host.cores.value == 72
    assert load_profile("raspberry-pi-4").memory_bandwidth == pytest.approx(12.8e9)
    assert load_profile("raspberry-pi-5").peak_flops("float32") == pytest.approx(4 * 2.4e9 * 16)


# --------------------------------------------------------------------------------------------------
# Convenience API
# --------------------------------------------------------------------------------------------------


def test_peak_flops_aliases_and_float32_is_not_tf32():
    p = load_profile("h100-sxm")
    assert p.peak_flops("bf16") == p.peak_flops("torch.bfloat16") == p.peak_flops("bfloat16")
    assert p.peak_flops("fp8") == p.peak_flops("float8_e4m3fn")
    assert p.peak_flops("float32") == p.peak_flops("fp32") < p.peak_flops("tf32")
    assert p.ridge_point("bfloat16") == pytest.approx(989.4e12 / 3.35e12)
    assert p.dtypes == [d for d in DTYPES if d != "int4"]


def test_peak_flops_missing_dtype_lists_available():
    pi4 = load_profile("raspberry-pi-4")
    with pytest.raises(UnknownDtypeError, match=r"no bfloat16 peak; available: float32") as ei:
        pi4.peak_flops("bfloat16")
    assert isinstance(ei.value, InputError) and isinstance(ei.value, KeyError)
    with pytest.raises(UnknownDtypeError, match="unknown dtype 'float99'; known: float32, tf32"):
        pi4.peak_flops("float99")


# --------------------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------------------


def _valid_mapping() -> dict:
    return yaml.safe_load((REPO / "hw_profiles" / "h100-sxm.yaml").read_text().replace("e12", "e+12")
                          .replace("e9", "e+9"))


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """An empty profile directory used instead of the shipped one."""
    d = tmp_path / "profiles"
    d.mkdir()
    monkeypatch.setenv(PROFILES_ENV, str(d))
    return d


def _write(d: Path, data, name: str = "h100-sxm") -> Path:
    p = d / f"{name}.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def _problems(exc: SpecError) -> dict[str, str]:
    return dict(exc.problems)


def test_scientific_notation_without_sign_is_a_float(profile_dir):
    text = (REPO / "hw_profiles" / "h100-sxm.yaml").read_text()
    assert "989.4e12" in text  # plain YAML 1.1 would read this as a string
    _write(profile_dir, text)
    assert load_profile("h100-sxm").peak_flops("bfloat16") == pytest.approx(989.4e12)


def test_unknown_field_names_file_path_and_allowed(profile_dir):
    data = _valid_mapping()
    data["dense_flops"]["bf16"] = {"value": 1.0, "source": "x"}
    data["colour"] = "green"
    path = _write(profile_dir, data)
    with pytest.raises(SpecError) as ei:
        load_profile("h100-sxm")
    assert ei.value.source == str(path)
    probs = _problems(ei.value)
    assert "unknown field" in probs["dense_flops.bf16"] and "bfloat16" in probs["dense_flops.bf16"]
    assert "allowed: name, description, kind" in probs["colour"]
    assert str(path) in str(ei.value)


def test_wrong_type_and_negative_number(profile_dir):
    data = _valid_mapping()
    data["memory"]["bandwidth"]["value"] = "fast"
    data["tdp_watts"]["value"] = -700
    data["memory"]["capacity"]["value"] = 80.5
    data["kind"] = "tpu"
    path = _write(profile_dir, data)
    with pytest.raises(SpecError) as ei:
        load_profile(path)
    probs = _problems(ei.value)
    assert ei.value.source == str(path)
    assert "valid number" in probs["memory.bandwidth.value"] and "'fast'" in probs["memory.bandwidth.value"]
    assert "greater than 0" in probs["tdp_watts.value"]
    assert "valid integer" in probs["memory.capacity.value"]
    assert "'gpu' or 'cpu'" in probs["kind"]


def test_missing_source_and_link_rules(profile_dir):
    data = _valid_mapping()
    del data["dense_flops"]["bfloat16"]["source"]
    del data["link"]["pcie_gen"]
    path = _write(profile_dir, data)
    with pytest.raises(SpecError) as ei:
        load_profile(path)
    probs = _problems(ei.value)
    assert probs["dense_flops.bfloat16.source"] == "required field is missing"
    assert "pcie_gen" in probs["link"]


def test_cross_field_rules_and_name_must_match_file(profile_dir):
    data = _valid_mapping()
    data["kind"] = "cpu"
    data["name"] = "something-else"
    path = _write(profile_dir, data)
    with pytest.raises(SpecError) as ei:
        load_profile(path)
    probs = _problems(ei.value)
    assert "expected 'h100-sxm'" in probs["name"]
    assert "type: none" in probs["link.type"]
    assert "gpu_name" in probs["match.gpu_name"]


def test_bad_regex_and_bad_yaml(profile_dir):
    data = _valid_mapping()
    data["match"]["gpu_name"] = "H100(("
    with pytest.raises(SpecError) as ei:
        load_profile(_write(profile_dir, data))
    assert "regular expression" in _problems(ei.value)["match.gpu_name"]

    path = _write(profile_dir, "name: [unclosed\n", name="broken")
    with pytest.raises(SpecError, match="not valid YAML") as ei:
        load_profile("broken")
    assert ei.value.source == str(path)


def test_list_profiles_raises_on_a_bad_file(profile_dir):
    _write(profile_dir, _valid_mapping())
    data = _valid_mapping()
    data["name"] = "other"
    data["memory"]["bandwidth"]["value"] = 0
    _write(profile_dir, data, name="other")
    with pytest.raises(SpecError) as ei:
        list_profiles()
    assert ei.value.source.endswith("other.yaml")
    assert "memory.bandwidth.value" in _problems(ei.value)


def test_unknown_name_lists_known_names(profile_dir):
    _write(profile_dir, _valid_mapping())
    with pytest.raises(InputError, match=r"unknown hardware profile 'h300'; known: h100-sxm"):
        load_profile("h300")
    with pytest.raises(InputError, match="not found"):
        load_profile(profile_dir / "nope.yaml")


def test_parse_profile_rejects_non_mapping():
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_profile(["a", "list"], "x.yaml")


# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------

FP_KEYS = {
    "hostname", "os", "platform", "arch", "cpu_model", "cpu_cores_physical", "cpu_cores_logical",
    "memory_total_bytes", "gpus", "gpu_count", "driver_version", "cuda_version", "torch_version",
    "python_version", "hardware_id",
}


def test_fingerprint_keys_and_stable_hardware_id():
    fp = fingerprint()
    assert FP_KEYS <= set(fp)
    assert isinstance(fp["gpus"], list) and fp["gpu_count"] == len(fp["gpus"])
    assert fp["cpu_cores_logical"] >= 1 and fp["memory_total_bytes"] > 0 and fp["cpu_model"]
    assert len(fp["hardware_id"]) == 12 and int(fp["hardware_id"], 16) >= 0
    assert fingerprint()["hardware_id"] == fp["hardware_id"]
    json.dumps(fp)  # storable as is


def test_hardware_id_covers_hardware_only():
    base = {"hostname": "a", "cpu_model": "X", "cpu_cores_logical": 8,
            "memory_total_bytes": 64 * 1024**3, "torch_version": "2.4",
            "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 81559 * 1024**2}]}
    hid = hardware_id(base)
    assert hardware_id({**base, "hostname": "b", "torch_version": "2.5"}) == hid
    assert hardware_id({**base, "memory_total_bytes": 64 * 1024**3 - 50 * 1024**2}) == hid  # rounding
    assert hardware_id({**base, "cpu_cores_logical": 16}) != hid
    assert hardware_id({**base, "gpus": []}) != hid
    assert hardware_id({**base, "gpus": base["gpus"] * 2}) != hid
    two = [{"name": "A", "memory_total_bytes": 1}, {"name": "B", "memory_total_bytes": 1}]
    assert hardware_id({**base, "gpus": two}) == hardware_id({**base, "gpus": two[::-1]})


GPU_CASES = [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 SXM5 80GB", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA GH200 480GB", "gh200"),
    # Different parts that must not borrow another profile's numbers:
    ("NVIDIA H100 NVL", None),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA GH200 144G HBM3e", None),
    ("NVIDIA A100-SXM4-40GB", None),
    ("NVIDIA A100 80GB PCIe", None),
    ("NVIDIA GeForce RTX 4090", None),
]


def _gpu_fp(name: str) -> dict:
    return {"arch": "x86_64", "cpu_model": "Intel(R) Xeon(R) Platinum 8480C", "cpu_cores_logical": 224,
            "gpus": [{"name": name, "memory_total_bytes": 80 * 1024**3}]}


@pytest.mark.parametrize("gpu_name,expected", GPU_CASES)
def test_match_profile_gpu_names(profiles, gpu_name, expected):
    fp = _gpu_fp(gpu_name)
    found = matching_profiles(fp, profiles)
    assert [p.name for p in found] == ([expected] if expected else [])
    got = match_profile(fp, profiles)
    assert (got.name if got else None) == expected


CPU_CASES = [
    ("Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)", 4, "aarch64", "raspberry-pi-4"),
    ("Raspberry Pi 400 Rev 1.0 (Cortex-A72)", 4, "aarch64", "raspberry-pi-4"),
    ("Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)", 4, "aarch64", "raspberry-pi-5"),
    ("Xunlong Orange Pi 5 Pro (Cortex-A55, Cortex-A76)", 8, "aarch64", "orange-pi-5-pro"),
    ("Orange Pi 5 Pro (Cortex-A55, Cortex-A76)", 8, "aarch64", "orange-pi-5-pro"),
    ("Neoverse-V2", 72, "aarch64", "grace"),
    ("Neoverse-V2", 144, "aarch64", None),  # Grace CPU Superchip: two dies, not this profile
    ("Orange Pi 5 (Cortex-A55, Cortex-A76)", 8, "aarch64", None),
    ("AMD EPYC 7763 64-Core Processor", 128, "x86_64", None),
]


@pytest.mark.parametrize("cpu_model,cores,arch,expected", CPU_CASES)
def test_match_profile_cpu_models(profiles, cpu_model, cores, arch, expected):
    fp = {"arch": arch, "cpu_model": cpu_model, "cpu_cores_logical": cores, "gpus": []}
    found = matching_profiles(fp, profiles)
    assert [p.name for p in found] == ([expected] if expected else [])


def test_generic_is_fallback_never_match(profiles):
    x86 = {"arch": "x86_64", "cpu_model": "Some Future CPU", "cpu_cores_logical": 8, "gpus": []}
    assert match_profile(x86, profiles) is None
    assert fallback_profile(x86, profiles).name == "generic-x86-64"
    assert fallback_profile(x86).name == "generic-x86-64"
    assert fallback_profile({**x86, "arch": "aarch64"}, profiles) is None
    # an unknown GPU is not matched to a CPU profile
    assert match_profile(_gpu_fp("NVIDIA GeForce RTX 4090"), profiles) is None


def test_match_this_machine_does_not_crash():
    fp = fingerprint()
    p = match_profile(fp)
    assert p is None or isinstance(p, HardwareProfile)


CPUINFO_PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Revision\t: d03114
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

CPUINFO_PI4_32BIT = """processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
BogoMIPS\t: 108.00
CPU implementer\t: 0x41
CPU architecture: 7
CPU part\t: 0xd08
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

CPUINFO_RK3588S = "".join(
    f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: {'0xd05' if i < 4 else '0xd0b'}\n\n"
    for i in range(8))

CPUINFO_GRACE = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n"

CPUINFO_X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\n"


def test_parse_cpu_model_samples():
    assert parse_cpu_model(CPUINFO_PI4, "Raspberry Pi 4 Model B Rev 1.4\x00") == (
        "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)", "Raspberry Pi 4 Model B Rev 1.4", ["Cortex-A72"])
    assert parse_cpu_model(CPUINFO_PI4)[0] == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)"
    assert parse_cpu_model(CPUINFO_PI4_32BIT)[0] == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)"
    assert parse_cpu_model(CPUINFO_RK3588S, "Xunlong Orange Pi 5 Pro\x00")[0] == \
        "Xunlong Orange Pi 5 Pro (Cortex-A55, Cortex-A76)"
    assert parse_cpu_model(CPUINFO_GRACE) == ("Neoverse-V2", None, ["Neoverse-V2"])
    assert parse_cpu_model(CPUINFO_X86) == ("Intel(R) Xeon(R) Platinum 8480C", None, [])
    unknown_part = "CPU implementer\t: 0x41\nCPU part\t: 0xfff\n"
    assert parse_cpu_model(unknown_part, None, ["Cortex-Z9"])[0] == "Cortex-Z9"


def test_parsed_samples_match_their_profiles(profiles):
    for text, dt, cores, expected in (
        (CPUINFO_PI4, "Raspberry Pi 4 Model B Rev 1.4", 4, "raspberry-pi-4"),
        (CPUINFO_RK3588S, "Xunlong Orange Pi 5 Pro", 8, "orange-pi-5-pro"),
        (CPUINFO_GRACE, None, 72, "grace"),
    ):
        fp = {"arch": "aarch64", "cpu_model": parse_cpu_model(text, dt)[0], "cpu_cores_logical": cores,
              "gpus": []}
        assert match_profile(fp, profiles).name == expected


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def test_cli_list_json():
    res = _cli("list", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {r["name"] for r in rows} == SHIPPED
    h100 = next(r for r in rows if r["name"] == "h100-sxm")
    assert h100["bfloat16_peak_flops"] == pytest.approx(989.4e12)
    assert h100["memory_bandwidth"] == pytest.approx(3.35e12)
    pi4 = next(r for r in rows if r["name"] == "raspberry-pi-4")
    assert pi4["bfloat16_peak_flops"] is None and pi4["float32_peak_flops"] > 0


def test_cli_list_table():
    res = _cli("list")
    assert res.returncode == 0, res.stderr
    assert "h100-sxm" in res.stdout and "989.4 TFLOP/s" in res.stdout


def test_cli_show_json_and_table():
    res = _cli("show", "h100-sxm", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["name"] == "h100-sxm"
    assert data["dense_flops"]["bfloat16"]["value"] == pytest.approx(989.4e12)
    assert "sparsity" in data["dense_flops"]["bfloat16"]["source"]
    assert data["measured_ceilings"] is None

    res = _cli("show", "raspberry-pi-4")
    assert res.returncode == 0, res.stderr
    assert "LPDDR4-3200" in res.stdout and "derived" in res.stdout
    assert "measured ceilings: none" in res.stdout


def test_cli_detect_json():
    res = _cli("detect", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert FP_KEYS <= set(data["fingerprint"])
    assert set(data) >= {"fingerprint", "profile", "fallback"}
    if data["profile"] is None and data["fingerprint"]["arch"] == "x86_64":
        assert data["fallback"] == "generic-x86-64"


def test_cli_unknown_name_exits_2():
    res = _cli("show", "h300")
    assert res.returncode == 2
    assert "unknown hardware profile 'h300'" in res.stderr and "h100-sxm" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_bad_profile_file_exits_2(tmp_path):
    data = _valid_mapping()
    data["memory"]["bandwidth"]["value"] = -1
    path = tmp_path / "h100-sxm.yaml"
    path.write_text(yaml.safe_dump(data))
    res = _cli("show", str(path))
    assert res.returncode == 2
    assert str(path) in res.stderr.replace("\n", "") and "memory.bandwidth.value" in res.stderr
    assert "Traceback" not in res.stderr


def test_blank_source_is_rejected_with_a_clear_message(tmp_path):
    from perfbench.hardware import load_profile

    text = (REPO / "hw_profiles" / "h100-sxm.yaml").read_text()
    bad = tmp_path / "h100-sxm.yaml"
    bad.write_text(text.replace('source: "NVIDIA H100 datasheet: H100 SXM GPU memory bandwidth 3.35 TB/s"',
                                'source: "  "'))
    with pytest.raises(SpecError) as ei:
        load_profile(bad)
    msg = dict(ei.value.problems)["memory.bandwidth.source"]
    assert "where the number comes from" in msg
