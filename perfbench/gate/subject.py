"""The subject under test: which commit, branch, CI run and engine version a gate run measured.

Flags win; then CI variables (GitHub Actions, GitLab, Buildkite, Jenkins, CircleCI) or
PERFBENCH_COMMIT / PERFBENCH_BRANCH / PERFBENCH_CI_RUN_ID / PERFBENCH_ENGINE_VERSION; then the git
checkout of the working directory (the code under test is the user's, not perfbench's).
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping

_ENV = {
    "commit": ("PERFBENCH_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "GIT_COMMIT", "CIRCLE_SHA1"),
    "branch": ("PERFBENCH_BRANCH", "GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BUILDKITE_BRANCH",
               "GIT_BRANCH", "CIRCLE_BRANCH"),
    "ci_run_id": ("PERFBENCH_CI_RUN_ID", "GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILDKITE_BUILD_NUMBER", "BUILD_ID",
                  "CIRCLE_BUILD_NUM"),
    "engine_version": ("PERFBENCH_ENGINE_VERSION",),
}
_GIT = {"commit": ["rev-parse", "HEAD"], "branch": ["rev-parse", "--abbrev-ref", "HEAD"]}


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value and value != "HEAD" else None


def subject(flags: Mapping[str, str | None] | None = None, env: Mapping[str, str] | None = None,
            role: str = "candidate") -> dict:
    """The subject dict stored with each run (`runs.subject_json`)."""
    flags, env = flags or {}, os.environ if env is None else env
    out: dict = {"role": role}
    for key, names in _ENV.items():
        value = flags.get(key) or next((env[n] for n in names if env.get(n)), None)
        if value is None and key in _GIT:
            value = _git(_GIT[key])
        if value:
            out[key] = str(value)
    if key_source := next((n for n in _ENV["ci_run_id"] if env.get(n)), None):
        out["ci"] = key_source.split("_")[0].lower()
    if env.get("PERFBENCH_TEST_SLOWDOWN"):  # a planted slowdown says so in every run it touched
        out["planted_slowdown"] = env["PERFBENCH_TEST_SLOWDOWN"]
    return out
