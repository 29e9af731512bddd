#!/usr/bin/env bash
# Run every benchmark/bench_*.py with the repo's venv python, one after the other (never in
# parallel: the dev machine has 2 cores); stop at the first failure.
# Usage: benchmark/run_all.sh        (data: $JAXLAW_DATA, else <repo>/../shared/data)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # benchmarks import experiments.*
shopt -s nullglob
benches=(benchmark/bench_*.py)
if (( ${#benches[@]} == 0 )); then
  echo "no benchmark/bench_*.py found" >&2
  exit 1
fi
for f in "${benches[@]}"; do
  echo "=== $f"
  "$PY" "$f"
done
