#!/usr/bin/env bash
# Set up (idempotent) and run the embedded default workload: a tiny Llama on CPU, batch sweep,
# stored in results/perfbench.sqlite, summary table printed. Extra args go to `perfbench run`.
# Then, unless PERFBENCH_DEMO=main, fill the dashboard's other pages with small real runs in the same
# store (about a minute): the same workload traced, a 3x3 sweep and a serving run against llama.cpp's
# server. Open the result with `.venv/bin/perfbench dashboard` (http://127.0.0.1:8050).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/perfbench run workloads/tiny-llama-cpu.yaml "$@"
if [ "${PERFBENCH_DEMO:-all}" != main ]; then
  echo "demo: filling the dashboard's pages (a traced run, a 3x3 sweep, a serving run; PERFBENCH_DEMO=main skips)" >&2
  log=$(mktemp)
  quietly() { "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "demo: failed: $*" >&2; exit 1; }; }
  quietly .venv/bin/perfbench run workloads/tiny-llama-cpu.yaml --trace -q
  quietly .venv/bin/perfbench sweep run workloads/sweeps/tiny-grid.yaml -q
  quietly .venv/bin/perfbench run workloads/serving-llama-cpp-tiny.yaml -q
  rm -f "$log"
fi
echo "demo: done. See it all in the dashboard: .venv/bin/perfbench dashboard  (then open http://127.0.0.1:8050)" >&2
