# Sourced by the bench/gpu_*.sh scripts: arguments OUT_DIR [WHEELS_DIR], run from the repo root, quiet
# tracking, and on a machine with no package registry the carried wheels and the recognizer's ONNX file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:?OUT_DIR}
wheels=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  export OCRMEM_MODEL__OCR_MODEL_NAME="$PWD/$wheels/PP-OCRv6_rec_small.onnx"
fi
