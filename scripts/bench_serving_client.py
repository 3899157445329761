#!/usr/bin/env python
"""How much load one perfbench client process can generate (a benchmark, not a timed test).

Runs perfbench's load generator and HTTP client (perfbench.serving) against a loopback server
(127.0.0.1) that answers at once: a minimal HTTP/1.1 keep-alive server on raw asyncio, in its own
process, pinned to another core than the client where the machine has two. For each mode it steps
the open-loop request rate up and reports the highest rate at which the client still keeps its
send lag p99 under --lag-ms (5 ms) and its event loop below a saturated core, with what it achieved:

- nonstream: `stream: false`, one JSON body per request (requests/s);
- stream: `stream: true`, --tokens SSE token chunks per response, all sent at once (tokens/s the
  client parsed and time-stamped).

    .venv/bin/python scripts/bench_serving_client.py [--modes nonstream,stream] [--duration 3]
        [--tokens 64] [--rates 500,1000,...] [--lag-ms 5] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_NONSTREAM = json.dumps({"id": "x", "object": "text_completion", "choices": [
    {"text": "hello world", "index": 0, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 2}}).encode()


def _stream_body(n: int) -> bytes:
    chunk = b'data: {"id":"x","object":"text_completion","choices":[{"text":" tok","index":0,"finish_reason":null}]}\n\n'
    end = (b'data: {"id":"x","object":"text_completion","choices":[{"text":"","index":0,"finish_reason":"length"}],'
           b'"usage":{"prompt_tokens":8,"completion_tokens":%d}}\n\ndata: [DONE]\n\n' % n)
    return chunk * n + end


class _Http(asyncio.Protocol):
    stream_body = b""

    def connection_made(self, transport):
        self.t, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            i = head.find(b"content-length:")
            n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < head_end + 4 + n:
                return
            body = self.buf[head_end + 4:head_end + 4 + n]
            self.buf = self.buf[head_end + 4 + n:]
            if b'"stream":true' in body:
                out, ctype = self.stream_body, b"text/event-stream"
            else:
                out, ctype = _NONSTREAM, b"application/json"
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (ctype, len(out), out))


def serve(port: int, tokens: int) -> None:
    _Http.stream_body = _stream_body(tokens)
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(_Http, "127.0.0.1", port, backlog=4096))
    print("ready", flush=True)
    loop.run_until_complete(srv.serve_forever())


def _pin(cpu: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})
    except (AttributeError, OSError):
        pass


def measure(url: str, mode: str, rate: float, duration: float, tokens: int, lag_ms: float,
            processes: int = 1) -> dict:
    from perfbench.serving import ClientConfig, LoadPlan, run_load
    from perfbench.serving.stats import point_fields

    cfg = ClientConfig(base_url=url, api="openai-completions", path="/v1/completions", stream=mode == "stream",
                       max_tokens=tokens, timeout_s=30, first_token_timeout_s=10)
    plan = LoadPlan(mode="open", rate_rps=rate, n_requests=None, duration_s=duration, seed=0,
                    warmup=int(rate * 0.2))
    res = run_load(cfg, plan, [("p", "hello")], processes=processes)
    f = point_fields(plan, res, {}, send_lag_limit_s=lag_ms / 1e3, cpu_limit=0.95)
    toks = sum(len(r.token_times_s) for r in res.records if r.role == "measured" and r.status == "ok")
    win = (f["n_requests"] - f["n_failed"]) / f["requests_per_s"] if f["requests_per_s"] else None
    return {"mode": mode, "target_rps": rate, "achieved_rps": round(f["achieved_rate_rps"] or 0, 1),
            "ok_rps": round(f["requests_per_s"] or 0, 1),
            "stream_tokens_per_s": round(toks / win) if win and mode == "stream" else None,
            "send_lag_p99_ms": round((f["send_lag_p99_s"] or 0) * 1e3, 2),
            "e2e_p50_ms": round((f["e2e_p50_s"] or 0) * 1e3, 2), "client_cpu": round(f["client_cpu_share"], 2),
            "failed": f["n_failed"], "valid": f["point_valid"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="nonstream,stream")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rates", default=None, help="comma list; default: a ladder per mode")
    ap.add_argument("--lag-ms", type=float, default=5.0)
    ap.add_argument("--processes", type=int, default=1, help="client processes (load.client_processes)")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        _pin(1)
        serve(a.serve, a.tokens)
        return
    from perfbench.serving.server import free_port

    port = free_port()
    srv = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--tokens", str(a.tokens)],
                           stdout=subprocess.PIPE, text=True)
    try:
        srv.stdout.readline()
        _pin(0)
        url = f"http://127.0.0.1:{port}"
        ladders = {"nonstream": [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000],
                   "stream": [400, 800, 1200, 1600, 2000, 2500, 3000]}
        best = {}
        for mode in a.modes.split(","):
            rates = [float(x) for x in a.rates.split(",")] if a.rates else ladders[mode]
            for rate in rates:
                r = measure(url, mode, rate, a.duration, a.tokens, a.lag_ms, a.processes)
                print(json.dumps(r), flush=True)
                ok = r["valid"] and not r["failed"] and r["achieved_rps"] >= 0.95 * rate
                if ok:
                    best[mode] = r
                else:
                    break
        print("highest sustained (send lag p99 < %g ms, client below a saturated core, no failures):" % a.lag_ms)
        for mode, r in best.items():
            what = (f"{r['stream_tokens_per_s']:,} streamed tokens/s ({r['ok_rps']:,} req/s x {a.tokens} tokens)"
                    if mode == "stream" else f"{r['ok_rps']:,} requests/s")
            print(f"  {mode}: {what}; send lag p99 {r['send_lag_p99_ms']} ms, client CPU {r['client_cpu']:.0%}")
    finally:
        srv.terminate()
        srv.wait(10)


if __name__ == "__main__":
    main()
