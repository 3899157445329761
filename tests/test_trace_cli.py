"""`perfbench trace ...` as other tools call it: exact JSON contracts and exit codes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfbench.trace import FIGURE_KEYS

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "tests" / "fixtures" / "traces" / "h100"
PUBLIC = REPO / "tests" / "fixtures" / "traces" / "public"

# The per-run figures, and "the two parts" of TKLQT it asks to report too, and `dropped`
# (per-reason counts of values dropped or clamped, the hostile-input issue). Nothing else: the
# JSON is "a single object with exactly those key names".
CONTRACT_KEYS = {
    "tklqt_us", "kernels", "launches", "akd_us", "gpu_busy_us", "gpu_span_us", "gpu_util", "idle_host_wait_us",
    "steps", "orphans", "negative_clamped", "graph_launches", "bound", "launch_call_us", "queue_us", "dropped",
}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "perfbench", "trace", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_contract_keys_are_the_figure_keys():
    assert set(FIGURE_KEYS) == CONTRACT_KEYS


def test_analyze_json_has_exactly_the_contract_keys():
    res = cli("analyze", str(H100 / "llama1b_prefill_eager_b64.json.gz"), "--format", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert set(d) == CONTRACT_KEYS
    assert d["bound"] == "gpu" and d["tklqt_us"] > 0 and d["steps"] == 1


def test_analyze_json_cpu_only():
    res = cli("analyze", str(PUBLIC / "cpu_only.json.gz"), "-f", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert set(d) == CONTRACT_KEYS and d["tklqt_us"] is None and d["bound"] is None
    assert "no GPU activity" in res.stderr  # the note, for people, outside the JSON


def test_analyze_table():
    res = cli("analyze", str(H100 / "llama1b_prefill_eager_b4_3steps.json.gz"), "--top", "3")
    assert res.returncode == 0, res.stderr
    assert "TKLQT" in res.stdout and "tklqt_us" in res.stdout and "top 3 kernels" in res.stdout
    assert "3 ProfilerStep windows" in res.stdout


def test_sweep_json_contract():
    traces = [str(H100 / f"llama1b_prefill_eager_b{b}.json.gz") for b in (1, 16, 64)]
    res = cli("sweep", *traces, "--batch-sizes", "1,16,64", "--format", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert set(d) == {"points", "transition_batch", "methods", "agree"}
    assert [p["batch_size"] for p in d["points"]] == [1, 16, 64]
    for p in d["points"]:
        assert set(p) == CONTRACT_KEYS | {"batch_size"}
    assert set(d["methods"]) == {"tklqt", "gpu_util", "latency"}
    assert d["transition_batch"] == 64 and d["agree"] is True
    assert [p["bound"] for p in d["points"]] == ["cpu", "cpu", "gpu"]


def test_sweep_with_timed_latency_table():
    traces = [str(H100 / f"llama1b_prefill_eager_b{b}.json.gz") for b in (1, 16, 64)]
    res = cli("sweep", *traces, "-b", "1,16,64", "--latency-ms", "16.28,22.36,48.58")
    assert res.returncode == 0, res.stderr
    assert "transition batch (TKLQT): 64" in res.stdout and "methods agree: yes" in res.stdout


@pytest.mark.parametrize("bs", ["1,16", "1,16,64,128", "1,x,64"])
def test_sweep_bad_batch_sizes_exit_2(bs):
    traces = [str(H100 / f"llama1b_prefill_eager_b{b}.json.gz") for b in (1, 16, 64)]
    res = cli("sweep", *traces, "--batch-sizes", bs, "--format", "json")
    assert res.returncode == 2
    assert "error" in res.stderr.lower()
    assert res.stdout == ""


def test_broken_trace_exit_2_names_the_file(tmp_path):
    bad = tmp_path / "broken.json.gz"
    raw = (H100 / "llama1b_prefill_eager_b1.json.gz").read_bytes()
    bad.write_bytes(raw[: len(raw) // 3])
    res = cli("analyze", str(bad), "--format", "json")
    assert res.returncode == 2
    assert "broken.json.gz" in res.stderr and "Traceback" not in res.stderr
    notrace = tmp_path / "config.json"
    notrace.write_text('{"a": 1}')
    res = cli("analyze", str(notrace))
    assert res.returncode == 2 and "not a PyTorch profiler trace" in res.stderr
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    res = cli("ops", str(empty))
    assert res.returncode == 2 and "empty" in res.stderr
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(raw)[:50_000]))
    res = cli("kernels", str(truncated))
    assert res.returncode == 2 and "truncated" in res.stderr


def test_ops_kernels_fusion_compare_overhead_json():
    b1 = str(H100 / "llama1b_prefill_eager_b1.json.gz")
    ops = json.loads(cli("ops", b1, "-f", "json", "--top", "5").stdout)
    assert len(ops) == 5 and set(ops[0]) == {"operator", "calls", "kernels", "gpu_time_us", "cpu_time_us", "launch_overhead_us"}
    ker = json.loads(cli("kernels", b1, "-f", "json", "--top", "3").stdout)
    assert len(ker) == 3 and set(ker[0]) == {"name", "count", "total_us", "mean_us", "share"}
    fus = json.loads(cli("fusion", b1, "-f", "json", "--top", "2").stdout)
    assert len(fus) == 2 and isinstance(fus[0]["chain"], list)
    cmp_ = json.loads(cli("compare", b1, str(H100 / "llama1b_prefill_compiled_b1.json.gz"), "-f", "json").stdout)
    assert cmp_["launches_saved"] == 671
    ov = json.loads(cli("overhead", b1, "--timed-median-ms", "16.28", "-f", "json").stdout)
    assert set(ov) == {"traced_span_us", "timed_median_us", "profiler_overhead_ratio"}
    assert ov["profiler_overhead_ratio"] > 1.5


def test_bad_format_is_a_usage_error():
    res = cli("analyze", str(H100 / "llama1b_prefill_eager_b1.json.gz"), "--format", "xml")
    assert res.returncode == 2
