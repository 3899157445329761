"""Server lifecycle: start a server command, wait until it answers, stop its whole process group,
keep its log with the run. Also: is a URL up, and Prometheus `/metrics` scraping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: The log's tail quoted in an error when a server does not come up.
_TAIL = 2000


class ServerError(RuntimeError):
    """The server did not come up, or died."""


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answered."""
    try:
        with _opener().open(url, timeout=timeout) as r:
            return r.status, r.read(1 << 20)
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path | None, n: int = _TAIL) -> str:
    try:
        data = Path(path).read_bytes()[-n:] if path else b""
    except OSError:
        return ""
    return data.decode(errors="replace")


class ManagedServer:
    """A server process perfbench started: its own process group, output to `log_path`."""

    def __init__(self, argv: list[str], *, log_path: Path, ready_url: str, ready_timeout_s: float,
                 stop_timeout_s: float = 10.0, env: dict[str, str] | None = None):
        self.argv, self.log_path, self.ready_url = argv, Path(log_path), ready_url
        self.ready_timeout_s, self.stop_timeout_s, self.env = ready_timeout_s, stop_timeout_s, env or {}
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env={**os.environ, **self.env})
        except OSError as exc:
            raise ServerError(f"cannot start the server {self.argv[0]!r}: {exc}") from None
        finally:
            log.close()
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"the server exited with code {self.proc.returncode} before it was ready; "
                                  f"log {self.log_path}:\n{log_tail(self.log_path)}")
            status, _ = http_get(self.ready_url, timeout=1.0)
            if status == 200:
                self.ready_s = time.monotonic() - t0
                return
            if time.monotonic() - t0 > self.ready_timeout_s:
                self.stop()
                raise ServerError(f"the server was not ready at {self.ready_url} within "
                                  f"{self.ready_timeout_s:g} s (server.ready_timeout_s); log {self.log_path}:\n"
                                  f"{log_tail(self.log_path)}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM to the whole process group, SIGKILL after stop_timeout_s. The exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            _signal_group(p.pid, signal.SIGTERM)
            try:
                p.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(p.pid, signal.SIGKILL)
                p.wait(10)
        _signal_group(p.pid, signal.SIGKILL)  # children left behind by a leader that exited
        return p.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def scrape_metrics(url: str) -> dict[str, float]:
    """Prometheus text format -> {series (with labels): value}; {} if unavailable."""
    status, body = http_get(url, timeout=2.0)
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            cut = line.rindex("}") + 1
            name, rest = line[:cut], line[cut:]
        else:
            name, _, rest = line.partition(" ")
        try:
            out[name.strip()] = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        if len(out) >= 2000:
            break
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float], limit: int = 200) -> dict[str, Any]:
    """Counters (`_total`, `_count`, `_sum`) as their change over the point; gauges as read after."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        base = k.split("{", 1)[0]
        if base.endswith(("_total", "_count", "_sum")):
            out[k] = v - before.get(k, 0.0)
        elif "_bucket" not in base:
            out[k] = v
        if len(out) >= limit:
            break
    return out
