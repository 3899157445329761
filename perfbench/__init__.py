"""perfbench: benchmarking and roofline profiling for ML inference.

Kept import-light on purpose: `perfbench --help` and trace analysis must not pay for torch.
"""

__version__ = "0.1.0"

#: Bump when the shape of a stored result row changes, so readers can tell rows apart.
RESULT_SCHEMA_VERSION = 1
