"""Where a number came from: software versions and the perfbench commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import perfbench

REPO_ROOT = Path(perfbench.__file__).resolve().parents[1]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, str | None]:
    """Versions that change measured numbers. torch's build facts (CUDA, cuDNN) are read only when
    torch is already loaded: a llama.cpp run must not pay seconds to import a framework it never
    uses (the torch backend and a CUDA device check load it first)."""
    import sys

    v: dict[str, str | None] = {
        "perfbench": perfbench.__version__,
        "python": platform.python_version(),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "torch": _version("torch"),
    }
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "version"):
        v["torch"] = torch.__version__
        v["cuda"] = torch.version.cuda
        v["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
        v["hip"] = getattr(torch.version, "hip", None)
    return v


def git_commit() -> str | None:
    """The perfbench checkout's commit, suffixed `-dirty` when it has uncommitted changes. None for
    an installed (non-checkout) perfbench: the git repository around site-packages, if any, is
    someone else's and its commit would be a wrong provenance."""
    if not (REPO_ROOT / ".git").exists() or not (REPO_ROOT / "pyproject.toml").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
