#!/usr/bin/env bash
# The node pack's tests inside a real ComfyUI, with ComfyUI's own Python:
#   COMFYUI_DIR=/path/to/ComfyUI [COMFYUI_PYTHON=/path/to/its/python] bash scripts/test_comfyui.sh [pytest options]
# (docs/testing.md; .ci/run sets both from .ci/comfy_host).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${COMFYUI_DIR:?set COMFYUI_DIR to a ComfyUI checkout (docs/testing.md)}"
python="${COMFYUI_PYTHON:-$COMFYUI_DIR/.venv/bin/python}"
export COMFYUI_DIR COMFYUI_PYTHON="$python"
exec "$python" -m pytest tests/test_comfyui*.py tests/test_workflows_frontend.py "$@"
