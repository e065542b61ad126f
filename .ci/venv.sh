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
  python -m pip "$@" 2>&1 | { grep --line-buffered -E "^(Collecting|Downloading|Processing|Installing|Successfully|ERROR|error)" || true; }
  return "${PIPESTATUS[0]}"
}

_venv_stamp() {
  # What the installed environment was built from: pyproject.toml's content and the interpreter.
  { cat pyproject.toml; python -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

_venv_has() {
  # True when the active environment holds package $1 at a version in [$2, $3) (major.minor).
  python - "$@" <<'EOF' 2>/dev/null
import re, sys
from importlib.metadata import version
def parts(v):
    return tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", v).groups())
name, low, high = sys.argv[1:]
sys.exit(0 if parts(low) <= parts(version(name)) < parts(high) else 1)
EOF
}

# pyproject.toml's ranges.
_venv_torch_ok() { _venv_has torch 2.4 3.0 && _venv_has torchvision 0.19 1.0; }

_venv_install_torch() {
  local index=(${AEOPT_TORCH_INDEX_URL:+--index-url "$AEOPT_TORCH_INDEX_URL"})
  if _venv_has torch 2.4 3.0; then
    # A torch installed beforehand (a CPU-only or a CUDA build) stays. Its torchvision must be the
    # same build from the same index: PyPI's would not load its operators on a CPU-only torch.
    local v
    v=$(python -c 'from importlib.metadata import version; print(version("torch").split("+")[0])')
    if [ -z "${AEOPT_TORCH_INDEX_URL:-}" ]; then
      echo "error: $VIRTUAL_ENV has torch $v but no torchvision 0.19 to 1.0: install the one built for it from" \
        "the index torch came from (README \"Install\"), or set AEOPT_TORCH_INDEX_URL to that index" >&2
      return 1
    fi
    echo "== keeping the installed torch $v; installing its torchvision from $AEOPT_TORCH_INDEX_URL"
    _venv_pip install "torch==$v" torchvision "${index[@]}" || true
  else
    # On Linux the default index's torch is the CUDA build (several GB); see README "Install".
    echo "== installing torch 2.14.1 and torchvision 0.29.1${AEOPT_TORCH_INDEX_URL:+ from $AEOPT_TORCH_INDEX_URL}"
    _venv_pip install torch==2.14.1 torchvision==0.29.1 "${index[@]}" || true
  fi
  _venv_torch_ok || {
    echo "error: torch and torchvision did not install into $VIRTUAL_ENV; see pip's message above" >&2
    return 1
  }
}

_venv_torch_loads() {
  # A torchvision from another build than torch (PyPI's beside a CPU-only torch) installs but fails
  # to load its operators: check once, when installing.
  python -c 'import torch, torchvision' 2>/dev/null && return 0
  echo "error: torch and torchvision in $VIRTUAL_ENV do not load together (two different builds?):" \
    "reinstall both from one index (README \"Install\"); 'python -c \"import torchvision\"' shows why" >&2
  return 1
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
      && python -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("aeopt") and u.find_spec("torch")))'; then
    echo "== reusing $venv (pyproject.toml unchanged since it was installed)"
    return 0
  fi
  rm -f "$venv/.aeopt-stamp"
  _venv_pip install -q --upgrade pip || { echo "error: pip could not upgrade itself in $venv; see its message above" >&2; return 1; }
  if _venv_torch_ok; then
    echo "== keeping the installed torch $(python -c 'from importlib.metadata import version as v; print(v("torch"))')"
  else
    _venv_install_torch || return 1
  fi
  _venv_torch_loads || return 1
  echo "== installing aeopt and its dependencies (editable, with [dev])"
  _venv_pip install -e ".[dev]" || { echo "error: pip could not install aeopt into $venv; see its message above" >&2; return 1; }
  echo "$stamp" >"$venv/.aeopt-stamp"
}
