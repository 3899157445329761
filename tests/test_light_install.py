"""perfbench runs without torch or transformers: they belong to the backends that need them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(Path(__file__).parent / "no_torch.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_the_blocker_really_blocks():
    r = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.argv=['x']; "
                        "import tests.no_torch as m; sys.meta_path.insert(0, m._Absent()); import torch"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "absent for this test" in r.stderr


def test_help_trace_and_results_need_no_torch(tmp_path):
    assert _cli("--help").returncode == 0
    r = _cli("trace", "analyze", str(FIXTURES / "traces" / "public" / "cpu_only.json.gz"))
    assert r.returncode == 0, r.stderr
    r = _cli("results", "list", "--store", str(tmp_path / "none.sqlite"))
    assert r.returncode == 0, r.stderr


def test_a_llama_cpp_run_needs_no_torch(tmp_path):
    pytest.importorskip("llama_cpp", reason="the llama-cpp extra: pip install 'perfbench[llama-cpp]'")
    store = str(tmp_path / "r.sqlite")
    r = _cli("run", "workloads/llama-cpp-tiny-cpu.yaml", "--store", store, "--set", "measure.repeats=3",
             "--set", "measure.min_seconds=0", env={"PERFBENCH_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert "tg tok/s" in r.stdout
    assert _cli("results", "list", "--store", store).returncode == 0
