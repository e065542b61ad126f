#!/usr/bin/env bash
# Time to quality on one GPU, full Fashion-MNIST (issue 13 item 6, GPU half): aeopt's default study,
# the report's grid and a plain Optuna script, each searching BUDGET seconds, then each best refit
# (50 epochs at most, patience 8, on the whole training split) and tested once.
#
# A lent GPU session has about 15 minutes and 10 minutes per command, so the searches and the refits
# are separate commands: each arm searches with --no-refit (BUDGET + start-up), then MERGE=1 refits
# the three bests and writes the table and PNG (about 3 minutes on an H100). One budget per session:
#   BUDGET=120 bash benchmarks/gpu_time_to_quality.sh                    # all of it, ~9 minutes
#   BUDGET=300 ARMS=aeopt bash benchmarks/gpu_time_to_quality.sh         # one command per arm ...
#   BUDGET=300 ARMS=grid bash benchmarks/gpu_time_to_quality.sh
#   BUDGET=300 ARMS=optuna bash benchmarks/gpu_time_to_quality.sh
#   BUDGET=300 MERGE=1 bash benchmarks/gpu_time_to_quality.sh           # ... then the refits
# (600 s: the same, in a session of its own per arm or two.) benchmarks/gpu_suite.sh may call it
# with its OUT and DATA. WORKERS: worker processes of the two aeopt arms (the plain script has one).
# A check of the script on a CPU: DEVICE=cpu EXTRA=--smoke BUDGET=20 bash benchmarks/gpu_time_to_quality.sh
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export AEOPT_DATA_DIR=${DATA:-${AEOPT_DATA_DIR:-../shared/data}} PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-120} ARMS=${ARMS:-aeopt,grid,optuna} WORKERS=${WORKERS:-4} DEVICE=${DEVICE:-cuda}
# shellcheck disable=SC2206  # EXTRA: more options, split on spaces
TTQ=(python3 benchmarks/time_to_quality.py --device "$DEVICE" --train-subset 0 --refit-epochs 50 --refit-patience 8
     ${EXTRA:-})
if [ -z "${MERGE:-}" ]; then
  for arm in ${ARMS//,/ }; do
    echo "== $arm: $BUDGET s of search"
    timeout $((BUDGET + 180)) "${TTQ[@]}" --budgets "$BUDGET" --arms "$arm" --workers "$WORKERS" --no-refit \
      --json "$OUT/ttq_gpu_${BUDGET}_$arm.json" 2>&1 | grep -v "Warning\|warn(" | tail -3
  done
fi
if [ -n "${MERGE:-}" ] || [ "$ARMS" = "aeopt,grid,optuna" ]; then
  echo "== refits of the bests at $BUDGET s"
  timeout 540 "${TTQ[@]}" --merge "$OUT"/ttq_gpu_"${BUDGET}"_*.json --json "$OUT/ttq_gpu_$BUDGET.json" \
    --png "$OUT/ttq_gpu_$BUDGET.png" 2>&1 | grep -v "Warning\|warn("
fi
