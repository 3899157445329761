"""Config of the serving backend (no aiohttp import: specs validate fast and anywhere)."""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from perfbench.backends.base import BackendConfig, Capabilities, SpecFacts
from perfbench.serving.protocols import APIS, PATHS

Api = Literal["openai-completions", "openai-chat", "ollama", "llama-native"]

#: Each server's defaults: where it listens, which API, where its own timings come from.
PRESETS: dict[str, dict[str, Any]] = {
    "ollama": {"url": "http://127.0.0.1:11434", "api": "ollama", "ready_path": "/api/version",
               "metrics_path": "", "timings": "the final NDJSON chunk: eval_count, eval_duration, "
                                               "prompt_eval_duration, load_duration (ns)"},
    "llamafile": {"url": "http://127.0.0.1:8080", "api": "openai-completions", "ready_path": "/v1/models",
                  "metrics_path": "", "timings": "the final chunk's `timings` object where present"},
    "llama-server": {"url": "http://127.0.0.1:8080", "api": "llama-native", "ready_path": "/health",
                     "metrics_path": "/metrics", "timings": "the final event's `timings` object; "
                                                            "Prometheus /metrics (server started with --metrics)"},
    "vllm": {"url": "http://127.0.0.1:8000", "api": "openai-completions", "ready_path": "/v1/models",
             "metrics_path": "/metrics", "timings": "Prometheus /metrics; usage from stream_options.include_usage"},
}
_GENERIC = {"url": "http://127.0.0.1:8000", "api": "openai-completions", "ready_path": "/v1/models",
            "metrics_path": "", "timings": "usage in the stream where the server sends it"}


class ServerCommand(BaseModel):
    """A server for perfbench to start and stop. Placeholders in `command`: {python} (this
    interpreter), {gguf} (the spec model's GGUF file: a synthetic preset is written once into the
    cache), {host}, {port} (from url; port 0 = a free port picked at start)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    command: list[str] = Field(min_length=1, max_length=256)
    ready_timeout_s: float = Field(default=120, gt=0, le=3600)
    stop_timeout_s: float = Field(default=10, gt=0, le=600)
    env: dict[str, str] = Field(default_factory=dict)


class Config(BackendConfig):
    """A server measured over HTTP, per request, under load (phase: serve)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        phases=("serve",), devices=("cpu", "cuda"), model_kinds=("synthetic", "hf", "gguf"), batching=True,
        measures_itself=True)

    name: Literal["openai-http"] = "openai-http"
    preset: Literal["ollama", "llamafile", "llama-server", "vllm"] | None = None
    url: str | None = Field(default=None, description="base URL of the server; default: the preset's")
    api: Api | None = Field(default=None, description=f"wire format: {', '.join(APIS)}; default: the preset's")
    path: str | None = Field(default=None, description="endpoint path; default: the API's")
    model_name: str | None = Field(default=None, description="the request's `model` field (Ollama: the tag)")
    ready_path: str | None = Field(default=None, description="GET path answering 200 once the server is up")
    metrics_path: str | None = Field(default=None, description="Prometheus metrics path ('' = none)")
    server: ServerCommand | None = Field(default=None, description="start this server (else attach to url)")
    server_args: str | None = Field(default=None, max_length=4000, description=(
        "extra arguments appended to server.command (shell-split): one string, so a sweep can vary "
        "server settings, e.g. '--n_threads 2'"))
    hardware: str | None = Field(default=None, description=(
        "hardware profile of the server's host (perfbench hw list); the run's fingerprint is the client's"))
    extra_body: dict[str, Any] = Field(default_factory=dict, description="fields added to every request body")
    tokenizer: Literal["auto", "none"] = Field(default="auto", description=(
        "auto: count tokens the server did not report with the model's GGUF vocabulary when there is one"))

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urllib.parse.urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"url must be http(s)://HOST[:PORT], got {v!r}")
        try:
            u.port
        except ValueError:
            raise ValueError(f"url has a bad port: {v!r}") from None
        return v.rstrip("/")

    @field_validator("path", "ready_path", "metrics_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v and not v.startswith("/"):
            raise ValueError(f"a path starts with '/', got {v!r}")
        return v

    def effective(self) -> dict[str, Any]:
        """Settings in effect: the fields given, else the preset's, else the generic defaults."""
        d = dict(PRESETS.get(self.preset or "", _GENERIC))
        for k in ("url", "api", "ready_path", "metrics_path"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d["path"] = self.path or PATHS[d["api"]]
        return d

    def check(self, facts: SpecFacts) -> list[tuple[str, str]]:
        out = []
        url = self.effective()["url"]
        if urllib.parse.urlsplit(url).port == 0 and self.server is None:
            out.append(("backend.url", "port 0 (pick a free port) needs backend.server (a server perfbench starts)"))
        if self.server_args and self.server is None:
            out.append(("backend.server_args", "server_args go with backend.server (a server perfbench starts)"))
        if self.server_args:
            import shlex

            try:
                shlex.split(self.server_args)
            except ValueError as exc:
                out.append(("backend.server_args", f"cannot split {self.server_args!r}: {exc}"))
        if self.hardware is not None:
            from perfbench.hardware.profile import profile_names

            names = profile_names()
            if self.hardware not in names:
                out.append(("backend.hardware", f"unknown hardware profile {self.hardware!r}; allowed: "
                                                f"{', '.join(names)} (perfbench hw list)"))
        if self.server and any("{gguf}" in a for a in self.server.command) and facts.model.kind == "hf":
            out.append(("backend.server.command", "{gguf} needs a GGUF model: model: {path: x.gguf} or a "
                                                  "llama preset"))
        return out
