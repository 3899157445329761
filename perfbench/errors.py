"""Errors that the CLI turns into a clear message and an exit code, never a traceback."""

from __future__ import annotations

#: Exit codes, documented in README: 2 = bad input (spec, profile, trace, arguments),
#: 3 = results store unusable (locked, corrupt), 130 = interrupted by the user.
EXIT_BAD_INPUT = 2
EXIT_STORE = 3
EXIT_INTERRUPTED = 130


class PerfbenchError(Exception):
    """Base class: carries the exit code the CLI should use."""

    exit_code = 1


class SpecError(PerfbenchError):
    """A YAML file (workload spec, hardware profile, sweep) is invalid.

    `problems` is a list of (field path, message) so callers and tests can check exactly which field
    was wrong; str() renders all of them with the file name.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid"]
        for path, msg in problems:
            lines.append(f"  {path or '<root>'}: {msg}" if path else f"  {msg}")
        super().__init__("\n".join(lines))


class InputError(PerfbenchError):
    """Bad command-line input or input file that is not a YAML spec (e.g. a broken trace)."""

    exit_code = EXIT_BAD_INPUT


class StoreError(PerfbenchError):
    """The results store cannot be used: locked for too long, corrupt, or not a perfbench store."""

    exit_code = EXIT_STORE


class RunFailed(PerfbenchError):
    """The workload itself failed (a crash in the backend or model code). The run is stored as
    failed with its reason; exit 1, as for a run whose every point failed."""

    exit_code = 1
