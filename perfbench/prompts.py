"""The prompt set perfbench ships (`perfbench/data/prompts.yaml`) for text-driven workloads.

Shipped with the package rather than downloaded, so a benchmark's inputs are fixed by the
perfbench version and runs never need the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

#: Prompt kinds, in the order the file lists them.
PROMPT_KINDS: tuple[str, ...] = ("short_question", "long_context", "code")


@dataclass(frozen=True)
class Prompt:
    """One prompt: a stable id (for results), its kind, and the text fed to the tokenizer."""

    id: str
    kind: str
    text: str


def data_path(name: str):
    """A file under perfbench/data (works for editable and wheel installs)."""
    return resources.files("perfbench") / "data" / name


@lru_cache(maxsize=1)
def _all_prompts() -> tuple[Prompt, ...]:
    """Parse the YAML once; the file is small and immutable for a given install."""
    raw = yaml.safe_load(data_path("prompts.yaml").read_text(encoding="utf-8"))
    unknown = set(raw) - set(PROMPT_KINDS)
    if unknown:  # a typo in the file must not silently drop prompts
        raise ValueError(f"prompts.yaml: unknown kinds {sorted(unknown)}; allowed: {list(PROMPT_KINDS)}")
    return tuple(Prompt(id=str(p["id"]), kind=kind, text=str(p["text"]).strip())
                 for kind in PROMPT_KINDS for p in raw.get(kind) or [])


def load_prompts(kind: str | None = None) -> list[Prompt]:
    """All prompts, or those of one kind; an unknown kind raises ValueError naming the allowed ones."""
    if kind is not None and kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; allowed: {', '.join(PROMPT_KINDS)}")
    return [p for p in _all_prompts() if kind is None or p.kind == kind]
