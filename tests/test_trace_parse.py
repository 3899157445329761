"""Trace reading: real fixtures from several Kineto versions, odd layouts, broken files."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import perfbench.trace.parse as parse
from perfbench.errors import InputError
from perfbench.trace import analyze, load_trace

TRACES = Path(__file__).resolve().parent / "fixtures" / "traces"
H100 = TRACES / "h100"
PUBLIC = TRACES / "public"
ALL = sorted(TRACES.glob("*/*.json.gz"))


def _events(path: Path) -> list[dict]:
    return json.loads(gzip.open(path).read())["traceEvents"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_fixture_parses_into_numeric_tables(path):
    tr = load_trace(path)
    raw = _events(path)
    assert tr.n_events == len(raw)
    gpu_cats = {"kernel", "gpu_memcpy", "gpu_memset"}
    assert len(tr.gpu) == sum(1 for e in raw if e.get("ph") == "X" and e.get("cat") in gpu_cats)
    assert len(tr.calls) == sum(1 for e in raw if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver"))
    for df in (tr.host, tr.calls, tr.gpu):
        assert df["ts_us"].dtype == np.float64 and df["dur_us"].dtype == np.float64
        if len(df):
            assert df["ts_us"].min() >= 0  # relative to the earliest recognised event
            assert not df["ts_us"].isna().any()
    assert tr.calls["correlation"].dtype == np.int64
    assert tr.t0_us > 1e9  # absolute origin kept


def test_fields_match_the_raw_events():
    path = H100 / "llama1b_prefill_eager_b1.json.gz"
    tr = load_trace(path)
    raw = [e for e in _events(path) if e.get("cat") == "kernel"]
    first = min(raw, key=lambda e: e["ts"])
    row = tr.gpu.loc[tr.gpu["ts_us"].idxmin()]
    assert row["name"] == first["name"]
    assert row["correlation"] == first["args"]["correlation"]
    assert row["stream"] == first["tid"] and row["device"] == first["pid"]
    assert row["ts_us"] + tr.t0_us == pytest.approx(first["ts"], abs=1e-3)
    assert row["dur_us"] == pytest.approx(first["dur"])
    assert "deviceProperties" in tr.meta and "traceName" in tr.meta  # keys before and after traceEvents


def test_steps_are_found_in_the_three_step_trace():
    tr = load_trace(H100 / "llama1b_prefill_eager_b4_3steps.json.gz")
    assert tr.steps["step"].tolist() == [2, 3, 4]
    assert (tr.steps["dur_us"] > 10_000).all()


def _figs(path: Path) -> dict:
    return analyze(path).as_dict()


def test_compact_single_line_json_gives_the_same_figures(tmp_path):
    src = H100 / "llama1b_prefill_eager_b16.json.gz"
    doc = json.loads(gzip.open(src).read())
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(doc, separators=(",", ":")))
    assert _figs(compact) == _figs(src)


def test_bare_list_document(tmp_path):
    src = PUBLIC / "triton_example.json.gz"
    p = tmp_path / "list.json"
    p.write_text(json.dumps(_events(src)))
    assert _figs(p)["tklqt_us"] == pytest.approx(_figs(src)["tklqt_us"])


def test_multi_member_gzip(tmp_path):
    src = gzip.open(H100 / "llama1b_prefill_compiled_b1.json.gz").read()
    p = tmp_path / "multi.json.gz"
    half = len(src) // 2
    p.write_bytes(gzip.compress(src[:half]) + gzip.compress(src[half:]))
    assert _figs(p) == _figs(H100 / "llama1b_prefill_compiled_b1.json.gz")


def test_small_slices_give_identical_tables(monkeypatch):
    """Force many slices (and cuts between every few events) on a real trace."""
    path = PUBLIC / "ns_resolution.json.gz"
    whole = load_trace(path)
    monkeypatch.setattr(parse, "_SLICE_BYTES", 64 << 10)
    monkeypatch.setattr(parse, "_BLOCK_BYTES", 1 << 20)
    sliced = load_trace(path)
    for a, b in ((whole.host, sliced.host), (whole.calls, sliced.calls), (whole.gpu, sliced.gpu)):
        assert a.shape == b.shape
        assert (a["name"].astype(str).to_numpy() == b["name"].astype(str).to_numpy()).all()
        assert np.array_equal(a["ts_us"].to_numpy(), b["ts_us"].to_numpy())


def test_cut_inside_nested_objects_is_recovered(monkeypatch, tmp_path):
    """Args holding lists of objects ("}, {" inside an event) and strings that look like event
    boundaries: wrong cuts must be detected and the slice widened, not mis-parsed."""
    events = []
    for i in range(400):
        events.append({"ph": "X", "cat": "cpu_op", "name": "op}, {\"ph\": \"X\"", "pid": 1, "tid": 1, "ts": 10.0 * i, "dur": 5.0,
                       "args": {"nested": [{"a": j} for j in range(30)]}})
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 10.0 * i + 1, "dur": 2.0,
                       "args": {"correlation": i}})
        events.append({"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 10.0 * i + 4, "dur": 1.0,
                       "args": {"correlation": i}})
    p = tmp_path / "nested.json"
    p.write_text(json.dumps({"traceEvents": events}, indent=1))
    whole = load_trace(p)
    monkeypatch.setattr(parse, "_SLICE_BYTES", 2000)
    monkeypatch.setattr(parse, "_BLOCK_BYTES", 8000)
    sliced = load_trace(p)
    assert len(sliced.host) == len(whole.host) == 400
    assert len(sliced.gpu) == 400 and (sliced.host["name"] == 'op}, {"ph": "X"').all()
    assert analyze(sliced).figures.tklqt_us == pytest.approx(400 * 3.0)


def test_parallel_workers_match_in_process(tmp_path):
    """Run in a subprocess: the test process has torch loaded, where forking is refused."""
    code = (
        "import numpy as np, perfbench.trace.parse as P\n"
        "P._SLICE_BYTES = 256 << 10\n"
        "P._PARALLEL_MIN_BYTES = 0\n"
        f"p = {str(PUBLIC / 'cudagraph_multi_launch_rank0.json.gz')!r}\n"
        "if P._choose_workers(P.Path(p), 2) != 2:\n"
        "    print('skip'); raise SystemExit(0)\n"
        "a = P.load_trace(p, workers=0); b = P.load_trace(p, workers=2)\n"
        "for x, y in ((a.host, b.host), (a.calls, b.calls), (a.gpu, b.gpu)):\n"
        "    assert x.shape == y.shape\n"
        "    assert (x['name'].astype(str).to_numpy() == y['name'].astype(str).to_numpy()).all()\n"
        "    assert np.array_equal(x['ts_us'].to_numpy(), y['ts_us'].to_numpy())\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    if res.stdout.strip() == "skip":
        pytest.skip("fewer than 2 CPUs: no parallel parsing here")
    assert res.stdout.strip() == "ok"


def test_old_kineto_category_spellings(tmp_path):
    events = [
        {"ph": "X", "cat": "Operator", "name": "aten::add", "pid": 1, "tid": 1, "ts": 0, "dur": 50},
        {"ph": "X", "cat": "Runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 10, "dur": 5, "args": {"correlation": 7}},
        {"ph": "X", "cat": "Kernel", "name": "add_kernel", "pid": 0, "tid": 7, "ts": 25, "dur": 3, "args": {"correlation": 7}},
        {"ph": "X", "cat": "Memset", "name": "Memset (Device)", "pid": 0, "tid": 7, "ts": 40, "dur": 1, "args": {"correlation": 8}},
    ]
    p = tmp_path / "old.json"
    p.write_text(json.dumps({"traceEvents": events}))
    f = analyze(p).figures
    assert f.kernels == 1 and f.launches == 1 and f.orphans == 1
    assert f.tklqt_us == pytest.approx(15.0)


# ---------------------------------------------------------------------------------------- errors


def _broken(tmp_path: Path) -> dict[str, Path]:
    good = gzip.open(H100 / "llama1b_prefill_eager_b1.json.gz").read()
    gz = (H100 / "llama1b_prefill_eager_b1.json.gz").read_bytes()
    files = {
        "truncated_gzip": gz[: len(gz) // 2],
        "truncated_json_gz": gzip.compress(good[: len(good) * 2 // 3]),
        "truncated_json": good[: len(good) // 3],
        "not_a_trace": b'{"name": "config", "layers": [1, 2, 3]}',
        "list_of_numbers": b"[1, 2, 3]",
        "no_profiler_events": b'{"traceEvents": [{"ph": "M", "name": "process_name", "pid": 1}]}',
        "empty": b"",
        "empty_gz": gzip.compress(b""),
        "whitespace": b"   \n  ",
        "binary": bytes(range(256)) * 4,
        "not_json": b"hello, I am a text file\n",
        "garbage_gzip": b"\x1f\x8b" + b"\x00" * 50,
    }
    out = {}
    for name, data in files.items():
        p = tmp_path / (name + (".json.gz" if "gz" in name else ".json"))
        p.write_bytes(data)
        out[name] = p
    return out


def test_broken_files_raise_input_error_naming_the_file(tmp_path):
    for name, p in _broken(tmp_path).items():
        with pytest.raises(InputError) as exc:
            load_trace(p)
        assert str(p) in str(exc.value), name
        assert exc.value.exit_code == 2


def test_error_messages_say_what_is_wrong(tmp_path):
    files = _broken(tmp_path)
    msgs = {}
    for name in ("truncated_gzip", "truncated_json_gz", "truncated_json", "not_a_trace", "empty"):
        with pytest.raises(InputError) as exc:
            load_trace(files[name])
        msgs[name] = str(exc.value)
    assert "truncated" in msgs["truncated_gzip"]
    assert "truncated" in msgs["truncated_json_gz"]
    assert "truncated" in msgs["truncated_json"]
    assert "not a PyTorch profiler trace" in msgs["not_a_trace"]
    assert "empty" in msgs["empty"]


def test_malformed_json_in_the_middle(monkeypatch, tmp_path):
    monkeypatch.setattr(parse, "_SLICE_BYTES", 32 << 10)
    monkeypatch.setattr(parse, "_BLOCK_BYTES", 128 << 10)
    raw = gzip.open(H100 / "llama1b_prefill_eager_b1.json.gz").read()
    i = raw.index(b'"ph"', len(raw) // 2)
    for name, insert in (("at.json", b"@@@"), ("brace.json.gz", b"}")):
        p = tmp_path / name
        data = raw[:i] + insert + raw[i:]
        p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        with pytest.raises(InputError, match="malformed JSON near byte") as exc:
            load_trace(p)
        offset = int(str(exc.value).split("near byte ")[1].split()[0])
        assert abs(offset - i) < 64, (offset, i)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such trace file"):
        load_trace(tmp_path / "nope.json.gz")
    with pytest.raises(InputError, match="directory"):
        load_trace(tmp_path)


def test_malformed_event_inside_a_valid_json(tmp_path):
    p = tmp_path / "bad_event.json"
    p.write_text(json.dumps({"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7}, 5]}))
    with pytest.raises(InputError, match="not a PyTorch profiler trace"):
        load_trace(p)
