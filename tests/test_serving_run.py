"""Serving end to end: the store (migration, per-request rows), spec validation, the real
llama.cpp server (llama-cpp-python's, on the tiny GGUF), a server that dies mid-run, Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from perfbench.errors import SpecError
from perfbench.spec import parse_spec
from perfbench.store import ResultsStore
from tests.conftest import FIXTURES, REPO, as_if_in_a_terminal, run_cli

pytest.importorskip("aiohttp", reason="the serving extra: pip install 'perfbench[serving]'")


def serve_spec(url: str, **load) -> dict:
    return {"name": "serve-test", "model": "tiny-llama", "phase": "serve", "device": "cpu",
            "backend": {"name": "openai-http", "url": url},
            "load": {"concurrency": [1, 2], "requests": 4, "max_tokens": 4, **load}}


# -- store -------------------------------------------------------------------------------------

def test_the_f74d606_store_upgrades_to_load_points_and_requests(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "stores" / "f74d606" / "perfbench.sqlite", path)
    with ResultsStore(path) as st:
        runs = st.list_runs()
        before = sum(len(st.get_run(r["run_id"])["points"]) for r in runs)
        rid = runs[0]["run_id"]
        p = {"batch_size": 1, "seq_len": 0, "new_tokens": 4, "status": "ok"}
        st.add_point(rid, {**p, "load_point": "c1"}, requests=[{"idx": 0, "role": "measured", "status": "ok",
                                                                "token_times_s": [0.1, 0.2]}])
        st.add_point(rid, {**p, "load_point": "r2"})  # same batch/seq/new, another load point
        assert st.get_requests(rid)[0]["token_times_s"] == [0.1, 0.2]
        assert sum(len(st.get_run(r["run_id"])["points"]) for r in runs) == before + 2
    with sqlite3.connect(path) as c:
        sql = c.execute("SELECT sql FROM sqlite_master WHERE name='points'").fetchone()[0]
        assert "UNIQUE (run_id, batch_size, seq_len, new_tokens, load_point)" in sql
        fresh = tmp_path / "fresh.sqlite"
        with ResultsStore(fresh):
            pass
        with sqlite3.connect(fresh) as f:
            for table in ("points", "requests"):
                assert ({r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                        == {r[1] for r in f.execute(f"PRAGMA table_info({table})")}), table
        with pytest.raises(sqlite3.IntegrityError):  # identity still enforced for ordinary points
            c.execute("INSERT INTO points(run_id, schema_version, batch_size, seq_len, new_tokens, status, "
                      "created_at) SELECT run_id, 2, batch_size, seq_len, new_tokens, 'ok', 'x' FROM points "
                      "WHERE load_point='' LIMIT 1")


def test_serve_specs_are_validated():
    with pytest.raises(SpecError, match="exactly one of concurrency"):
        parse_spec(serve_spec("http://127.0.0.1:1", rates_rps=[1]))
    with pytest.raises(SpecError, match="phase serve needs a load"):
        parse_spec({k: v for k, v in serve_spec("http://127.0.0.1:1").items() if k != "load"})
    with pytest.raises(SpecError, match="backend.url"):
        parse_spec(serve_spec("ftp://x"))
    with pytest.raises(SpecError, match="does not run phase 'serve'"):
        parse_spec({**serve_spec("http://127.0.0.1:1"), "backend": {"name": "torch"}})
    with pytest.raises(SpecError, match="unknown hardware profile"):
        parse_spec({**serve_spec("http://127.0.0.1:1"), "backend": {"name": "openai-http", "hardware": "nope"}})
    s = parse_spec({**serve_spec("http://127.0.0.1:1"), "backend": {"name": "openai-http", "hardware": "h100-sxm",
                                                                    "url": "http://127.0.0.1:1"}})
    assert [p.load.label for p in s.points()] == ["c1", "c2"]
    s = parse_spec(serve_spec("http://127.0.0.1:1", concurrency=None, rates_rps=[2.5], max_concurrency=8,
                              arrival="gamma", burstiness=0.5))
    assert [p.load.label for p in s.points()] == ["r2.5/c8/gamma0.5"] and s.points()[0].batch_size == 8


def test_a_sweep_may_vary_concurrency_rate_prompts_and_server_settings(write_spec):
    from perfbench.sweep.spec import parse_sweep

    base = serve_spec("http://127.0.0.1:0", concurrency=[1])
    base["backend"]["server"] = {"command": ["{python}", "-m", "llama_cpp.server", "--model", "{gguf}"]}
    sw = parse_sweep({"name": "serve-sweep", "workload": str(write_spec(base)), "method": "grid",
                      "metric": {"name": "goodput_rps", "goal": "maximize"},
                      "parameters": {"load.concurrency": {"values": [1, 4]},
                                     "load.prompts": {"values": ["short_question", "code"]},
                                     "backend.server_args": {"values": ["--n_threads 1", "--n_threads 2"]}}})
    assert len(sw.spec.parameters) == 3
    s = parse_spec({**base, "load": {**base["load"], "concurrency": 4}})  # a sweep sets a scalar
    assert [p.load.label for p in s.points()] == ["c4"]


# -- the real llama.cpp server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the tiny GGUF, once for the module."""
    pytest.importorskip("llama_cpp.server.app", reason="the serving extra: pip install 'perfbench[serving]'")
    from perfbench.models import PRESETS
    from perfbench.models.gguf_tiny import ensure_tiny_gguf
    from perfbench.runner import cache_dir
    from perfbench.serving.server import ManagedServer, free_port

    gguf = ensure_tiny_gguf(PRESETS["tiny-llama"], 0, cache_dir())
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    srv = ManagedServer([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                         "--port", str(port), "--n_ctx", "1024", "--n_threads", "1",
                         "--interrupt_requests", "false"],
                        log_path=log, ready_url=f"http://127.0.0.1:{port}/v1/models", ready_timeout_s=90)
    srv.start()
    yield f"http://127.0.0.1:{port}"
    srv.stop()
    assert not srv.alive()


