"""`perfbench gate SUITE.yaml` (the CI entry point) and `perfbench gate calibrate SUITE.yaml`.

Exit codes: 0 pass, 1 regression confirmed, 2 bad input, 3 store unusable, 4 could not measure.
Any failure that is not a confirmed regression maps to 2, 3 or 4: never 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from perfbench.cli.options import check_format, store_option


class _SuiteIsDefault(TyperGroup):
    """`perfbench gate SUITE.yaml ...` runs the hidden `check` command; named commands stay."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_SuiteIsDefault, no_args_is_help=True,
                  help="CI regression gate: `perfbench gate SUITE.yaml [OPTIONS]` measures the suite, compares "
                       "it with the baseline branch's history (or, with --interleave, with the base measured "
                       "alternately), confirms a suspected regression once, and exits 0 pass, 1 regression "
                       "confirmed, 2 bad input, 3 store unusable, 4 could not measure. Its options: "
                       "`perfbench gate SUITE.yaml --help`.")


def _write(path: Optional[Path], text: str) -> None:
    from perfbench.errors import InputError

    if path is None:
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


@app.command("check", hidden=True)
def check(
    suite: Path = typer.Argument(..., help="Suite YAML (workloads/suites/*.yaml)."),
    store: Path = store_option(),
    commit: Optional[str] = typer.Option(None, "--commit", help="Commit under test (default: GITHUB_SHA, ..., git HEAD)."),
    branch: Optional[str] = typer.Option(None, "--branch", help="Branch under test (default: GITHUB_HEAD_REF / "
                                                                "GITHUB_REF_NAME, ..., git)."),
    ci_run_id: Optional[str] = typer.Option(None, "--ci-run-id", help="CI run id (default: GITHUB_RUN_ID, ...)."),
    engine_version: Optional[str] = typer.Option(None, "--engine-version", help="Engine version under test "
                                                 "(default: what the backend reports)."),
    baseline_branch: Optional[str] = typer.Option(None, "--baseline-branch", help="History to compare with "
                                                  "(default: the suite's baseline.branch, else main)."),
    baseline_runs: Optional[int] = typer.Option(None, "--baseline-runs", help="Last N runs of that history."),
    interleave: Optional[str] = typer.Option(None, "--interleave", help="BASE_CMD: a perfbench command of the base "
                                             "(e.g. '../base/.venv/bin/perfbench'); base and candidate alternate "
                                             "in a randomized order on this machine."),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="Fresh pairs of worker processes per interleaved "
                                        "measurement (default: the suite's)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Interleaved rounds per worker pair (default: the suite's)."),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="Re-measure a suspected regression once "
                                 "before failing (default on: single runs do not alert)."),
    workloads: Optional[list[str]] = typer.Option(None, "--workload", help="Only this workload (repeatable)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the interleaving order (default random)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the Markdown summary here "
                                            "(e.g. \"$GITHUB_STEP_SUMMARY\")."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML here."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full result as JSON here."),
    fmt: str = typer.Option("table", "--format", help="stdout: table | markdown | json"),
) -> None:
    """Run the gate over a suite (the CI entry point)."""
    from perfbench.errors import PerfbenchError
    from perfbench.gate import NotMeasured, need_gate_extra

    check_format(fmt, ("table", "markdown", "json"))
    try:
        opts = _options(suite, store, dict(commit=commit, branch=branch, ci_run_id=ci_run_id,
                                           engine_version=engine_version),
                        baseline_branch, baseline_runs, interleave, rounds, confirm, workloads, seed, pairs)
        need_gate_extra()
        from perfbench.gate.flow import run_gate

        result = run_gate(opts)
    except PerfbenchError as exc:
        if exc.exit_code == 1:  # a crashed run is "could not measure", never "regression"
            raise NotMeasured(str(exc)) from exc
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # anything unforeseen: could not measure (4), not a regression
        raise NotMeasured(f"{type(exc).__name__}: {exc}") from exc
    _emit(result, fmt, markdown, junit, json_out)
    if result["exit_code"]:
        raise typer.Exit(result["exit_code"])


