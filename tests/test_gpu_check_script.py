"""scripts/gpu_check.py is what a GPU session runs to close the issues: keep it working on CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_reference_figures_come_from_the_fixture_readme():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    ref = gpu_check.reference_medians_ms()
    assert ref[1] == 16.28 and ref[16] == 22.36 and ref[64] == 48.58 and ref[128] == 94.57
    assert set(ref) == {1, 2, 4, 8, 16, 32, 64, 128}
    assert gpu_check.reference_ceilings() == {"bf16_tflops": 788.0, "copy_tbs": 3.0}


@pytest.mark.slow
def test_smoke_report(tmp_path):
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path), "--smoke",
                        "--stages", "detect,calibrate,prefill,bert,decode"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Host", "## Measured ceilings", "## Llama-3.2-1B prefill", "## Roofline placement",
                    "## BERT-base encoder", "## Llama-3.2-1B decode"):
        assert heading in report
    assert "failed:" not in report
    assert "kv_cache: eager dynamic, compiled static" in report
    assert (tmp_path / "roofline.png").stat().st_size > 1000 and (tmp_path / "latency.png").exists()
