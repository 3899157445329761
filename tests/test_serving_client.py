"""Serving: the client, the load generator and the parsers, against a loopback fault server.

Each fault of the issue is a failed request with its reason, and the rest of the load point goes on.
"""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp", reason="the serving extra: pip install 'perfbench[serving]'")

from perfbench.serving import ClientConfig, LoadPlan, run_load  # noqa: E402
from perfbench.serving.loadgen import schedule  # noqa: E402
from perfbench.serving.protocols import Parser, ProtocolError, server_summary  # noqa: E402
from perfbench.serving.server import metrics_delta  # noqa: E402
from perfbench.serving.stats import point_fields  # noqa: E402
from tests.serving_fakes import ThreadedServer  # noqa: E402


@pytest.fixture(scope="module")
def fake():
    s = ThreadedServer()
    yield s
    s.close()


def _run(fake, mode: str, plan: LoadPlan | None = None, **kw):
    cfg = ClientConfig(base_url=f"{fake.url}/{mode}", api="openai-completions", path="/v1/completions",
                       max_tokens=kw.pop("max_tokens", 5), first_token_timeout_s=kw.pop("first_token_timeout_s", 2.0),
                       **kw)
    return run_load(cfg, plan or LoadPlan(mode="closed", concurrency=2, n_requests=4), [("p1", "hello")])


@pytest.mark.parametrize("mode, reason", [
    ("drop", "connection dropped mid-stream"),
    ("http500", "HTTP 500: internal error: boom"),
    ("http429", "HTTP 429"),
    ("malformed", "malformed response: malformed JSON"),
    ("slow", "timeout: no first token within 1 s"),
])
def test_each_fault_is_a_failed_request_with_its_reason(fake, mode, reason):
    res = _run(fake, mode, first_token_timeout_s=1.0)
    assert len(res.records) == 4  # every request ran: the point went on
    for r in res.records:
        assert r.status == "failed" and reason in r.error, r.error
        assert r.done_s is not None and r.sent_s is not None
    fields = point_fields(LoadPlan(mode="closed", concurrency=2, n_requests=4), res, {},
                          send_lag_limit_s=1, cpu_limit=1)
    assert fields["n_failed"] == 4 and fields["n_requests"] == 4 and fields["ttft_p50_s"] is None


def test_a_connection_refused_fails_each_request_and_the_point_goes_on():
    from perfbench.serving.server import free_port

    cfg = ClientConfig(base_url=f"http://127.0.0.1:{free_port()}", api="openai-completions", path="/v1/completions")
    res = run_load(cfg, LoadPlan(mode="closed", concurrency=2, n_requests=3), [("p", "x")])
    assert [r.status for r in res.records] == ["failed"] * 3
    assert all("cannot connect" in r.error for r in res.records)


def test_ttft_at_the_first_chunk_with_a_token_not_an_empty_one(fake):
    res = _run(fake, "empty-first", LoadPlan(mode="closed", concurrency=1, n_requests=2))
    for r in res.records:
        assert r.status == "ok"
        assert r.first_token_s - r.sent_s >= 0.045  # the empty chunk came 50 ms before the first token
        assert len(r.token_times_s) == 5


def test_a_2_mib_sse_line_streams_through(fake):
    res = _run(fake, "longline", LoadPlan(mode="closed", concurrency=1, n_requests=1))
    (r,) = res.records
    assert r.status == "ok" and len(r.text) > 2 << 20 and len(r.token_times_s) == 5


def test_usage_from_the_server_is_the_token_count_and_says_so(fake):
    res = _run(fake, "usage", LoadPlan(mode="closed", concurrency=1, n_requests=1), max_tokens=6)
    (r,) = res.records
    assert (r.output_tokens, r.output_tokens_source) == (6, "server-usage")
    assert (r.input_tokens, r.input_tokens_source) == (7, "server-usage")


def test_a_non_streamed_response_is_one_token_time_and_its_usage(fake):
    res = _run(fake, "ok", LoadPlan(mode="closed", concurrency=2, n_requests=3), stream=False, max_tokens=9)
    for r in res.records:
        assert r.status == "ok" and r.first_token_s == r.done_s and (r.output_tokens, r.input_tokens) == (9, 5)