def _options(suite, store, flags, baseline_branch, baseline_runs, interleave, rounds, confirm, workloads, seed,
             pairs=None):
    from perfbench.cli._console import err_console
    from perfbench.errors import InputError
    from perfbench.gate.flow import GateOptions
    from perfbench.gate.subject import subject
    from perfbench.gate.suite import load_suite

    s = load_suite(suite)
    if workloads:
        unknown = sorted(set(workloads) - {w.name for w in s.workloads})
        if unknown:
            raise InputError(f"--workload {', '.join(unknown)}: not in {suite}; allowed: "
                             f"{', '.join(w.name for w in s.workloads)}")
        s.workloads = [w for w in s.workloads if w.name in workloads]
    if baseline_runs is not None and baseline_runs < 1:
        raise InputError(f"--baseline-runs must be at least 1, got {baseline_runs}")
    if rounds is not None and not 8 <= rounds <= 10000:
        raise InputError(f"--rounds must be from 8 to 10000 (the paired test needs 8 to reach p < 0.01), got {rounds}")
    if pairs is not None and not 1 <= pairs <= 100:
        raise InputError(f"--pairs must be from 1 to 100, got {pairs}")
    if interleave is not None and not interleave.strip():
        raise InputError("--interleave needs BASE_CMD, a perfbench command of the base (e.g. '../base/.venv/bin/perfbench')")
    from rich.markup import escape

    return GateOptions(
        suite=s, store_path=store, subject=subject(flags), baseline_branch=baseline_branch or s.baseline_branch,
        baseline_runs=baseline_runs or s.baseline_runs, interleave=interleave, rounds=rounds or s.rounds, block=s.block, pairs=pairs or s.pairs, pin=s.pin,
        hugepages=s.hugepages,
        confirm=confirm and s.confirm, seed=seed, log=lambda m: err_console.print(escape(m), highlight=False))


def _emit(result: dict, fmt: str, markdown, junit, json_out) -> None:
    from perfbench.cli._console import console, print_json
    from perfbench.gate.report import console_table, gate_markdown, junit_xml, to_json

    md = gate_markdown(result)
    _write(markdown, md)
    _write(junit, junit_xml(result))
    _write(json_out, to_json(result))
    if fmt == "json":
        print_json(result)
    elif fmt == "markdown":
        sys.stdout.write(md)
    else:
        from rich.markup import escape

        console.print(console_table(result["comparisons"], f"gate {result['suite']} ({result['mode']})"))
        for line in md.splitlines()[:3] + [x for x in md.splitlines() if x.startswith("- ")]:
            if line.strip():
                console.print(escape(line.replace("\\", "")), highlight=False)


@app.command("calibrate")
def calibrate_cmd(
    suite: Path = typer.Argument(..., help="Suite YAML."),
    store: Path = store_option(),
    rounds: int = typer.Option(1, "--rounds", help="A/A rounds (each measures the suite twice); more rounds, "
                                                   "a safer floor."),
    interleave: bool = typer.Option(False, "--interleave", help="Measure the floor of interleaved gating "
                                    "(A/A with this perfbench on both sides) instead of separate runs."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Measure this machine's noise floor per benchmark point (A/A) and store it: the gate's minimum
    effect is never below it, and its reports say when the floor decided."""
    from perfbench.cli._console import console, print_json
    from perfbench.errors import InputError
    from perfbench.gate import need_gate_extra
    from perfbench.gate.flow import calibrate
    from perfbench.gate.subject import subject
    from perfbench.gate.suite import load_suite

    check_format(fmt, ("table", "json"))
    if not 1 <= rounds <= 100:
        raise InputError(f"--rounds must be from 1 to 100, got {rounds}")
    s = load_suite(suite)
    need_gate_extra()
    from perfbench.cli._console import err_console
    from rich.markup import escape

    rows = calibrate(s, store, rounds=rounds, interleave=interleave, subject=subject(),
                     log=lambda m: err_console.print(escape(m), highlight=False))
    if fmt == "json":
        print_json(rows)
        return
    from rich.table import Table

    t = Table(title=f"noise floors stored in {escape(str(store))}")
    for c in ("workload", "point", "metric", "mode", "floor", "A/A comparisons"):
        t.add_column(c)
    for r in rows:
        t.add_row(escape(r["detail"]["workload"]), r["point_key"], r["metric"], r["mode"], f"{r['floor'] * 100:.1f}%",
                  str(r["pairs"]))
    console.print(t)


@app.command("worker", hidden=True)
def worker(
    spec: Path = typer.Argument(...),
    overrides: Optional[list[str]] = typer.Option(None, "--set"),
) -> None:
    """Interleaving worker (JSON lines on stdin/stdout); started by `perfbench gate --interleave`."""
    from perfbench.gate.interleave import serve

    raise typer.Exit(serve(str(spec), overrides or []))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="gate")
