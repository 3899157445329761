"""Preloaded once by the sweep's fork server, so each forked trial skips the imports.

Why: importing torch + transformers takes ~5 s on a small CPU box, more than a tiny trial's whole
measurement; paid once per sweep instead of once per trial, the per-trial overhead drops to well
under a second. Nothing here may run a torch op or touch CUDA: OpenMP thread pools and CUDA
contexts do not survive fork, so every forked trial must create its own.
"""

import perfbench.devices  # noqa: F401
import perfbench.provenance  # noqa: F401
import perfbench.runner  # noqa: F401
import perfbench.spec  # noqa: F401
import perfbench.stats  # noqa: F401
import perfbench.store  # noqa: F401
import perfbench.sweep.trial  # noqa: F401
import perfbench.timing  # noqa: F401

try:
    import perfbench.hardware.detect  # noqa: F401
except ImportError:  # pragma: no cover - part of perfbench, but never fail the warm-up
    pass

import os

from perfbench.sweep.forkserver import WARM_ENV

#: What each backend's trials import: preloaded only for the backends the sweep uses, so a
#: llama.cpp trial neither carries torch in its memory nor pays for it.
_ENGINE_MODULES = {
    "torch": ("torch", "transformers", "perfbench.models.build", "perfbench.backends.torch.backend"),
    "hf-pipeline": ("torch", "transformers", "perfbench.models.build", "perfbench.backends.hf_pipeline.backend"),
    "llama-cpp": ("llama_cpp", "perfbench.backends.llama_cpp.backend"),
}


def _preload(backends: list[str]) -> None:
    import importlib

    for name in backends:
        for mod in _ENGINE_MODULES.get(name, ()):
            try:
                importlib.import_module(mod)
            except ImportError:  # the trial reports the real error
                break


_preload(os.environ.get(WARM_ENV, "torch").split(","))