def test_closed_loop_keeps_concurrency_and_e2e_runs_from_the_scheduled_time(fake):
    plan = LoadPlan(mode="closed", concurrency=4, n_requests=20, warmup=2, cooldown=2)
    res = _run(fake, "ok", plan, max_tokens=4)
    assert len(res.records) == 20 and all(r.status == "ok" for r in res.records)
    assert [r.role for r in sorted(res.records, key=lambda r: r.index)].count("measured") == 16
    f = point_fields(plan, res, {"ttft_ms": 10_000, "tpot_ms": None, "e2e_ms": 10_000},
                     send_lag_limit_s=0.05, cpu_limit=1.0)
    assert f["n_requests"] == 16 and f["goodput_rps"] == pytest.approx(f["requests_per_s"])
    assert f["e2e_p50_s"] >= f["ttft_p50_s"] > 0 and f["itl_p50_s"] > 0 and f["tpot_p50_s"] > 0
    assert f["load_point"] == "c4" and f["point_valid"] is True
    assert all(r.e2e_s >= r.done_s - r.sent_s for r in res.records)


def test_the_client_holds_up_at_a_concurrency_of_256(fake):
    plan = LoadPlan(mode="closed", concurrency=256, n_requests=512)
    res = _run(fake, "ok", plan, max_tokens=2)
    assert len(res.records) == 512 and all(r.status == "ok" for r in res.records)


def test_slo_limits_that_nobody_meets_give_zero_goodput(fake):
    plan = LoadPlan(mode="closed", concurrency=2, n_requests=4)
    res = _run(fake, "ok", plan)
    f = point_fields(plan, res, {"ttft_ms": 1e-6}, send_lag_limit_s=1, cpu_limit=1)
    assert f["goodput_rps"] == 0 and f["requests_per_s"] > 0


def test_open_loop_achieves_its_rate_and_client_queueing_counts_in_latency(fake):
    plan = LoadPlan(mode="open", rate_rps=100, n_requests=60, seed=3)
    res = _run(fake, "ok", plan, max_tokens=2)
    f = point_fields(plan, res, {}, send_lag_limit_s=0.05, cpu_limit=1.0)
    assert f["achieved_rate_rps"] == pytest.approx(res.scheduled_rate_rps, rel=0.05)
    assert f["send_lag_p99_s"] < 0.02
    # a cap of 1 in flight: requests wait for the slot, and that wait is in E2E (not hidden)
    capped = LoadPlan(mode="open", rate_rps=400, concurrency=1, n_requests=20)
    res = _run(fake, "ok", capped, max_tokens=3)
    waits = [r.ready_s - r.scheduled_s for r in res.records]
    assert max(waits) > 0.005
    assert all(r.e2e_s >= r.done_s - r.sent_s + (r.ready_s - r.scheduled_s) - 1e-9 for r in res.records)


def test_a_client_that_lags_is_marked_invalid(fake):
    plan = LoadPlan(mode="closed", concurrency=1, n_requests=3)
    res = _run(fake, "ok", plan)
    f = point_fields(plan, res, {}, send_lag_limit_s=1e-9, cpu_limit=1e-9)
    assert f["point_valid"] is False
    assert "send lag" in f["invalid_reason"] and "of a core" in f["invalid_reason"]


def test_a_load_spread_over_two_client_processes_keeps_the_schedule_and_the_concurrency(fake):
    cfg = ClientConfig(base_url=f"{fake.url}/ok", api="openai-completions", path="/v1/completions", max_tokens=3)
    plan = LoadPlan(mode="open", rate_rps=150, n_requests=60, warmup=4, seed=2)
    res = run_load(cfg, plan, [("p", "x")], processes=2)
    assert [r.index for r in res.records] == list(range(60)) and all(r.status == "ok" for r in res.records)
    assert [r.role for r in res.records].count("warmup") == 4
    f = point_fields(plan, res, {}, send_lag_limit_s=0.05, cpu_limit=1.0)
    assert f["achieved_rate_rps"] == pytest.approx(res.scheduled_rate_rps, rel=0.1)
    closed = LoadPlan(mode="closed", concurrency=3, n_requests=12)
    res = run_load(cfg, closed, [("p", "x")], processes=2)
    assert sorted(r.index for r in res.records) == list(range(12)) and res.notes


def test_schedules_are_precomputed_deterministic_and_have_the_asked_mean_rate():
    a = schedule(10, n=2000, duration_s=None, seed=1)
    assert a == schedule(10, n=2000, duration_s=None, seed=1) and a[0] == 0.0
    assert (len(a) - 1) / a[-1] == pytest.approx(10, rel=0.06)
    g = schedule(10, n=2000, duration_s=None, arrival="gamma", burstiness=0.25, seed=1)
    gaps = [b - x for x, b in zip(g, g[1:])]
    mean = sum(gaps) / len(gaps)
    cv2 = sum((x - mean) ** 2 for x in gaps) / len(gaps) / mean ** 2
    assert mean == pytest.approx(0.1, rel=0.15) and cv2 == pytest.approx(4, rel=0.3)  # 1 / burstiness
    assert schedule(10, n=None, duration_s=1.0, seed=0)[-1] < 1.0


