"""The `load:` section of a serving spec (phase: serve): which load points, how many requests,
which prompts, which SLO. Validated with the spec, before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from perfbench.serving.loadgen import MAX_REQUESTS, LoadPlan

PromptSet = Literal["short_question", "long_context", "code", "all"]


class SLO(BaseModel):
    """Limits a request must meet to count towards goodput (any subset)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class LoadSpec(BaseModel):
    """Closed loop at each of `concurrency`, or open loop at each of `rates_rps` (one of the two)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    concurrency: list[int] | None = Field(default=None, min_length=1, max_length=64, description=(
        "closed loop: requests kept in flight, one load point each"))
    rates_rps: list[float] | None = Field(default=None, min_length=1, max_length=64, description=(
        "open loop: request rates, one load point each"))
    max_concurrency: int | None = Field(default=None, gt=0, le=100_000, description=(
        "open loop: cap on requests in flight (waiting for a slot counts in latency)"))
    arrival: Literal["poisson", "gamma"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0, le=100, description=(
        "gamma shape: 1 = Poisson, < 1 burstier, > 1 more regular"))
    requests: int | None = Field(default=32, gt=0, le=MAX_REQUESTS, description=(
        "requests per load point, warm-up and cool-down included"))
    duration_s: float | None = Field(default=None, gt=0, le=86_400, description=(
        "or: send for this long (requests then bounds the count)"))
    warmup_requests: int = Field(default=0, ge=0, le=MAX_REQUESTS)
    cooldown_requests: int = Field(default=0, ge=0, le=MAX_REQUESTS)
    prompts: PromptSet = "short_question"
    max_tokens: int = Field(default=32, gt=0, le=1 << 20, description="output tokens asked for per request")
    ignore_eos: bool = Field(default=True, description=(
        "ask the server to produce exactly max_tokens (vLLM, SGLang, llama.cpp; not Ollama)"))
    stream: bool = True
    timeout_s: float = Field(default=120, gt=0, le=86_400, description="a whole request")
    first_token_timeout_s: float = Field(default=60, gt=0, le=86_400, description=(
        "no byte for this long (before or during the stream): the request fails"))
    slo: SLO = Field(default_factory=SLO)
    client_processes: int = Field(default=1, ge=1, le=64, description=(
        "spread each load point over this many client processes when one cannot generate it"))
    send_lag_p99_limit_ms: float = Field(default=10.0, gt=0, description=(
        "the point is invalid (client-bound) above this p99 send lag"))
    client_cpu_limit: float = Field(default=0.9, gt=0, le=1.0, description=(
        "the point is invalid above this share of a core used by the client's event loop"))

    @field_validator("concurrency", "rates_rps", mode="before")
    @classmethod
    def _scalar_is_one_level(cls, v):
        """`load.concurrency: 8` is one level: what a sweep axis sets (sweep values are scalars)."""
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _one_mode(self) -> "LoadSpec":
        if (self.concurrency is None) == (self.rates_rps is None):
            raise ValueError("give exactly one of concurrency (closed loop) or rates_rps (open loop)")
        for c in self.concurrency or []:
            if not 0 < c <= 100_000:
                raise ValueError(f"concurrency levels must be 1..100000, got {c}")
        for r in self.rates_rps or []:
            if not 0 < r <= 1e6:
                raise ValueError(f"rates must be positive and at most 1e6 requests/s, got {r}")
        if self.concurrency and self.max_concurrency:
            raise ValueError("max_concurrency caps an open loop (rates_rps); a closed loop's level is its concurrency")
        if self.requests is None and self.duration_s is None:
            raise ValueError("give requests, duration_s, or both")
        if self.requests is not None and self.warmup_requests + self.cooldown_requests >= self.requests:
            raise ValueError(f"warmup_requests + cooldown_requests ({self.warmup_requests + self.cooldown_requests})"
                             f" leaves no measured request of {self.requests}")
        return self

    def points(self, seed: int) -> list["ServePoint"]:
        return [ServePoint(p, self) for p in self.plans(seed)]

    def plans(self, seed: int) -> list[LoadPlan]:
        common = dict(n_requests=self.requests, duration_s=self.duration_s, warmup=self.warmup_requests,
                      cooldown=self.cooldown_requests, seed=seed)
        if self.concurrency:
            return [LoadPlan(mode="closed", concurrency=c, **common) for c in self.concurrency]
        return [LoadPlan(mode="open", rate_rps=float(r), concurrency=self.max_concurrency, arrival=self.arrival,
                         burstiness=self.burstiness, **common) for r in self.rates_rps or []]


@dataclass(frozen=True, eq=False)
class ServePoint:
    """What a serving measurement point carries (`Point.load`): its load plan and the load section."""

    plan: LoadPlan
    spec: LoadSpec

    @property
    def label(self) -> str:
        return self.plan.label
