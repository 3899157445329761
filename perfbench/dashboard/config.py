"""Saved dashboards (`dashboards/*.yaml`): which runs and sweeps, which pages, their settings.

A saved dashboard is a view someone wants again: `perfbench dashboard dashboards/skip-study.yaml`
opens the app scoped to its runs, with its pages in the navigation and each page's settings as the
defaults its URL may still override. The file is validated like a workload spec: every problem is
reported with its field, and an unknown key is an error (a typo never passes silently).

    name: skip-study
    description: TKLQT and latency against batch size, two machines side by side
    runs: {phase: [prefill], hardware: [0de714b7aaa2, 5c1d...]}   # filters of the runs page
    sweeps: [tiny-grid]                                           # names or ids (prefixes)
    pages: [trace, runs, roofline]
    settings:
      trace: {split: hardware}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from perfbench.errors import SpecError
from perfbench.validation import NAME_PATTERN, NAME_RULE, problems, read_yaml

PageName = Literal["runs", "compare", "roofline", "trace", "sweeps", "history", "serving", "energy"]
_DATE = r"^\d{4}-\d{2}-\d{2}$"
_VALUE = r"^[^\x00-\x1f\x7f]{1,200}$"


class RunSelection(BaseModel):
    """The runs the dashboard shows: the runs page's filters (each a list of allowed values)."""

    model_config = ConfigDict(extra="forbid")

    model: list[str] = Field(default_factory=list, max_length=200)
    backend: list[str] = Field(default_factory=list, max_length=200)
    hardware: list[str] = Field(default_factory=list, max_length=200, description="hardware ids (perfbench results list)")
    phase: list[Literal["prefill", "decode", "generate", "serve"]] = Field(default_factory=list)
    dtype: list[str] = Field(default_factory=list, max_length=50)
    status: list[Literal["running", "completed", "interrupted", "failed"]] = Field(default_factory=list)
    since: str | None = Field(default=None, pattern=_DATE, description="YYYY-MM-DD")
    until: str | None = Field(default=None, pattern=_DATE, description="YYYY-MM-DD")
    name: str | None = Field(default=None, pattern=_VALUE, description="a substring of the run name or id")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _date_text(cls, value: Any) -> Any:
        import datetime

        return value.isoformat() if isinstance(value, datetime.date) else value

    @field_validator("model", "backend", "hardware", "dtype")
    @classmethod
    def _bounded(cls, values: list[str]) -> list[str]:
        import re

        for v in values:
            if not re.match(_VALUE, v):
                raise ValueError(f"{v!r}: 1-200 characters, no control characters")
        return values


class Dashboard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE)
    description: str | None = Field(default=None, max_length=2000)
    runs: RunSelection = Field(default_factory=RunSelection)
    sweeps: list[str] = Field(default_factory=list, max_length=200, description="sweep names or ids")
    pages: list[PageName] = Field(default_factory=list, description="pages in the navigation, in order (default: all)")
    settings: dict[PageName, dict[str, str | int | float | bool | list[str | int | float]]] = Field(
        default_factory=dict, description="per page: URL query defaults, e.g. trace: {split: hardware}")

    @property
    def page_names(self) -> list[str]:
        return list(self.pages)

    def settings_for(self, page: str) -> dict[str, Any]:
        """A page's settings as URL query values (lists joined with commas), sweeps included."""
        out = {k: (",".join(str(x) for x in v) if isinstance(v, list) else
                   ("1" if v is True else "" if v is False else str(v)))
               for k, v in self.settings.get(page, {}).items()}  # type: ignore[call-overload]
        if page == "sweeps" and self.sweeps and "sweep" not in out:
            out["sweep"] = self.sweeps[0]
        return out

    def run_filter(self):
        from perfbench.dashboard.data import RunFilter

        sel = self.runs
        return RunFilter(values={"model": sel.model, "backend": sel.backend, "hardware": sel.hardware,
                                 "phase": list(sel.phase), "dtype": sel.dtype, "status": list(sel.status)},
                         since=sel.since, until=sel.until, text=sel.name)


def load_dashboard(path: str | Path) -> Dashboard:
    """Read and validate a saved dashboard; SpecError (exit 2) names the file and every bad field."""
    data = read_yaml(Path(path))
    if not isinstance(data, dict):
        raise SpecError(str(path), [("", f"expected a mapping (name, runs, pages, settings), got {type(data).__name__}")])
    try:
        return Dashboard.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), problems(exc, Dashboard)) from None
