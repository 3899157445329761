"""Where trials run: local processes (default) or a Ray cluster.

Both give every trial its own process and own process group, enforce the per-trial timeout by
killing that group (a hung trial, or the compile workers it started, cannot outlive it), and turn
a process that died without a result into a failed trial with the reason and the tail of its log.

* `local`: trials are forked from a fork server that imported torch and transformers once
  (`_warm.py`), so a trial costs its measurement plus a fraction of a second. Set
  `PERFBENCH_SWEEP_START=spawn` for a cold `python -m perfbench.sweep.trial` process per trial.
* `ray`: each trial is a Ray task (one GPU where the workload needs one) that runs the trial
  process on its node against a private temporary store and returns the run; the driver copies it
  into the sweep's store, so no shared filesystem is needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfbench.errors import InputError

START_ENV = "PERFBENCH_SWEEP_START"
#: How long a trial gets to close its run after SIGTERM (on Ctrl-C) before SIGKILL.
TERM_GRACE_S = 5.0


@dataclass
class TrialTask:
    """One trial handed to an executor."""

    index: int
    key: str
    params: dict[str, Any]
    payload: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)


@dataclass
class TrialOutcome:
    """What came back: the trial's own result, or why its process gave none."""

    result: dict[str, Any] | None
    error: str | None = None
    kind: str = "ok"  # ok | timeout | crashed
    pid: int | None = None
    wall_s: float = 0.0
    run: dict[str, Any] | None = None  # Ray: the whole run, to copy into the sweep's store


def log_tail(path: Path, n_chars: int = 1500) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    text = text.strip()
    return text[-n_chars:]


def _death_reason(code: int | None, log: Path) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = f"trial process died: killed by {name}"
        if -code == signal.SIGKILL:
            why += " (out of memory? the kernel's OOM killer sends SIGKILL)"
        elif -code == signal.SIGSEGV:
            why += " (segmentation fault)"
    else:
        why = f"trial process exited with code {code} without a result"
    tail = log_tail(log)
    return why + (f"; log tail:\n{tail}" if tail else "")


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the trial called setsid (or was started in a new session): pgid == pid
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class _Child:
    """A trial process, forked by the fork server or spawned cold; same interface for both."""

    def __init__(self, task: TrialTask, workdir: Path, server: Any | None):
        self.task = task
        stem = f"trial-{task.index:05d}-{os.getpid()}-{time.monotonic_ns()}"
        self.result_path = workdir / f"{stem}.result.json"
        self.log_path = workdir / f"{stem}.log"
        self.server = server
        if server is not None:
            self.proc = None
            self.pid = server.fork(task.payload, str(self.result_path), str(self.log_path))
        else:
            payload_path = workdir / f"{stem}.payload.json"
            payload_path.write_text(json.dumps(task.payload))
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perfbench.sweep.trial", "--payload", str(payload_path),
                 "--result", str(self.result_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self.pid = self.proc.pid

    def exitcode(self) -> int | None:
        if self.server is not None:
            return self.server.exits.get(self.pid)
        return self.proc.poll()

    def join(self, timeout: float | None = None) -> None:
        end = time.monotonic() + (timeout if timeout is not None else 1e9)
        if self.server is not None:
            while self.exitcode() is None and time.monotonic() < end:
                self.server.poll(min(0.5, max(0.0, end - time.monotonic())))
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def outcome(self, kind: str = "ok", error: str | None = None) -> TrialOutcome:
        wall = time.perf_counter() - self.task.started
        result = None
        if self.result_path.exists():
            try:
                result = json.loads(self.result_path.read_text())
            except (OSError, ValueError):
                result = None
        if result is None and error is None:
            kind, error = "crashed", _death_reason(self.exitcode(), self.log_path)
        out = TrialOutcome(result=result, error=error, kind=kind, pid=self.pid, wall_s=wall)
        for p in (self.result_path, self.log_path, self.result_path.with_name(
                self.result_path.name.replace(".result.json", ".payload.json"))):
            try:
                p.unlink()
            except OSError:
                pass
        return out


def run_child_blocking(payload: dict[str, Any], workdir: Path, timeout_s: float | None) -> TrialOutcome:
    """One cold trial process, waited for with the timeout (used inside Ray tasks)."""
    task = TrialTask(index=0, key=payload.get("trial_key", ""), params={}, payload=payload)
    child = _Child(task, workdir, None)
    try:
        child.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid, signal.SIGKILL)
        child.proc.wait()
        return child.outcome("timeout", f"timed out after {timeout_s:g} s (--trial-timeout); "
                                        f"its process group was killed; log tail:\n{log_tail(child.log_path)}")
    except BaseException:
        _kill_group(child.pid, signal.SIGTERM)
        child.join(TERM_GRACE_S)
        _kill_group(child.pid, signal.SIGKILL)
        raise
    return child.outcome()


def start_method_override() -> str | None:
    """`PERFBENCH_SWEEP_START`: forkserver | spawn | auto (default: auto, see LocalExecutor)."""
    start = os.environ.get(START_ENV, "").strip().lower() or "auto"
    if start not in ("spawn", "forkserver", "auto"):
        raise InputError(f"{START_ENV} must be auto, forkserver or spawn, got {start!r}")
    if start == "forkserver" and not hasattr(os, "fork"):  # pragma: no cover - Windows
        return "spawn"
    return None if start == "auto" else start


