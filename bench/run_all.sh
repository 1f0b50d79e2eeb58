#!/usr/bin/env bash
# The CPU benchmark suite in one command (about 10 minutes on a 2-core machine; budget 15).
#   bash bench/run_all.sh            results in $XRT_BENCH_OUT (default /tmp/xrt-bench-results/<time>)
# Each script prints one JSON line (kept as <script>.json, its log as <script>.log); a markdown summary
# table is printed at the end. Bigger runs: pass script options through the *_ARGS variables, e.g.
#   TRAIN_ARGS="--n-small 600 --epochs 8 --img-size 128 --repeats 2" bash bench/run_all.sh
#   PARITY_ARGS="--full" bash bench/run_all.sh        (test-set parity at the real sizes: hours on 2 cores)
# XRT_BENCH_THREADS (default 1): torch threads for both sides of every comparison. On a shared 2-core
# machine two intra-op threads spin-wait on each other and run 2-3x slower than one; set 0 for torch's default.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${XRT_BENCH_OUT:-${TMPDIR:-/tmp}/xrt-bench-results/$(date +%Y%m%d-%H%M%S)}
export XRT_BENCH_THREADS=${XRT_BENCH_THREADS:-1}
mkdir -p "$OUT"
failed=0
t_all=$(date +%s)
echo "results: $OUT" >&2
uptime | tee "$OUT/uptime-start.txt" >&2

run() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $name $*" >&2
  if ! "$PY" "bench/$name.py" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"; then
    echo "   FAILED (see $OUT/$name.log)" >&2
    failed=1
  fi
  echo "   $(( $(date +%s) - t0 )) s" >&2
}

# shellcheck disable=SC2086  # the *_ARGS variables are option lists
run bench_train ${TRAIN_ARGS:-}
run bench_parity ${PARITY_ARGS:-}
run bench_kfold ${KFOLD_ARGS:-}
run bench_ingest ${INGEST_ARGS:-}
run bench_predict ${PREDICT_ARGS:-}
run bench_app ${APP_ARGS:-}
run bench_gpu ${GPU_ARGS:-}
run fault_inject ${FAULT_ARGS:-}

uptime | tee "$OUT/uptime-end.txt" >&2
echo "total $(( $(date +%s) - t_all )) s" | tee "$OUT/total.txt" >&2
"$PY" -c "import sys; sys.path.insert(0, 'bench'); import common; common.print_summary('$OUT')" | tee "$OUT/summary.md"
exit $failed
