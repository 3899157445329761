#!/usr/bin/env bash
# Set up (idempotent) and run the embedded default workload: a tiny Llama on CPU, batch sweep,
# stored in results/perfbench.sqlite, summary table printed. Extra args go to `perfbench run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/perfbench run workloads/tiny-llama-cpu.yaml "$@"