class LocalExecutor:
    """Trials as local processes, at most `jobs` at a time.

    `auto` start: CPU trials are forked from the warm fork server; CUDA trials start cold
    (`spawn`), because a CUDA driver initialised by anything the fork server imported would be
    unusable in its forked children, and a GPU trial's seconds of start-up matter less than its
    correctness. `PERFBENCH_SWEEP_START=forkserver|spawn` forces one way for every trial.
    """

    name = "local"

    def __init__(self, *, workdir: Path, timeout_s: float | None, start_method: str | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.start_method = start_method or start_method_override()
        if self.start_method is None and not hasattr(os, "fork"):  # pragma: no cover - Windows
            self.start_method = "spawn"
        self.server: Any | None = None
        self._cuda: bool | None = None
        self._children: list[_Child] = []

    def _fork(self, device: str) -> bool:
        """Whether a trial on `device` is forked from the fork server (see the class doc)."""
        if self.start_method is not None:
            return self.start_method == "forkserver"
        if device == "auto":
            if self._cuda is None:
                from perfbench.devices import cuda_available

                self._cuda = cuda_available()
            return not self._cuda
        return device == "cpu"

    def warm_up(self, device: str = "cpu", backends: tuple[str, ...] = ("torch",)) -> None:
        """Start the fork server now, so its imports overlap the sweep's validation and set-up.
        It preloads only the engines of `backends`: a llama.cpp trial must not carry torch."""
        if self.server is None and self._fork(device):
            from perfbench.sweep.forkserver import ForkServerClient

            self.server = ForkServerClient(self.workdir, backends)
            self._backends = backends

    def hardware_id(self) -> str:
        from perfbench.hardware.detect import fingerprint

        return fingerprint().get("hardware_id", "unknown")

    def trial_store(self, store_path: str) -> str:
        return store_path

    def running(self) -> int:
        return len(self._children)

    def submit(self, task: TrialTask) -> None:
        fork = self._fork(task.payload["workload"].get("device", "auto"))
        if fork and self.server is None:
            self.warm_up("cpu", (task.payload["workload"].get("backend", {}).get("name", "torch"),))
        child = _Child(task, self.workdir, self.server if fork else None)
        task.started = time.perf_counter()  # after the fork server is ready: its start is not the trial's
        self._children.append(child)

    def wait(self, timeout_s: float = 0.5) -> list[tuple[TrialTask, TrialOutcome]]:
        """Return the trials that ended (or timed out) within `timeout_s`."""
        if not self._children:
            return []
        now = time.perf_counter()
        if self.timeout_s:
            nearest = min(c.task.started + self.timeout_s for c in self._children) - now
            timeout_s = max(0.0, min(timeout_s, nearest))
        if all(c.exitcode() is None for c in self._children):
            if all(c.server is not None for c in self._children):
                self.server.poll(timeout_s)  # woken by the fork server's exit reports
            else:  # cold children: poll them (and the fork server, if any)
                end = time.perf_counter() + timeout_s
                while time.perf_counter() < end and all(c.exitcode() is None for c in self._children):
                    if self.server is not None:
                        self.server.poll(0.02)
                    else:
                        time.sleep(0.02)
        done = []
        for c in list(self._children):
            if c.exitcode() is not None:
                c.join()
                done.append((c.task, c.outcome()))
                self._children.remove(c)
            elif self.timeout_s and time.perf_counter() - c.task.started > self.timeout_s:
                _kill_group(c.pid, signal.SIGKILL)
                c.join(10)
                tail = log_tail(c.log_path)
                done.append((c.task, c.outcome(
                    "timeout", f"timed out after {self.timeout_s:g} s (--trial-timeout); its process "
                               "group was killed" + (f"; log tail:\n{tail}" if tail else ""))))
                self._children.remove(c)
        return done

    def cancel_all(self) -> list[TrialTask]:
        """SIGTERM every running trial (their runs close as interrupted), SIGKILL stragglers."""
        tasks = [c.task for c in self._children]
        for c in self._children:
            _kill_group(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        for c in self._children:
            c.join(max(0.0, deadline - time.monotonic()))
            if c.exitcode() is None:
                _kill_group(c.pid, signal.SIGKILL)
                c.join(5)
            c.outcome("crashed", "cancelled")  # removes its files
        self._children.clear()
        return tasks

    def close(self) -> None:
        if self._children:
            self.cancel_all()
        if self.server is not None:
            self.server.close()
            self.server = None


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------


def ray_trial_task(payload: dict[str, Any], timeout_s: float | None) -> dict[str, Any]:
    """Body of the Ray task: a cold trial process against a private store, whose run comes back."""
    import tempfile

    from perfbench.store import ResultsStore

    with tempfile.TemporaryDirectory(prefix="perfbench-trial-") as d:
        store = Path(d) / "trial.sqlite"
        out = run_child_blocking({**payload, "store": str(store)}, Path(d), timeout_s)
        run = None
        if store.exists():
            with ResultsStore(store, create=False) as st:
                runs = st.list_runs()
                if runs:
                    run = st.get_run(runs[0]["run_id"])
        out.run = run
        return asdict(out)


def ray_hardware_task() -> str:
    from perfbench.hardware.detect import fingerprint

    return fingerprint().get("hardware_id", "unknown")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray, which is not installed: "
                         "pip install 'perfbench[ray]' (the `ray` extra)") from None
    return ray


def ray_gpus_per_trial(device: str, ray: Any) -> int:
    """One GPU per trial where the workload runs on CUDA (auto: if the cluster has GPUs)."""
    if device == "cuda":
        return 1
    if device == "auto":
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return 0


def probe_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an unreachable `host:port` (ray.init would retry for minutes). `auto` and
    other forms are left to Ray."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or address == "auto":
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); is "
                         "`ray start --head` running there, and is this its GCS port (default 6379)?") from None


