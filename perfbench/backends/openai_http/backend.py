"""The serving backend: a server (started here, or attached to) measured per request under load.

`load()` starts the server (or checks that the URL answers); `run_load(point)` runs one load point
with perfbench.serving and returns its result fields and per-request rows; `close()` stops the
server's whole process group. The server's log is kept next to the run's store
(`server-logs/<run_id>.log`).
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path
from typing import Any

from perfbench.backends.base import Backend as BackendBase
from perfbench.backends.base import Point, PreparedPoint
from perfbench.backends.openai_http.config import Config
from perfbench.serving.server import ManagedServer, ServerError, free_port, http_get, metrics_delta, scrape_metrics


class OpenAIHttpBackend(BackendBase):
    config: Config

    def __init__(self, config: Config, ctx: Any):
        super().__init__(config, ctx)
        self.eff = config.effective()
        self.server: ManagedServer | None = None
        self._tok = None
        self._gguf: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        c, eff = self.config, self.eff
        info: dict[str, Any] = {}
        if c.server is not None:
            info.update(self._start_server())
        else:
            status, _ = http_get(eff["url"] + eff["ready_path"], timeout=5.0)
            if status != 200:
                raise ServerError(f"no server answering at {eff['url']}{eff['ready_path']} (HTTP status "
                                  f"{status or 'none'}): start it, or give backend.server.command")
        status, body = http_get(eff["url"] + "/v1/models", timeout=5.0) if eff["api"] != "ollama" else (0, b"")
        info.update({
            "server_url": eff["url"], "api": eff["api"], "endpoint": eff["path"], "preset": c.preset,
            "server_timings_from": eff["timings"], "metrics_path": eff["metrics_path"] or None,
            "server_hardware": c.hardware or "not named (backend.hardware)",
            "hardware_note": ("the run's hardware fingerprint is the client's (the machine running perfbench), "
                              "not the server's" + (f"; the server runs on {c.hardware}" if c.hardware else "")),
            "server_models": body[:2000].decode(errors="replace") if status == 200 else None,
            "tpot_definition": "(E2E - TTFT) / (output tokens - 1), E2E and TTFT from the scheduled send time",
            "client": _client_versions(),
        })
        return info

    def _start_server(self) -> dict[str, Any]:
        c, eff = self.config, self.eff
        u = urllib.parse.urlsplit(eff["url"])
        host = u.hostname or "127.0.0.1"
        port = u.port if u.port is not None else (443 if u.scheme == "https" else 80)
        if port == 0:
            port = free_port(host)
            eff["url"] = f"{u.scheme}://{host}:{port}"
        subst = {"python": sys.executable, "host": host, "port": str(port)}
        if any("{gguf}" in a for a in c.server.command):
            subst["gguf"] = str(self._gguf_path())
        import shlex

        argv = [_format(a, subst) for a in c.server.command] + shlex.split(c.server_args or "")
        art = self.ctx.artifact_dir or Path(".")
        log = art / "server-logs" / f"{self.ctx.run_id or 'run'}.log"
        self.server = ManagedServer(argv, log_path=log, ready_url=eff["url"] + eff["ready_path"],
                                    ready_timeout_s=c.server.ready_timeout_s,
                                    stop_timeout_s=c.server.stop_timeout_s, env=c.server.env)
        self.server.start()
        return {"server_command": argv, "server_log": str(log), "server_ready_s": self.server.ready_s,
                "server_started_by_perfbench": True}

    def _gguf_path(self) -> Path:
        if self._gguf is None:
            ref = self.ctx.model
            if ref.kind == "gguf":
                self._gguf = Path(ref.path)
            else:
                from perfbench.models.gguf_tiny import ensure_tiny_gguf

                dtype = "f16" if self.ctx.dtype == "float16" else "f32"
                self._gguf = ensure_tiny_gguf(ref.arch, self.ctx.seed, self.ctx.cache_dir, dtype=dtype)
        return self._gguf

    def engine(self) -> dict[str, Any]:
        eff = self.eff
        out: dict[str, Any] = {"name": self.config.preset or "openai-http", "api": eff["api"], "url": eff["url"]}
        for path in ("/version", "/api/version"):
            status, body = http_get(eff["url"] + path, timeout=2.0)
            if status == 200 and body:
                out["version"] = body[:200].decode(errors="replace").strip()
                break
        return out

    def prepare(self, point: Point) -> PreparedPoint:
        raise NotImplementedError("openai-http measures whole load points: the runner calls run_load")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -- one load point ----------------------------------------------------------------------

    def run_load(self, point: Point) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from perfbench.serving import ClientConfig, run_load
        from perfbench.serving.protocols import server_summary
        from perfbench.serving.stats import point_fields
        from perfbench.stats import summarize

        load, plan, eff = point.load.spec, point.load.plan, self.eff
        prompts = _prompts(load.prompts)
        cfg = ClientConfig(base_url=eff["url"], api=eff["api"], path=eff["path"], model=self.config.model_name,
                           stream=load.stream, ignore_eos=load.ignore_eos, max_tokens=load.max_tokens,
                           extra_body=self.config.extra_body, timeout_s=load.timeout_s,
                           first_token_timeout_s=load.first_token_timeout_s)
        murl = eff["url"] + eff["metrics_path"] if eff["metrics_path"] else None
        before = scrape_metrics(murl) if murl else {}
        res = run_load(cfg, plan, prompts, processes=load.client_processes)
        after = scrape_metrics(murl) if murl else {}
        texts = dict(prompts)
        self._count_tokens(res.records, texts)
        fields = point_fields(plan, res, load.slo.model_dump(), send_lag_limit_s=load.send_lag_p99_limit_ms / 1e3,
                              cpu_limit=load.client_cpu_limit)
        e2e = fields["samples_s"]
        if e2e:
            fields.update(summarize(e2e))
        fields["tokens_per_s"] = fields["output_tokens_per_s"]
        timings = [r.server_timings for r in res.records if r.role == "measured" and r.server_timings]
        engine = {**server_summary(eff["api"], timings)} if timings else {}
        if before or after:
            engine["metrics_delta"] = metrics_delta(before, after)
        if self.server is not None and not self.server.alive():
            engine["server_exited"] = f"the server exited (code {self.server.proc.returncode}) during this point"
        fields["engine_timings"] = engine or None
        if engine.get("tg_tokens_per_s"):
            fields["engine_tg_tokens_per_s"] = engine["tg_tokens_per_s"]
        if engine.get("pp_tokens_per_s"):
            fields["engine_pp_tokens_per_s"] = engine["pp_tokens_per_s"]
        return fields, [_row(r) for r in res.records]

    def _count_tokens(self, records: list, texts: dict[str, str]) -> None:
        """Counts the server did not report: the model's GGUF vocabulary if there is one, else one
        token per chunk that carried text (exact for servers that stream token by token)."""
        tok = self._tokenizer()
        for r in records:
            if r.status != "ok":
                continue
            if r.output_tokens is None:
                if tok is not None:
                    r.output_tokens, r.output_tokens_source = len(tok(r.text, False)), "local-tokenizer"
                else:
                    r.output_tokens, r.output_tokens_source = len(r.token_times_s), "chunks"
            if r.input_tokens is None and tok is not None:
                r.input_tokens, r.input_tokens_source = len(tok(texts.get(r.prompt_id, ""), True)), "local-tokenizer"

    def _tokenizer(self):
        if self._tok is not None or self.config.tokenizer == "none":
            return self._tok or None
        self._tok = False
        ref = self.ctx.model
        if ref.kind not in ("gguf", "synthetic") or (ref.arch is not None and ref.arch.family != "llama"):
            return None
        try:
            import llama_cpp

            llm = llama_cpp.Llama(model_path=str(self._gguf_path()), vocab_only=True, verbose=False)
        except Exception:  # noqa: BLE001 - no llama_cpp, or a GGUF it cannot read: fall back to chunks
            return None

        def count(text: str, bos: bool) -> list[int]:
            return llm.tokenize(text.encode(), add_bos=bos, special=False) if text else []

        self._tok = count
        return count


def _format(arg: str, subst: dict[str, str]) -> str:
    for k, v in subst.items():
        arg = arg.replace("{" + k + "}", v)
    return arg


def _prompts(kind: str) -> list[tuple[str, str]]:
    from perfbench.prompts import load_prompts

    return [(p.id, p.text) for p in load_prompts(None if kind == "all" else kind)]


def _row(r: Any) -> dict[str, Any]:
    return {"idx": r.index, "role": r.role, "prompt_id": r.prompt_id, "scheduled_s": r.scheduled_s,
            "ready_s": r.ready_s, "sent_s": r.sent_s, "first_token_s": r.first_token_s, "done_s": r.done_s,
            "token_times_s": r.token_times_s, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
            "input_tokens_source": r.input_tokens_source, "output_tokens_source": r.output_tokens_source,
            "status": r.status, "error": r.error, "http_status": r.http_status, "server_timings": r.server_timings}


def _client_versions() -> dict[str, Any]:
    import aiohttp

    return {"http_client": f"aiohttp {aiohttp.__version__}", "read_bufsize": 1 << 20, "connector_limit": "none"}


#: The registry looks the implementation up under this name.
Backend = OpenAIHttpBackend
