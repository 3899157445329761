"""Device resolution, kept in one place so `auto` means the same everywhere."""

from __future__ import annotations


def cuda_available() -> bool:
    """True when torch sees a CUDA device. Imports torch (only callers that need it call this)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> str:
    """`auto` picks cuda when present, else cpu."""
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    return requested