class RayExecutor:
    """Trials as Ray tasks on the cluster at `address` (Ray schedules; we only submit and wait)."""

    name = "ray"

    def __init__(self, *, address: str | None, timeout_s: float | None, device: str):
        ray = self.ray = _import_ray()
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            if address:
                probe_ray_address(address)
                kwargs["address"] = address
            else:  # RAY_ADDRESS if set, else a local instance that we own
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise InputError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
            self._owns = True
        self.timeout_s = timeout_s
        self.gpus = ray_gpus_per_trial(device, ray)
        self._task = ray.remote(ray_trial_task).options(num_cpus=1, num_gpus=self.gpus, max_retries=0)
        self._refs: dict[Any, TrialTask] = {}

    def warm_up(self, device: str = "cpu", backends: tuple[str, ...] = ("torch",)) -> None:
        pass

    def hardware_id(self) -> str:
        """The hardware the trials run on: asked of a worker with the trials' own resources."""
        probe = self.ray.remote(ray_hardware_task).options(num_cpus=1, num_gpus=self.gpus, max_retries=0)
        return self.ray.get(probe.remote())

    def trial_store(self, store_path: str) -> str:
        return "<ray: private per-trial store>"

    def running(self) -> int:
        return len(self._refs)

    def submit(self, task: TrialTask) -> None:
        task.started = time.perf_counter()
        self._refs[self._task.remote(task.payload, self.timeout_s)] = task

    def wait(self, timeout_s: float = 0.5) -> list[tuple[TrialTask, TrialOutcome]]:
        if not self._refs:
            return []
        ray = self.ray
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout_s)
        done = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                d = ray.get(ref)
                out = TrialOutcome(**d)
                out.wall_s = time.perf_counter() - task.started
            except Exception as exc:  # worker died, task error: a failed trial, not a failed sweep
                out = TrialOutcome(result=None, error=f"Ray task failed: {type(exc).__name__}: {exc}"[:4000],
                                   kind="crashed", wall_s=time.perf_counter() - task.started)
            done.append((task, out))
        # Backstop: the task enforces the timeout itself; this catches a task stuck in scheduling.
        if self.timeout_s:
            for ref, task in list(self._refs.items()):
                if time.perf_counter() - task.started > self.timeout_s + 300:
                    ray.cancel(ref, force=True)
                    self._refs.pop(ref)
                    done.append((task, TrialOutcome(
                        result=None, kind="timeout", wall_s=time.perf_counter() - task.started,
                        error=f"timed out after {self.timeout_s:g} s (not even scheduled in time)")))
        return done

    def cancel_all(self) -> list[TrialTask]:
        tasks = list(self._refs.values())
        for ref in self._refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass
        self._refs.clear()
        return tasks

    def close(self) -> None:
        if self._refs:
            self.cancel_all()
        if self._owns:
            self.ray.shutdown()


def import_run(store: Any, run: dict[str, Any], *, sweep_id: str, failure: str | None = None) -> str:
    """Copy a run read from another store (a Ray worker's) into `store`, points and samples
    included, so a remote trial is an ordinary run here too. A run left open by a process that
    died is closed as failed, with `failure` (the executor's reason: a timeout, a crash) when
    known, as the local executor does."""
    from perfbench.schema import FIELDS

    run_id = store.create_run(
        name=run["name"], spec=run["spec"], spec_hash=run["spec_hash"], fingerprint=run["fingerprint"],
        versions=run["versions"], commit=run.get("commit"), device=run.get("device") or "unknown",
        spec_path=run.get("spec_path"), sweep_id=sweep_id, run_id=run["run_id"])
    if run.get("backend_info") or run.get("engine"):
        store.set_backend_info(run_id, run.get("backend_info") or {}, engine=run.get("engine"))
    for p in run.get("points", []):
        store.add_point(run_id, {k: v for k, v in p.items() if k in FIELDS})
    status, reason = run["status"], run.get("reason")
    if failure and status in ("running", "interrupted"):
        status, reason = "failed", failure
    elif status == "running":
        status, reason = "failed", "trial process died before closing the run"
    store.finish_run(run_id, status, reason)
    return run_id
