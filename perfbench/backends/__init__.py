"""Pluggable backends: one sub-package per backend, each with a `config.py` (a small pydantic
config with the backend's capabilities, torch-free so specs validate fast) and a `backend.py` (the
implementation, which imports the engine).

A new backend registers here by name; the runner never changes for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perfbench.backends.base import Backend, BackendConfig

#: backend name -> module path holding `Config` (config.py) and `Backend` (backend.py).
BACKENDS: dict[str, str] = {
    "torch": "perfbench.backends.torch",
    "hf-pipeline": "perfbench.backends.hf_pipeline",
    "llama-cpp": "perfbench.backends.llama_cpp",
    "vllm": "perfbench.backends.vllm",
    "openai-http": "perfbench.backends.openai_http",  # servers under load (phase serve)
}


def config_class(name: str) -> type["BackendConfig"]:
    """The config class for a backend name; KeyError if unknown."""
    return importlib.import_module(BACKENDS[name] + ".config").Config


def backend_class(name: str) -> type["Backend"]:
    """The implementation class (imports the backend's heavy dependencies)."""
    return importlib.import_module(BACKENDS[name] + ".backend").Backend
