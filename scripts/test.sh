#!/usr/bin/env bash
# Set up (idempotent) and run the CPU test suite. GPU tests are marked `gpu` and skip without CUDA;
# on a GPU machine run them with: bash scripts/test.sh -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests cover every backend that runs on a CPU (torch, hf-pipeline, llama.cpp) and the optional
# parts: sweeps (optuna), the Ray executor, plotly figures, serving (aiohttp, llama.cpp's server),
# the CI gate (scipy, ruptures).
PERFBENCH_EXTRAS=${PERFBENCH_EXTRAS:-dev,torch,hf-pipeline,llama-cpp,serving,sweep,ray,dashboard,gate} bash scripts/setup.sh
# The dashboard's browser tests drive a real headless Chromium: install it and its driver from the
# system's packages where we can (CI runs as root); elsewhere those tests skip and say why.
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver (apt) for the dashboard's browser tests" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; } \
      || echo "setup: could not install chromium; the browser tests will skip" >&2
  else
    echo "setup: no chromium/chromedriver and no root apt-get; the dashboard's browser tests will skip" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
