#!/usr/bin/env bash
# Set up perfbench in ./.venv. Idempotent: re-running only installs what is missing.
#
# The venv sees the system site-packages, so a GPU user's own CUDA build of torch is used as is.
# Only where no torch is importable does this install the CPU build (PERFBENCH_TORCH_SPEC,
# default torch==2.13.0), so set-up never pulls a multi-GB CUDA build by accident.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "perfbench needs Python >= 3.11")'

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python

if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: no torch found; installing the CPU build (${PERFBENCH_TORCH_SPEC:-torch==2.13.0})" >&2
  "$VPY" -m pip install -q "${PERFBENCH_TORCH_SPEC:-torch==2.13.0}"
fi

# Extras: dev = test tools. Add more with PERFBENCH_EXTRAS=dev,dashboard,...
"$VPY" -m pip install -q -e ".[${PERFBENCH_EXTRAS:-dev}]"
echo "setup: ready ($("$VPY" -c 'import torch, perfbench; print("perfbench", perfbench.__version__, "torch", torch.__version__)'))" >&2
