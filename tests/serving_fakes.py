"""A loopback server for the serving tests that injects faults (127.0.0.1 only).

The first path segment picks the behaviour: `http://127.0.0.1:PORT/<mode>/v1/completions`.
Modes: ok, empty-first (empty chunks before the first token), drop (connection closed mid-stream),
http500, http429, malformed (a broken SSE line), slow (first byte after 3 s), longline (one 2 MiB
SSE event), usage (a final usage chunk), nostream-ok. Also `/v1/models` (readiness) and `/metrics`.

Run alone (a server that a test can kill mid-run): python -m tests.serving_fakes PORT
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading

from aiohttp import web

TOKEN_DELAY_S = 0.002
METRICS = b"""# HELP fake:tokens_total tokens
# TYPE fake:tokens_total counter
fake:tokens_total %d
fake:requests_running 0
"""


def _chunk(text: str, finish: str | None = None) -> bytes:
    obj = {"id": "cmpl-1", "object": "text_completion", "choices": [{"text": text, "index": 0,
                                                                       "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class FakeServer:
    def __init__(self) -> None:
        self.tokens = 0
        self.requests = 0
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/{mode}/v1/completions", self.completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/api/generate", self.replay)  # Ollama native, a recorded stream
        app.router.add_post("/completion", self.replay)  # llama.cpp native, a recorded stream
        self.app = app
        self.recorded: dict[str, bytes] = {}  # path -> the stream to replay (set by a test)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson" if "api" in request.path
                                           else "text/event-stream"})
        await resp.prepare(request)
        for line in self.recorded[request.path].splitlines(keepends=True):
            await resp.write(line)
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=METRICS % self.tokens, content_type="text/plain")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._completions(request)
        except (ConnectionResetError, asyncio.CancelledError):  # the client gave up: its side is tested
            return web.Response(status=499)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info.get("mode", "ok")
        body = await request.json()
        n = int(body.get("max_tokens", 8))
        self.requests += 1
        if mode == "http500":
            return web.Response(status=500, text="internal error: boom")
        if mode == "http429":
            return web.Response(status=429, text="too many requests")
        if mode == "slow":
            await asyncio.sleep(3)
        if not body.get("stream"):
            self.tokens += n
            return web.json_response({"choices": [{"text": "x" * n, "finish_reason": "length"}],
                                      "usage": {"prompt_tokens": 5, "completion_tokens": n}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if mode == "empty-first":
            await resp.write(b": keep-alive\n\n" + _chunk(""))
            await asyncio.sleep(0.05)
        for i in range(n):
            if mode == "drop" and i == 2:
                request.transport.close()  # mid-stream, chunked body unfinished
                return resp
            if mode == "malformed" and i == 1:
                await resp.write(b"data: {not json\n\n")
            if mode == "longline" and i == 0:
                await resp.write(_chunk("y" * (2 << 20)))
                self.tokens += 1
                continue
            await resp.write(_chunk(f" t{i}"))
            self.tokens += 1
            await asyncio.sleep(TOKEN_DELAY_S)
        await resp.write(_chunk("", "length"))
        if mode == "usage":
            await resp.write(b"data: " + json.dumps({"choices": [], "usage": {
                "prompt_tokens": 7, "completion_tokens": n}}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """The fake server on its own event loop in a daemon thread; `url` is its base."""

    def __init__(self) -> None:
        self.fake = FakeServer()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = web.AppRunner(self.fake.app, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def close(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


if __name__ == "__main__":
    web.run_app(FakeServer().app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=lambda *a: print("fake server ready", flush=True))
