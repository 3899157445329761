"""scripts/gate_power_model.py: the docs' power-model numbers recomputed from bench_gate's JSON,
and bad files refused with a one-line error (exit 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "gate_power_model.py"


def _run(*files):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, files)], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


def test_power_model_and_aa_far_end(tmp_path):
    # first measurements +4, +5, +2 (the last ambiguous); confirmations +4, +5: SD of (4, 5, 2, 4, 5) = 1.225
    trials = [{"ratio": 1.04, "confirm_ratio": 1.04, "confirmed": True},
              {"ratio": 1.05, "confirm_ratio": 1.05, "confirmed": True}, {"ratio": 1.02, "confirm_ratio": None}]
    power = tmp_path / "power.json"
    power.write_text(json.dumps({"min_effect": 0.03, "variants": [{"seq_len": 51, "trials": trials}]}))
    aa = tmp_path / "aa.json"
    aa.write_text(json.dumps({"interleaved": {"rows": [{"ratio": 1.0, "ci": [0.98, 1.03]},
                                                        {"ratio": 0.99, "ci": [0.95, 1.01]},
                                                        {"ratio": 1.0, "ci": [0.99, 1.01]}]}}))
    r = _run(power, aa)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # size = median first = +4%; power = Phi((4 - 3) / 1.225)^2 = 0.793^2; 95% at 3 + 1.225 * 1.955
    assert "size +4.00%, detected 2/3" in lines[0] and "SD 1.225 pts" in lines[0], lines[0]
    assert "model: 62.9% at this size" in lines[0] and "95% at +5.39%" in lines[0], lines[0]
    assert "0/3 confirmed regressions (one-sided 95% upper bound 63.16%)" in lines[1], lines[1]
    assert "median 3.00%, p90 3.00%, max 5.00%" in lines[1], lines[1]


def test_bad_files_exit_2_with_the_field_and_no_traceback(tmp_path):
    cases = {"nan.json": '{"min_effect": 0.03, "variants": [{"seq_len": 51, "trials": [{"ratio": NaN}]}]}',
             "markup.json": '{"min_effect": 0.03, "variants": [{"seq_len": "\\u001b[31m<b>", "trials": [{"ratio": 1.1}]}]}',
             "deep.json": "[" * 100_000 + "]" * 100_000,
             "list.json": "[1, 2]",
             "evil\x1b[31m.json": '{"neither": 1}'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        r = _run(tmp_path / name)
        assert r.returncode == 2 and r.stderr.startswith("error: "), (name, r.stderr)
        assert "Traceback" not in r.stderr and "\x1b" not in r.stderr, (name, r.stderr)
    assert "ratio between" in _run(tmp_path / "nan.json").stderr
    assert "seq_len" in _run(tmp_path / "markup.json").stderr
    assert _run(tmp_path / "missing.json").returncode == 2
