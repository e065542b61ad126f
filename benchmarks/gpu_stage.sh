#!/usr/bin/env bash
# Stages what benchmarks/gpu_suite.sh needs on a lent GPU machine that reaches no network and whose
# Python (3.12 by default: GPU_PYTHON) already holds torch, torchvision, numpy, scikit-learn, typer,
# pyyaml, tqdm and matplotlib but not aeopt's other dependencies:
#   .gpu/wheels  those dependencies (optuna, sqlalchemy, alembic, pydantic, ...), the versions installed
#                in the environment running this script, as wheels for that Python on x86-64 Linux
#   .gpu/data    Fashion-MNIST's four .gz files (31 MB; aeopt reads them as they are)
# .gpu/ is ignored through .git/info/exclude, so it travels only when named in `carry`. Then, with the
# device tool, from the repository root (about 46 MB travel; the limit is 64 MiB):
#   command: OUT=$OUT DATA=.gpu/data WHEELS=.gpu/wheels bash benchmarks/gpu_suite.sh
#   carry:   [".gpu"]      timeout_s: 480
# Run it from aeopt's environment: bash benchmarks/gpu_stage.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-${AEOPT_DATA_DIR:-../shared/data}}
py=${GPU_PYTHON:-3.12}
raw=$src/FashionMNIST/raw
[ -d "$raw" ] || raw=$src  # a flat folder of the four files (Debian's layout)
ls "$raw"/train-images-idx3-ubyte.gz >/dev/null 2>&1 || {
  echo "error: no Fashion-MNIST .gz files in $src (FashionMNIST/raw/ or flat); pass the data folder" >&2; exit 2; }
# Not plotly (10 MB; only reports use it) nor psycopg (the suite's studies are SQLite).
packages="optuna sqlalchemy alembic mako colorlog pydantic pydantic-core annotated-types typing-inspection
optuna-dashboard bottle"
pins=$(python3 - $packages <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = []
for name in sys.argv[1:]:
    try:
        pins.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"error: {name} is not installed here; run this from aeopt's environment")
print(" ".join(pins))
EOF
)
rm -rf .gpu
mkdir -p .gpu/wheels .gpu/data/FashionMNIST/raw
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
cp "$raw"/*-idx?-ubyte.gz .gpu/data/FashionMNIST/raw/
# shellcheck disable=SC2086  # one argument per pin
python3 -m pip download -q --dest .gpu/wheels --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 $pins
echo "staged: $(du -sh .gpu | cut -f1) in .gpu ($(ls .gpu/wheels | wc -l) wheels, $(ls .gpu/data/FashionMNIST/raw | wc -l) data files)"
echo "device run: command 'OUT=\$OUT DATA=.gpu/data WHEELS=.gpu/wheels bash benchmarks/gpu_suite.sh', carry ['.gpu'], timeout_s 480"
