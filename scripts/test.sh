#!/usr/bin/env bash
# Set up (idempotent) and run the CPU test suite. GPU tests are marked `gpu` and skip without CUDA;
# on a GPU machine run them with: bash scripts/test.sh -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests cover every backend that runs on a CPU (torch, hf-pipeline, llama.cpp) and the optional
# parts: sweeps (optuna), the Ray executor, plotly figures, serving (aiohttp, llama.cpp's server),
# the CI gate (scipy, ruptures).
PERFBENCH_EXTRAS=${PERFBENCH_EXTRAS:-dev,torch,hf-pipeline,llama-cpp,serving,sweep,ray,dashboard,gate} bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
