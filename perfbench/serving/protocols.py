"""Wire formats of the servers perfbench measures: request bodies and streamed-response parsers.

Kept apart from the load generator (perfbench.serving.loadgen) and the HTTP client
(perfbench.serving.client): a parser is fed raw lines and says what each carried, so it is tested on
recorded real streams without a network.

APIs:
- `openai-completions` (`/v1/completions`) and `openai-chat` (`/v1/chat/completions`): Server-Sent
  Events, `data: {json}` lines, `data: [DONE]` at the end. vLLM, SGLang, llama.cpp's server,
  llamafile and Ollama's `/v1` speak it. Usage comes in a final chunk where the server honours
  `stream_options.include_usage` (vLLM, llama.cpp's C++ server).
- `ollama` (`/api/generate`): newline-delimited JSON; the last object (`done: true`) has the
  server's own counters: eval_count, eval_duration, prompt_eval_count, prompt_eval_duration,
  load_duration, total_duration (nanoseconds).
- `llama-native` (llama.cpp's `/completion`): SSE of `{"content": ..., "stop": false}`; the final
  event (`stop: true`) has `timings` (prompt_n, prompt_ms, predicted_n, predicted_ms, ...) and
  `tokens_predicted` / `tokens_evaluated`.

A chunk "carries a token" when it holds non-empty generated text: TTFT is taken there, never at an
empty chunk (a role-only chat delta, a keep-alive comment, an empty final chunk).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

APIS = ("openai-completions", "openai-chat", "ollama", "llama-native")
#: Default endpoint path of each API.
PATHS = {"openai-completions": "/v1/completions", "openai-chat": "/v1/chat/completions",
         "ollama": "/api/generate", "llama-native": "/completion"}

try:  # orjson is a core dependency (trace parsing); json is the fallback
    import orjson

    json_loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover
    json_loads = json.loads

    def _dumps(o: Any) -> bytes:
        return json.dumps(o).encode()


class ProtocolError(ValueError):
    """The server sent something this API does not allow (a malformed SSE line, bad JSON)."""


@dataclass
class Parsed:
    """What a response told us, accumulated over its lines."""

    text_parts: list[str] = field(default_factory=list)
    done: bool = False
    finish_reason: str | None = None
    usage_prompt: int | None = None
    usage_completion: int | None = None
    engine_prompt: int | None = None  # the server's own token counters (native APIs)
    engine_completion: int | None = None
    server_timings: dict[str, Any] | None = None
    error: str | None = None  # an error object sent inside the stream

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def request_body(api: str, *, prompt: str, max_tokens: int, model: str | None, stream: bool,
                 ignore_eos: bool, extra: dict[str, Any] | None = None) -> bytes:
    """The JSON body of one request (greedy: temperature 0)."""
    if api == "openai-completions":
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    elif api == "openai-chat":
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0, "stream": stream}
    elif api == "ollama":
        body = {"prompt": prompt, "stream": stream, "raw": True,
                "options": {"num_predict": max_tokens, "temperature": 0}}
    elif api == "llama-native":
        body = {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "stream": stream,
                "cache_prompt": False}
    else:
        raise ValueError(f"unknown api {api!r}; allowed: {', '.join(APIS)}")
    if api.startswith("openai") and stream:
        body["stream_options"] = {"include_usage": True}
    if ignore_eos and api != "ollama":  # vLLM, SGLang and llama.cpp honour it; Ollama has no such option
        body["ignore_eos"] = True
    if model:
        body["model"] = model
    if extra:
        body.update(extra)
    return _dumps(body)


class Parser:
    """Feed it one line at a time (without the newline); `line()` returns how many chunks carrying
    a token that line held (0 or 1). Raises ProtocolError on a malformed line."""

    def __init__(self, api: str):
        self.api = api
        self.p = Parsed()
        self._sse = api != "ollama"

    def line(self, raw: bytes) -> int:
        if self.p.done and not raw.strip():
            return 0
        if self._sse:
            raw = raw.rstrip(b"\r")
            if not raw or raw.startswith(b":"):
                return 0  # event separator, or an SSE comment (keep-alive)
            if raw.startswith(b"data:"):
                payload = raw[5:].strip()
            elif raw.split(b":", 1)[0] in (b"event", b"id", b"retry"):
                return 0
            else:
                raise ProtocolError(f"malformed SSE line: {raw[:80]!r}")
            if payload == b"[DONE]":
                self.p.done = True
                return 0
        else:
            payload = raw.strip()
            if not payload:
                return 0
        try:
            obj = json_loads(payload)
        except ValueError:
            raise ProtocolError(f"malformed JSON in the stream: {payload[:80]!r}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"expected a JSON object in the stream, got {payload[:80]!r}")
        return self.obj(obj)

    def obj(self, obj: dict[str, Any]) -> int:
        """One decoded object (a streamed chunk, or a whole non-streamed response)."""
        if "error" in obj and obj["error"]:
            err = obj["error"]
            self.p.error = str(err.get("message", err) if isinstance(err, dict) else err)[:500]
            return 0
        return getattr(self, "_" + self.api.replace("-", "_"))(obj)

    def _text(self, text: Any) -> int:
        if isinstance(text, str) and text:
            self.p.text_parts.append(text)
            return 1
        return 0

    def _usage(self, obj: dict[str, Any]) -> None:
        u = obj.get("usage")
        if isinstance(u, dict):
            self.p.usage_prompt = _int(u.get("prompt_tokens"))
            self.p.usage_completion = _int(u.get("completion_tokens"))

    def _openai_completions(self, obj: dict[str, Any]) -> int:
        self._usage(obj)
        n = 0
        for ch in obj.get("choices") or []:
            n += self._text(ch.get("text"))
            self.p.finish_reason = ch.get("finish_reason") or self.p.finish_reason
        self._llama_timings(obj)
        return min(n, 1)

    def _openai_chat(self, obj: dict[str, Any]) -> int:
        self._usage(obj)
        n = 0
        for ch in obj.get("choices") or []:
            d = ch.get("delta") or ch.get("message") or {}
            n += self._text(d.get("content")) or self._text(d.get("reasoning_content"))
            self.p.finish_reason = ch.get("finish_reason") or self.p.finish_reason
        self._llama_timings(obj)
        return min(n, 1)

    def _llama_timings(self, obj: dict[str, Any]) -> None:
        """llama.cpp's server adds its `timings` object to the last OpenAI chunk too."""
        t = obj.get("timings")
        if isinstance(t, dict):
            self.p.server_timings = {k: v for k, v in t.items() if isinstance(v, (int, float))}
            self.p.engine_prompt = _int(t.get("prompt_n"))
            self.p.engine_completion = _int(t.get("predicted_n"))

    def _ollama(self, obj: dict[str, Any]) -> int:
        n = self._text(obj.get("response"))
        if obj.get("done"):
            self.p.done = True
            self.p.finish_reason = obj.get("done_reason")
            keys = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                    "eval_count", "eval_duration")
            self.p.server_timings = {k: obj[k] for k in keys if isinstance(obj.get(k), (int, float))}
            self.p.engine_prompt = _int(obj.get("prompt_eval_count"))
            self.p.engine_completion = _int(obj.get("eval_count"))
        return n

    def _llama_native(self, obj: dict[str, Any]) -> int:
        n = self._text(obj.get("content"))
        if obj.get("stop"):
            self.p.done = True
            self.p.finish_reason = obj.get("stop_type") or ("length" if obj.get("stopped_limit") else "stop")
            self._llama_timings(obj)
            self.p.engine_completion = _int(obj.get("tokens_predicted")) or self.p.engine_completion
            self.p.engine_prompt = _int(obj.get("tokens_evaluated")) or self.p.engine_prompt
        return n


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def server_summary(api: str, timings: list[dict[str, Any]]) -> dict[str, Any]:
    """The server's own view over a load point, from per-request timings: median tokens/s by its
    counters (Ollama: eval_count / eval_duration; llama.cpp: predicted_n / predicted_ms)."""
    import statistics

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    if not timings:
        return {}
    if api == "ollama":
        tg = [t["eval_count"] / (t["eval_duration"] / 1e9) for t in timings
              if t.get("eval_count") and t.get("eval_duration")]
        pp = [t["prompt_eval_count"] / (t["prompt_eval_duration"] / 1e9) for t in timings
              if t.get("prompt_eval_count") and t.get("prompt_eval_duration")]
        load = [t["load_duration"] / 1e9 for t in timings if t.get("load_duration") is not None]
        return {"source": "ollama final chunk", "tg_tokens_per_s": med(tg), "pp_tokens_per_s": med(pp),
                "load_duration_s": med(load), "n": len(timings)}
    tg = [t["predicted_n"] / (t["predicted_ms"] / 1e3) for t in timings
          if t.get("predicted_n") and t.get("predicted_ms")]
    pp = [t["prompt_n"] / (t["prompt_ms"] / 1e3) for t in timings if t.get("prompt_n") and t.get("prompt_ms")]
    return {"source": "llama.cpp timings", "tg_tokens_per_s": med(tg), "pp_tokens_per_s": med(pp),
            "n": len(timings)}
