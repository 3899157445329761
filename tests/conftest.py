"""Shared test helpers: a CLI runner, tiny specs and temporary stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def as_if_in_a_terminal() -> None:
    """preexec_fn for processes the tests interrupt: a shell without job control starts background
    jobs with SIGINT ignored (CI may run us that way), and a Python started so never sees Ctrl-C.
    A user's terminal does not ignore it, so neither does the child here."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m perfbench ARGS` as a user would, capturing output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "perfbench", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env, input=input)


def tiny_spec(**overrides) -> dict:
    """A tiny, fast CPU workload spec as a mapping."""
    spec = {
        "name": "tiny-test",
        "model": "tiny-llama",
        "phase": "prefill",
        "batch_sizes": [1, 2],
        "seq_len": 16,
        "dtype": "float32",
        "device": "cpu",
        "backend": {"name": "torch", "compile": "none"},
        "measure": {"warmup": 1, "repeats": 3, "min_seconds": 0.0},
    }
    for k, v in overrides.items():
        other_backend = k == "backend" and v.get("name", "torch") != "torch"
        if isinstance(v, dict) and isinstance(spec.get(k), dict) and not other_backend:
            spec[k] = {**spec[k], **v}
        else:
            spec[k] = v
    return spec


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec mapping (or raw text) to a YAML file and return its path."""

    def _write(spec: dict | str, name: str = "spec.yaml") -> Path:
        p = tmp_path / name
        p.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        return p

    return _write


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "results" / "perfbench.sqlite"


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly without CUDA (run them on a GPU host with `pytest -m gpu`)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def config_only_checkpoint(folder: Path, preset: str = "tiny-llama") -> Path:
    """A checkpoint folder with the preset's config.json and no weights: it passes spec
    validation (the shape matches) and fails when the model is loaded, a realistic crash."""
    from perfbench.models import PRESETS
    from perfbench.models.build import hf_config

    hf_config(PRESETS[preset]).save_pretrained(folder)
    return folder


def pytest_configure(config):
    """Browser tests (dash_duo) run headless: CI has no display."""
    if hasattr(config.option, "headless"):
        config.option.headless = True


def browser_missing() -> str | None:
    """Why the dashboard's browser tests cannot run here, or None when they can."""
    import shutil

    try:
        import dash.testing  # noqa: F401  (dash[testing]: the dash_duo fixture)
    except ImportError:
        return "dash[testing] is not installed (PERFBENCH_EXTRAS=dev,dashboard bash scripts/setup.sh)"
    if not (shutil.which("chromium") or shutil.which("google-chrome")) or not shutil.which("chromedriver"):
        return "Chromium and its driver are not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def dash_browser(request):
    """dash_duo (a real headless Chromium), or a skip that says what is missing."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    duo = request.getfixturevalue("dash_duo")
    duo.driver.set_window_size(1400, 1000)
    return duo


@pytest.fixture(scope="session")
def dashboard_store(tmp_path_factory) -> dict:
    """One store with something for every dashboard page (tests/dashboard_store.py), built once."""
    from tests.dashboard_store import build_store

    return build_store(tmp_path_factory.mktemp("dashboard") / "store")
