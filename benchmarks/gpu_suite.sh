#!/usr/bin/env bash
# Every GPU figure of issue "Fast trials" (item 6) in one run of about 4 minutes on one H100 (a lent
# GPU has minutes, not hours). Prints, and keeps in $OUT:
#   cuda_tests   the CUDA equivalence tests: fused folds (autoencoders, classifiers) vs sequential, CUDA
#                graphs vs eager (and that a second trial of the same architecture reuses the graph);
#                the few-label pseudo-label rounds on the device; launch's default devices (every GPU)
#   throughput   images/s, aeopt engine vs torchvision + ToTensor + DataLoader; the training step's
#                FLOP/s against the GPU's matmul peak
#   fused_folds  s per 5-fold epoch and per 5-fold x 50-epoch trial on full data, the report's network
#                and a wide one: sequential vs fused vs fused + CUDA graphs (capture cost shown)
#   gpu_study    SM utilization, GPU memory per worker and trials/hour during a short study of the
#                default spec with 1 worker, with `--workers auto`, and with auto workers on the unfused,
#                ungraphed path (before this issue: the trials/hour ratio)
# Usage: OUT=out DATA=path/to/data bash benchmarks/gpu_suite.sh      (FULL=1 adds the slower quality runs)
# Without aeopt's dependencies installed, pass wheels in WHEELS=dir (installed to /tmp/site).
# On a lent machine without network: bash benchmarks/gpu_stage.sh first (it prints the device call).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
# Absolute: benchmarks/gpu_study.py runs its studies in a folder of their own.
AEOPT_DATA_DIR=$(cd "${DATA:-${AEOPT_DATA_DIR:-../shared/data}}" && pwd) || exit 1
export AEOPT_DATA_DIR PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$(pwd)
fi
SUITE_START=$SECONDS
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.get_device_name())"
step() { local limit=$1 name=$2; shift 2; echo "== $name"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "Warning\|warn(" | tee "$OUT/$name.log"
  echo "($name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s; 124 = past its ${limit} s limit)"; }
step 75 cuda_tests python3 -m pytest -q -p no:cacheprovider -rs tests/unit/training/test_fused.py \
  tests/unit/training/test_supervised.py tests/integration/stages/test_few_labels.py tests/unit/search/test_launch.py \
  -k "fused or graphs or cuda or every_gpu"
step 45 throughput python3 benchmarks/throughput.py --device cuda --epochs 2 --flops --json "$OUT/throughput.json"
step 110 fused_folds python3 benchmarks/fused_folds.py --device cuda --repeats 3 --wide --trial-epochs 50 \
  --json "$OUT/fused_folds.json"
step 200 gpu_study python3 benchmarks/gpu_study.py --workers 1,auto,auto:eager --seconds 45 \
  --json "$OUT/gpu_study.json"
if [ -n "${FULL:-}" ]; then  # measured on an earlier H100 (BENCHMARKS.md); not part of the 5-minute suite
  step 80 quality python3 benchmarks/quality.py --device cuda --json "$OUT/quality.json"
  step 190 report python3 benchmarks/report_vs_aeopt.py --device cuda --best benchmarks/conv_ae_wide.yaml \
    --json "$OUT/report.json" --markdown "$OUT/report.md"
fi
echo "== suite: $((SECONDS - SUITE_START)) s"
