#!/usr/bin/env bash
# Every GPU measurement in BENCHMARKS.md, in one run (a lent H100 has minutes, not hours).
# Usage: OUT=out DATA=path/to/data bash benchmarks/gpu_suite.sh
# Without aeopt's dependencies installed, pass wheels in WHEELS=dir (installed to /tmp/site).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export AEOPT_DATA_DIR=${DATA:-${AEOPT_DATA_DIR:-../shared/data}} PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$(pwd)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name())"
step() { local limit=$1 name=$2; shift 2; echo "== $name"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "Warning\|warn(" | tee "$OUT/$name.log"; echo "($name: $((SECONDS - t0)) s)"; }
step 90 cuda_tests python3 -m pytest -q -p no:cacheprovider tests/unit/training/test_fused.py
step 60 fused_folds python3 benchmarks/fused_folds.py --device cuda --repeats 3 --wide --json "$OUT/fused_folds.json"
step 45 throughput python3 benchmarks/throughput.py --device cuda --epochs 2 --json "$OUT/throughput.json"
step 80 quality python3 benchmarks/quality.py --device cuda --json "$OUT/quality.json"
step 190 report python3 benchmarks/report_vs_aeopt.py --device cuda --best benchmarks/conv_ae_wide.yaml \
  --json "$OUT/report.json" --markdown "$OUT/report.md"
step 130 seed_vs_aeopt python3 benchmarks/seed_vs_aeopt.py --device cuda --folds 3 --max-seconds 40 --json "$OUT/seed.json"
