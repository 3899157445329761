"""capture_trace on CPU: a real torch.profiler trace that the analysis reads as CPU-only."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from perfbench.errors import InputError


def test_capture_cpu_trace_and_analyse_it(tmp_path):
    torch = pytest.importorskip("torch")
    from perfbench.trace import analyze, capture_trace

    x = torch.randn(32, 32)
    calls = []

    def step() -> None:
        calls.append(1)
        torch.relu(x @ x).sum()

    out = capture_trace(step, tmp_path / "sub" / "cpu.json.gz", cuda=False)
    assert out == tmp_path / "sub" / "cpu.json.gz" and out.exists()
    assert calls == [1]  # exactly one call is profiled
    doc = json.loads(gzip.open(out).read())  # really gzipped JSON
    assert any(e.get("cat") == "cpu_op" for e in doc["traceEvents"])
    assert [p.name for p in out.parent.iterdir()] == ["cpu.json.gz"]  # no temp files left behind
    a = analyze(out)
    f = a.as_full_dict()
    assert f["has_gpu"] is False and f["bound"] is None and f["tklqt_us"] is None
    assert "no GPU activity" in f["note"]
    assert "aten::mm" in set(a.trace.host["name"].astype(str))
    assert a.traced_span_us is not None and a.traced_span_us > 0


def test_capture_rejects_other_suffixes(tmp_path):
    from perfbench.trace import capture_trace

    with pytest.raises(InputError, match=".json.gz"):
        capture_trace(lambda: None, tmp_path / "t.json", cuda=False)


def test_analysis_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import perfbench.trace as t\n"
        "from perfbench.trace import analyze, operator_table, detect_transition, fusion_candidates, capture_trace\n"
        "import perfbench.cli.trace\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
