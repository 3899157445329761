"""The CI regression gate: statistics over per-hardware history, not single numbers.

* `stats`: one point compared between two sides (ratio of medians with a bootstrap confidence
  interval, Mann-Whitney U, Hodges-Lehmann shift and Cliff's delta, a verdict);
* `compare`: sets of runs compared point by point (a pandas DataFrame, units in column names);
* `suite`, `subject`, `interleave`, `flow`: `perfbench gate SUITE.yaml` itself;
* `changepoint`: steps in a metric's history (ruptures, with a minimum segment length);
* `report`: Markdown, JUnit XML and JSON; `transfer`: results export and import.

numpy, scipy and ruptures come with the `gate` extra and are imported only by the commands that
need them, so the rest of perfbench starts without them.
"""

from __future__ import annotations

from perfbench.errors import PerfbenchError

#: Exit code of the gate when something could not be measured (never 1: that is a regression).
EXIT_NOT_MEASURED = 4


class NotMeasured(PerfbenchError):
    """The gate could not measure (a backend crashed, a worker died): exit 4, never 1."""

    exit_code = EXIT_NOT_MEASURED


class MissingExtra(PerfbenchError):
    """numpy, scipy or ruptures is missing: install the `gate` extra."""

    exit_code = 2


def need_gate_extra() -> None:
    """Fail with the install command, not a traceback, when the gate's libraries are missing."""
    import importlib.util

    missing = [m for m in ("numpy", "scipy", "ruptures") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"this command needs {', '.join(missing)}: pip install 'perfbench[gate]' "
                           "(or PERFBENCH_EXTRAS=...,gate bash scripts/setup.sh)")
