"""Model architectures (torch-free) and their construction (torch, in `build`)."""

from perfbench.models.arch import PRESETS, ModelArch, resolve_model

__all__ = ["PRESETS", "ModelArch", "resolve_model"]
