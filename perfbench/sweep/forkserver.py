"""A tiny fork server: import torch and transformers once, then fork one process per trial.

Why not `multiprocessing`'s forkserver: it re-imports the parent's `__main__` in every child (a
script, a notebook, stdin), which can fail or re-run user code. This one knows nothing of the
parent: it speaks JSON lines over its stdin/stdout.

    parent -> server   {"id": 1, "payload": {...}, "result": PATH, "log": PATH}
    server -> parent   "ready"                      once the warm imports are done
                       {"id": 1, "pid": 1234}       the trial process was forked
                       {"pid": 1234, "exit": 0}     it ended (negative exit: killed by that signal)

The server runs in its own session (Ctrl-C in the terminal does not reach it) and exits when its
stdin closes, i.e. when the sweep process ends; trials notice and stop (see `trial.watch_parent`).
Each trial calls setsid, so the sweep can kill a trial's whole process group on a timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from perfbench.errors import PerfbenchError


#: The backends whose engines the server preloads (comma-separated), read by `_warm.py`.
WARM_ENV = "PERFBENCH_WARM_BACKENDS"


class ForkServerError(PerfbenchError):
    """The fork server could not start (its log says why)."""


def _child(req: dict[str, Any], close_fds: list[int]) -> int:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    from perfbench.sweep.trial import forked_main

    try:
        forked_main(req["payload"], req["result"], req["log"])
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def serve() -> None:
    import perfbench.sweep._warm  # noqa: F401  (the point of the server)

    out = sys.stdout.buffer
    inp = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    in_fd = inp.fileno()
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd gets written

    def send(obj: Any) -> None:
        out.write((obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n")
        out.flush()

    send("ready")
    buf = b""
    while True:
        try:
            ready, _, _ = select.select([in_fd, r], [], [], 5.0)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            ready = []
        if r in ready:
            try:
                os.read(r, 4096)
            except BlockingIOError:  # pragma: no cover
                pass
        while True:  # reap every ended trial
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            send({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
        if in_fd in ready:
            chunk = os.read(in_fd, 1 << 16)
            if not chunk:  # the sweep closed us (or died); skip torch's slow interpreter teardown
                sys.stdout.flush()
                os._exit(0)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    # stdin/stdout are replaced (dup2) by the trial itself; close only the rest.
                    os._exit(_child(req, [r, w]))
                send({"id": req["id"], "pid": pid})


class ForkServerClient:
    """The sweep's side: start the server early (its imports overlap validation), fork trials."""

    def __init__(self, workdir: Path, backends: tuple[str, ...] = ("torch",)):
        self.log_path = Path(workdir) / "forkserver.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "perfbench.sweep.forkserver"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                     start_new_session=True,
                                     env={**os.environ, WARM_ENV: ",".join(backends)})
        log.close()
        self._fd = self.proc.stdout.fileno()
        self._buf = b""
        self._ready = False
        self._next_id = 0
        self.exits: dict[int, int] = {}  # pid -> exit code, for trials that ended

    def _lines(self, timeout_s: float | None) -> list[Any]:
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        if not ready:
            return []
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise ForkServerError(f"the sweep's fork server ended unexpectedly (exit "
                                  f"{self.proc.poll()}); its log:\n{tail}")
        self._buf += chunk
        out = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            text = line.decode().strip()
            if text:
                out.append(text if text == "ready" else json.loads(text))
        return out

    def _handle(self, msgs: list[Any]) -> list[Any]:
        rest = []
        for m in msgs:
            if m == "ready":
                self._ready = True
            elif isinstance(m, dict) and "exit" in m:
                self.exits[m["pid"]] = m["exit"]
            else:
                rest.append(m)
        return rest

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        end = time.monotonic() + timeout_s
        while not self._ready:
            left = end - time.monotonic()
            if left <= 0:
                raise ForkServerError(f"the sweep's fork server was not ready after {timeout_s:g} s")
            self._handle(self._lines(left))

    def fork(self, payload: dict[str, Any], result: str, log: str) -> int:
        self.wait_ready()
        self._next_id += 1
        rid = self._next_id
        self.proc.stdin.write(json.dumps({"id": rid, "payload": payload, "result": result,
                                          "log": log}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            for m in self._handle(self._lines(60.0)):
                if m.get("id") == rid:
                    return int(m["pid"])

    def poll(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for news (exits land in `self.exits`)."""
        self._handle(self._lines(timeout_s))

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


if __name__ == "__main__":
    serve()
