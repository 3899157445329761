"""The HTTP side of a serving benchmark: one request, timed as the client sees it.

aiohttp, with an unlimited connector (no client-side cap hides server queueing) and a large read
buffer. The body is read in whatever pieces arrive and split into lines here, so a very long SSE
line (a long response in one event) never overflows a line buffer. Every failure becomes the
request's `status: failed` with a reason; nothing raised here stops a load point.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from perfbench.serving.protocols import Parser, ProtocolError, json_loads, request_body

#: Read buffer of the client (per connection): large, so long responses stream through.
READ_BUFSIZE = 1 << 20


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are seconds from the load point's start (t0)."""

    index: int
    prompt_id: str = ""
    role: str = "measured"  # warmup | measured | cooldown
    scheduled_s: float | None = None  # when the schedule (or a freed closed-loop slot) said to send
    ready_s: float | None = None  # when a concurrency slot was free (open loop with a cap)
    sent_s: float | None = None  # when the client really issued it
    first_token_s: float | None = None  # first chunk carrying a token
    token_times_s: list[float] = field(default_factory=list)  # every chunk carrying a token
    done_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_source: str | None = None
    output_tokens_source: str | None = None
    status: str = "ok"
    error: str | None = None
    http_status: int | None = None
    server_timings: dict[str, Any] | None = None
    text: str = ""  # generated text (for a local tokenizer count; not stored)
    finish_reason: str | None = None

    def fail(self, why: str, now: float) -> None:
        self.status, self.error = "failed", why[:500]
        self.done_s = now

    @property
    def e2e_s(self) -> float | None:
        return None if self.done_s is None or self.scheduled_s is None else self.done_s - self.scheduled_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None or self.scheduled_s is None else self.first_token_s - self.scheduled_s


@dataclass
class ClientConfig:
    base_url: str
    api: str
    path: str
    model: str | None = None
    stream: bool = True
    ignore_eos: bool = True
    max_tokens: int = 64
    extra_body: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 120.0  # a whole request
    first_token_timeout_s: float = 60.0  # no byte (or no token) for this long: failed


class HttpClient:
    """Sends requests of one API over one aiohttp session; `t0` is the load point's start."""

    def __init__(self, cfg: ClientConfig):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + cfg.path
        self.t0 = time.perf_counter()
        self.session = None

    async def __aenter__(self) -> "HttpClient":
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s, sock_read=self.cfg.first_token_timeout_s,
                                        sock_connect=min(10.0, self.cfg.timeout_s))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None),
            timeout=timeout, read_bufsize=READ_BUFSIZE, auto_decompress=False, trust_env=False,
            headers={"Content-Type": "application/json"})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.session is not None:
            await self.session.close()

    def body(self, prompt: str) -> bytes:
        c = self.cfg
        return request_body(c.api, prompt=prompt, max_tokens=c.max_tokens, model=c.model, stream=c.stream,
                            ignore_eos=c.ignore_eos, extra=c.extra_body)

    async def send(self, rec: RequestRecord, body: bytes) -> None:
        """Issue one request and fill `rec`; never raises (except cancellation)."""
        import aiohttp

        clock, t0 = time.perf_counter, self.t0
        parser = Parser(self.cfg.api)
        got_bytes = False
        rec.sent_s = clock() - t0
        deadline_first = rec.sent_s + self.cfg.first_token_timeout_s
        try:
            async with self.session.post(self.url, data=body) as resp:
                rec.http_status = resp.status
                if resp.status >= 400:
                    text = (await resp.content.read(2000)).decode(errors="replace")
                    rec.fail(f"HTTP {resp.status}: {' '.join(text.split())[:300]}", clock() - t0)
                    return
                if not self.cfg.stream:
                    raw = await resp.read()
                    now = clock() - t0
                    n = parser.obj(json_loads(raw))
                    if n:
                        rec.first_token_s = now
                        rec.token_times_s.append(now)
                    parser.p.done = True
                else:
                    buf = b""
                    tokens = rec.token_times_s
                    async for piece in resp.content.iter_any():
                        now = clock() - t0
                        got_bytes = True
                        buf += piece
                        if b"\n" not in piece:
                            continue
                        *lines, buf = buf.split(b"\n")
                        for ln in lines:
                            if parser.line(ln):
                                tokens.append(now)
                        if rec.first_token_s is None:
                            if tokens:
                                rec.first_token_s = tokens[0]
                            elif now > deadline_first:
                                rec.fail(f"no token within first_token_timeout_s "
                                         f"({self.cfg.first_token_timeout_s:g} s)", now)
                                return
                    if buf.strip() and parser.line(buf):
                        tokens.append(clock() - t0)
                        rec.first_token_s = rec.first_token_s or tokens[0]
                    now = clock() - t0
        except ProtocolError as exc:
            rec.fail(f"malformed response: {exc}", clock() - t0)
            return
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            now = clock() - t0
            if rec.first_token_s is None:
                rec.fail(f"timeout: no first token within {self.cfg.first_token_timeout_s:g} s "
                         f"(or request over timeout_s {self.cfg.timeout_s:g} s)", now)
            else:
                rec.fail(f"timeout: stalled mid-stream or over timeout_s ({self.cfg.timeout_s:g} s)", now)
            return
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionResetError) as exc:
            where = "mid-stream" if (got_bytes or rec.http_status) else "before a response"
            rec.fail(f"connection dropped {where}: {type(exc).__name__}: {exc}", clock() - t0)
            return
        except aiohttp.ClientConnectorError as exc:
            rec.fail(f"cannot connect: {exc}", clock() - t0)
            return
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            rec.fail(f"{type(exc).__name__}: {exc}", clock() - t0)
            return
        p = parser.p
        rec.done_s = now
        rec.text, rec.finish_reason, rec.server_timings = p.text, p.finish_reason, p.server_timings
        if p.error:
            rec.fail(f"server error in the stream: {p.error}", now)
            return
        if self.cfg.stream and not p.done:
            rec.fail("stream ended without its end marker (connection closed early?)", now)
            return
        _counts(rec, p)


def _counts(rec: RequestRecord, p: Any) -> None:
    """Token counts and where they came from: the server's usage, else its own counters."""
    if p.usage_completion is not None:
        rec.output_tokens, rec.output_tokens_source = p.usage_completion, "server-usage"
    elif p.engine_completion is not None:
        rec.output_tokens, rec.output_tokens_source = p.engine_completion, "engine-counters"
    if p.usage_prompt is not None:
        rec.input_tokens, rec.input_tokens_source = p.usage_prompt, "server-usage"
    elif p.engine_prompt is not None:
        rec.input_tokens, rec.input_tokens_source = p.engine_prompt, "engine-counters"
