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

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModel, AutoModelForCausalLM, BertModel, LlamaForCausalLM  # noqa: F401

    import perfbench.backends.torch.backend  # noqa: F401
    import perfbench.models.build  # noqa: F401
except ImportError:  # pragma: no cover - the trial reports the real error
    pass
