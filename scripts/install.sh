#!/usr/bin/env bash
# Installs diff-plugin for the command line and scripts, and nothing else (no tests: README.md,
# "Tests"): a venv (default .venv), a torch for this machine, then the package with its metrics
# extra (`diffplugin evaluate`).
#
#   bash scripts/install.sh [VENV]
#
# Which torch: one already in the venv is kept. Else, where nvidia-smi sees a GPU, PyPI's (a CUDA
# build); on Linux without one, PyTorch's CPU build (https://download.pytorch.org/whl/cpu: PyPI's
# Linux build would fetch several GB of CUDA libraries it cannot use); elsewhere PyPI's (macOS: mps;
# Windows: PyPI's is a CPU build, so for an NVIDIA GPU there give the index pytorch.org names, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128).
# TORCH_INDEX_URL chooses the index instead ("" = pip's own settings), TORCH_SPEC the version
# (default: torch, the newest).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
started=$SECONDS

python3 -m venv "$venv"
python="$venv/bin/python"
"$python" -m pip install --quiet --upgrade pip
if "$python" -c "import torch" 2>/dev/null; then
    echo "torch $("$python" -c 'import torch; print(torch.__version__)') is in $venv already: kept"
else
    if [[ -z "${TORCH_INDEX_URL+set}" ]]; then
        TORCH_INDEX_URL=""
        if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } && [[ "$(uname -s)" == Linux ]]; then
            TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
        fi
    fi
    echo "installing ${TORCH_SPEC:-torch} from ${TORCH_INDEX_URL:-the index pip is set up with}"
    "$python" -m pip install --quiet "${TORCH_SPEC:-torch}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
PYTHONWARNINGS=ignore "$python" -m pip install --quiet -e ".[metrics]"   # no setuptools chatter about editable installs
"$python" - <<'PY'
import torch

where = "CUDA " + torch.version.cuda if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "CPU")
print(f"torch {torch.__version__} runs on the {where} here")
PY
echo "installed in $((SECONDS - started)) s: . $venv/bin/activate, then diffplugin --help"
