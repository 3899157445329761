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

# pip, minus the noise of this machine's optional local package indexes.
pip_install() {
  "$VPY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

EXTRAS=${PERFBENCH_EXTRAS:-torch,hf-pipeline,llama-cpp,serving,sweep,ray,dashboard,gate,dev}
case ",${EXTRAS}," in *,torch,*|*,hf-pipeline,*|*,vllm,*) want_torch=1 ;; *) want_torch=0 ;; esac
if [ "$want_torch" = 1 ] && ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: no torch found; installing the CPU build (${PERFBENCH_TORCH_SPEC:-torch==2.13.0})" >&2
  pip_install "${PERFBENCH_TORCH_SPEC:-torch==2.13.0}"
fi

# Extras: by default every part that runs on a CPU: the backends' engines (torch, hf-pipeline,
# llama-cpp), serving, sweeps, Ray, the dashboard, the CI gate and dev = test tools. Choose fewer with
# PERFBENCH_EXTRAS=llama-cpp (a Raspberry Pi needs no torch); add vllm (GPU).
# llama-cpp-python has no wheel for every platform: pip builds it from source once (about 10 minutes
# on 2 cores) and reuses the built wheel from its cache afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}
pip_install -e ".[${EXTRAS}]"
echo "setup: ready ($("$VPY" -c 'import perfbench, importlib.metadata as m
def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return "-"
print("perfbench", perfbench.__version__, "torch", v("torch"), "llama-cpp-python", v("llama-cpp-python"))'))" >&2