@pytest.mark.parametrize("api", ["openai-completions", "openai-chat"])
def test_real_llama_cpp_server_under_load(llama_server, api, write_spec, store_path):
    spec = serve_spec(llama_server, warmup_requests=1, slo={"ttft_ms": 60_000})
    spec["backend"]["api"] = api
    r = run_cli("run", str(write_spec(spec)), "--store", str(store_path), "-q", timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "TTFT" in r.stdout and "c2" in r.stdout
    with ResultsStore(store_path, create=False) as st:
        (run,) = st.list_runs()
        full = st.get_run(run["run_id"])
        reqs = st.get_requests(run["run_id"])
    pts = full["points"]
    assert [p["load_point"] for p in pts] == ["c1", "c2"] and all(p["status"] == "ok" for p in pts)
    for p in pts:
        assert p["n_requests"] == 3 and p["n_failed"] == 0
        assert p["ttft_p50_s"] > 0 and p["e2e_p99_s"] >= p["e2e_p50_s"] and p["output_tokens_per_s"] > 0
        assert 0 < p["goodput_rps"] <= p["requests_per_s"]  # a request with no token has no TTFT
        assert "local-tokenizer" in p["token_source"]
        # every response whole: a server that cuts streams short under concurrency shows up here
        assert p["output_tokens_mean"] >= 3, p["output_tokens_mean"]
    assert len(reqs) == 8 and {r["role"] for r in reqs} == {"warmup", "measured"}
    ok = [r for r in reqs if r["status"] == "ok"]
    assert len(ok) == 8 and all(r["scheduled_s"] <= r["sent_s"] <= r["done_s"] for r in ok)
    assert all(r["sent_s"] <= r["first_token_s"] <= r["done_s"] for r in ok if r["token_times_s"])
    assert all(r["input_tokens"] and r["output_tokens"] is not None for r in ok)
    assert "client's" in full["backend_info"]["hardware_note"]


def test_the_shipped_workload_starts_and_stops_its_server_and_keeps_its_log(tmp_path):
    store = tmp_path / "r.sqlite"
    r = run_cli("run", "workloads/serving-llama-cpp-tiny.yaml", "--store", str(store), "-q",
                "--set", "load.concurrency=[1,4]", "--set", "load.requests=6", "--set", "load.max_tokens=4",
                timeout=180)
    assert r.returncode == 0, r.stderr + r.stdout
    for col in ("TTFT", "TPOT", "ITL", "E2E", "tok/s", "goodput"):
        assert col in r.stdout
    with ResultsStore(store, create=False) as st:
        (run,) = st.list_runs()
        info = st.get_run(run["run_id"])["backend_info"]
        assert len(st.get_requests(run["run_id"])) == 12
    log = tmp_path / "server-logs" / f"{run['run_id']}.log"
    assert info["server_log"] == str(log) and "Uvicorn running" in log.read_text()
    port = info["server_command"][info["server_command"].index("--port") + 1]
    from perfbench.serving.server import http_get

    assert http_get(f"http://127.0.0.1:{port}/v1/models", timeout=1)[0] == 0  # stopped
    shown = run_cli("results", "show", run["run_id"], "--store", str(store))
    assert shown.returncode == 0 and "c4" in shown.stdout and "TTFT" in shown.stdout
    assert "server: http://127.0.0.1:" in shown.stdout and "client's" in shown.stdout
    shown = run_cli("results", "show", run["run_id"], "--store", str(store), "--format", "json")
    assert len(json.loads(shown.stdout)["requests"]) == 12


# -- a server that dies mid-run; Ctrl-C ------------------------------------------------------------

def _fake_server_spec(tmp_path, **load) -> dict:
    spec = serve_spec("http://127.0.0.1:0", **load)
    spec["backend"]["server"] = {"command": ["{python}", "-m", "tests.serving_fakes", "{port}"],
                                 "ready_timeout_s": 30, "env": {"PYTHONPATH": str(REPO)}}
    return spec


def test_a_server_that_dies_mid_run_fails_the_remaining_requests_and_the_run_goes_on(tmp_path, write_spec):
    from perfbench.runner import run_spec

    d = _fake_server_spec(tmp_path, concurrency=[1, 2], requests=6)
    d["backend"]["metrics_path"] = "/metrics"
    spec = parse_spec(d)
    with ResultsStore(tmp_path / "r.sqlite") as st:
        from perfbench.backends.openai_http import backend as mod

        real = mod.OpenAIHttpBackend.run_load

        def run_load_then_kill(self, point):
            if point.load.label == "c2":
                self.server.stop()  # the server is gone before this point's first request
            return real(self, point)

        mod.OpenAIHttpBackend.run_load = run_load_then_kill
        try:
            res = run_spec(spec, st)
        finally:
            mod.OpenAIHttpBackend.run_load = real
        run = st.get_run(res.run_id)
    assert res.status == "completed"
    c1, c2 = run["points"]
    assert c1["n_failed"] == 0 and c2["n_failed"] == 6 and c2["status"] == "ok"
    assert "exited" in c2["engine_timings"]["server_exited"]
    assert c1["engine_timings"]["metrics_delta"]["fake:tokens_total"] == 6 * 4  # Prometheus, over the point


def test_ctrl_c_keeps_every_finished_load_point(tmp_path, write_spec):
    store = tmp_path / "r.sqlite"
    # each point sends for 2 s; Ctrl-C lands while the second one runs
    path = write_spec(_fake_server_spec(tmp_path, concurrency=[1, 4], requests=100_000, duration_s=2.0,
                                        max_tokens=10))
    p = subprocess.Popen([sys.executable, "-m", "perfbench", "run", str(path), "--store", str(store), "-q"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_if_in_a_terminal)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            with sqlite3.connect(store) as c:
                if c.execute("SELECT count(*) FROM points").fetchone()[0] >= 1:
                    break
        except sqlite3.Error:
            pass
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    with ResultsStore(store, create=False) as st:
        (run,) = st.list_runs()
        full = st.get_run(run["run_id"])
        assert run["status"] == "interrupted"
        assert [pt["load_point"] for pt in full["points"]] == ["c1"]
        n = len(st.get_requests(run["run_id"]))
        assert n > 5 and full["points"][0]["n_requests"] == n


def test_a_load_point_that_raises_is_stored_failed_and_the_run_goes_on(tmp_path, monkeypatch):
    from perfbench.backends.openai_http import backend as mod
    from perfbench.runner import run_spec

    real = mod.OpenAIHttpBackend.run_load

    def flaky(self, point):
        if point.load.label == "c1":
            raise RuntimeError("client blew up")
        return real(self, point)

    monkeypatch.setattr(mod.OpenAIHttpBackend, "run_load", flaky)
    with ResultsStore(tmp_path / "r.sqlite") as st:
        res = run_spec(parse_spec(_fake_server_spec(tmp_path, concurrency=[1, 2], requests=4)), st)
        c1, c2 = st.get_run(res.run_id)["points"]
        assert len(st.get_requests(res.run_id)) == 4
    assert res.status == "completed" and "1 of 2 points failed" in res.reason
    assert (c1["status"], c1["load_point"]) == ("failed", "c1") and "client blew up" in c1["error"]
    assert c2["status"] == "ok" and c2["n_requests"] == 4
