"""perfbench: benchmarking and roofline profiling for ML inference.

Kept import-light on purpose: `perfbench --help` and trace analysis must not pay for torch.
"""

__version__ = "0.1.0"