# -- recorded real response streams, in the servers' published formats ------------------------

OLLAMA_STREAM = b"""{"model":"llama3.2:1b","created_at":"2024-10-01T10:00:00.1Z","response":"The","done":false}
{"model":"llama3.2:1b","created_at":"2024-10-01T10:00:00.2Z","response":" sky","done":false}
{"model":"llama3.2:1b","created_at":"2024-10-01T10:00:00.3Z","response":"","done":true,"done_reason":"length","context":[1,2,3],"total_duration":1234567890,"load_duration":12345678,"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":2,"eval_duration":259000000}
"""
LLAMA_NATIVE_STREAM = b"""data: {"content":"Hello","stop":false,"id_slot":0,"multimodal":false,"index":0}

data: {"content":" world","stop":false,"id_slot":0,"multimodal":false,"index":0}

data: {"content":"","id_slot":0,"stop":true,"model":"gpt-3.5-turbo","tokens_predicted":2,"tokens_evaluated":9,"generation_settings":{"n_predict":2},"prompt":"Hi","has_new_line":false,"truncated":false,"stop_type":"limit","stopping_word":"","tokens_cached":10,"timings":{"prompt_n":9,"prompt_ms":12.5,"prompt_per_token_ms":1.38,"prompt_per_second":720.0,"predicted_n":2,"predicted_ms":20.0,"predicted_per_token_ms":10.0,"predicted_per_second":100.0}}

"""
CHAT_STREAM = b"""data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}

data: [DONE]

"""


def _feed(api: str, raw: bytes) -> tuple[Parser, list[int]]:
    p = Parser(api)
    return p, [p.line(ln) for ln in raw.split(b"\n")]


def test_ollama_native_stream_gives_its_own_counters():
    p, marks = _feed("ollama", OLLAMA_STREAM)
    assert sum(marks) == 2 and p.p.done and p.p.text == "The sky"
    assert p.p.engine_completion == 2 and p.p.engine_prompt == 26
    assert p.p.server_timings["eval_duration"] == 259000000 and p.p.server_timings["load_duration"] == 12345678
    s = server_summary("ollama", [p.p.server_timings])
    assert s["tg_tokens_per_s"] == pytest.approx(2 / 0.259) and s["pp_tokens_per_s"] == pytest.approx(26 / 0.130079)


def test_llama_cpp_native_stream_gives_its_timings():
    p, marks = _feed("llama-native", LLAMA_NATIVE_STREAM)
    assert sum(marks) == 2 and p.p.done and p.p.finish_reason == "limit"
    assert (p.p.engine_prompt, p.p.engine_completion) == (9, 2)
    assert server_summary("llama-native", [p.p.server_timings])["tg_tokens_per_s"] == pytest.approx(100.0)


def test_chat_stream_role_chunk_is_not_a_token_and_usage_is_read():
    p, marks = _feed("openai-chat", CHAT_STREAM)
    assert marks.count(1) == 1 and p.p.done and (p.p.usage_prompt, p.p.usage_completion) == (4, 1)


@pytest.mark.parametrize("api, path, stream", [("ollama", "/api/generate", OLLAMA_STREAM),
                                               ("llama-native", "/completion", LLAMA_NATIVE_STREAM)])
def test_native_apis_through_the_client_keep_the_servers_timings(fake, api, path, stream):
    fake.fake.recorded[path] = stream
    cfg = ClientConfig(base_url=fake.url, api=api, path=path, max_tokens=2)
    (r,) = run_load(cfg, LoadPlan(mode="closed", concurrency=1, n_requests=1), [("p", "x")]).records
    assert r.status == "ok" and len(r.token_times_s) == 2 and r.output_tokens_source == "engine-counters"
    assert r.output_tokens == 2 and r.server_timings and r.ttft_s > 0


def test_malformed_sse_lines_are_refused():
    for bad in (b"garbage without a field", b"data: {oops", b"data: [1, 2]"):
        with pytest.raises(ProtocolError):
            Parser("openai-completions").line(bad)
    assert Parser("openai-completions").line(b": keep-alive comment") == 0


def test_prometheus_counters_become_deltas():
    d = metrics_delta({"vllm:generation_tokens_total": 10.0}, {"vllm:generation_tokens_total": 42.0,
                                                               "vllm:num_requests_running": 3.0})
    assert d == {"vllm:generation_tokens_total": 32.0, "vllm:num_requests_running": 3.0}
