# Sourced by .ci/quickstart and .ci/run: `ensure_venv DIR` creates the virtual environment DIR, or
# reuses it when it was installed from this very pyproject.toml (a stamp inside DIR keeps the hash),
# and activates it. Torch comes first and is never replaced when one that satisfies pyproject.toml
# is already there (a CPU-only or a specific CUDA build installed beforehand, see README "Install").
#
# Environment: PYTHON (default python3, 3.11 or newer); AEOPT_TORCH_INDEX_URL, an index for the
# torch wheels (https://download.pytorch.org/whl/cpu for a CPU-only build, .../whl/cu126 for CUDA 12.6).

_venv_pip() {
  # Progress only (what is being fetched, what got installed); this machine's pip also prints a
  # harmless "WARNING: Location ..." line per local index.
  python -m pip "$@" 2>&1 | { grep --line-buffered -E "^(Collecting|Downloading|Successfully|ERROR|error)" || true; }
  return "${PIPESTATUS[0]}"
}

_venv_stamp() {
  # What the installed environment was built from: pyproject.toml's content and the interpreter.
  { cat pyproject.toml; python -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

_venv_torch_ok() {
  # True when the active environment's torch and torchvision satisfy pyproject.toml's ranges.
  python - <<'EOF' 2>/dev/null
import re, sys
from importlib.metadata import version
def parts(v):
    return tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", v).groups())
ok = (2, 4) <= parts(version("torch")) < (3, 0) and (0, 19) <= parts(version("torchvision")) < (1, 0)
sys.exit(0 if ok else 1)
EOF
}

ensure_venv() {
  local venv=$1 lock
  # Two scripts started at once in one checkout (quickstart and run) must not install into the same
  # environment together: hold a lock on the folder that holds it while checking and installing.
  if command -v flock >/dev/null 2>&1; then
    mkdir -p "$(dirname "$venv")"
    exec {lock}<"$(dirname "$venv")"
    flock "$lock"
  fi
  local rc=0
  _ensure_venv "$venv" || rc=$?
  if [ -n "${lock:-}" ]; then exec {lock}<&-; fi
  return "$rc"
}

_ensure_venv() {
  local venv=$1 py=${PYTHON:-python3}
  if ! command -v "$py" >/dev/null 2>&1 \
      || ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: aeopt needs Python 3.11 or newer as '$py'; install it, or run with PYTHON=/path/to/python3.11" >&2
    return 1
  fi
  if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    echo "== $venv is broken (its Python is gone): recreating it"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the virtual environment $venv"
    "$py" -m venv "$venv" || { echo "error: could not create $venv with $py -m venv (Debian: apt-get install python3-venv)" >&2; return 1; }
  fi
  . "$venv/bin/activate" || return 1
  local stamp
  stamp=$(_venv_stamp)
  if [ -f "$venv/.aeopt-stamp" ] && [ "$(cat "$venv/.aeopt-stamp")" = "$stamp" ] \
      && python -c 'import aeopt, torch' 2>/dev/null; then
    echo "== reusing $venv (pyproject.toml unchanged since it was installed)"
    return 0
  fi
  rm -f "$venv/.aeopt-stamp"
  _venv_pip install -q --upgrade pip || { echo "error: pip could not upgrade itself in $venv; see its message above" >&2; return 1; }
  if _venv_torch_ok; then
    echo "== keeping the installed torch $(python -c 'import torch; print(torch.__version__)')"
  else
    # On Linux the default index's torch is the CUDA build (about 3 GB of wheels); see README "Install".
    echo "== installing torch 2.14.1 and torchvision 0.29.1${AEOPT_TORCH_INDEX_URL:+ from $AEOPT_TORCH_INDEX_URL}"
    _venv_pip install torch==2.14.1 torchvision==0.29.1 \
      ${AEOPT_TORCH_INDEX_URL:+--index-url "$AEOPT_TORCH_INDEX_URL"} || true
    _venv_torch_ok || { echo "error: torch did not install into $venv; see pip's message above" >&2; return 1; }
  fi
  echo "== installing aeopt and its dependencies (editable, with [dev])"
  _venv_pip install -e ".[dev]" || { echo "error: pip could not install aeopt into $venv; see its message above" >&2; return 1; }
  echo "$stamp" >"$venv/.aeopt-stamp"
}
