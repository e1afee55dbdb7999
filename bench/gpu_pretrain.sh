#!/usr/bin/env bash
# Stage 1 at GPU scale: `ocrmem pretrain` (the reader train.init_from starts from), one command, on a machine
# with or without a package registry. The Fox table lands in OUT_DIR/pretrain.json, the reader in
# OUT_DIR/reader (copy it to pretrained/reader to ship it).
#
#   bash bench/gpu_pretrain.sh OUT_DIR [WHEELS_DIR]
#   PROJECTOR=resampler TOKEN_POOL=32 bash bench/gpu_pretrain.sh runs/pretrain-resampler-32   # another point
#   STAGE=fox STEPS=500 bash bench/gpu_pretrain.sh runs/fox       # the Fox table: `ocrmem fox` on the same corpus,
#       every kind of PROJECTORS (default: mlp2x_gelu frame_mean resampler mean_pool) side by side, the truncated-
#       text control beside them; OUT_DIR gets fox.json, fox.csv, fox_curves.csv, fox.png
#
# WHEELS_DIR: as bench/gpu_recipes.sh (what the machine's image lacks, and PP-OCRv6_rec_small.onnx). The run:
# SmolLM2-135M (ocrmem standins), the default render and recognizer, 8,192 reading texts of up to 1,400
# characters (two pages), 2,000 reconstruction steps of batch 32, 64 held-out texts read back at fs24/fs20/fs16.
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi: CPU run"
python3 -m ocrmem.cli standins --out models
export OCRMEM_MODEL__PROJECTOR=${PROJECTOR:-mlp2x_gelu} OCRMEM_MODEL__TOKEN_POOL=${TOKEN_POOL:-16}
export OCRMEM_RENDER__MAX_PAGES=2 OCRMEM_RENDER__WORKERS=8 OCRMEM_EVAL__BATCH_SIZE=32
export OCRMEM_PRETRAIN__N_TRAIN=${N_TRAIN:-8192} OCRMEM_PRETRAIN__N_EVAL=${N_EVAL:-64}
export OCRMEM_PRETRAIN__N_CHARS=1400 OCRMEM_PRETRAIN__MAX_STEPS=${STEPS:-2000} OCRMEM_PRETRAIN__BATCH_SIZE=32
export OCRMEM_PRETRAIN__MAX_TARGET_TOKENS=512 OCRMEM_PRETRAIN__OUT_DIR=runs/pretrain/data
export OCRMEM_PRETRAIN__OUTPUT_DIR=runs/pretrain/checkpoints OCRMEM_PRETRAIN__READER_DIR="$out/reader"
export OCRMEM_TRAIN__LOGGING_STEPS=50 OCRMEM_TRAIN__SAVE_STEPS=250
if [ "${STAGE:-pretrain}" = fox ]; then
  kinds=$(printf '"%s",' ${PROJECTORS:-mlp2x_gelu frame_mean resampler mean_pool})
  export OCRMEM_FOX__PROJECTORS="[${kinds%,}]" OCRMEM_FOX__MAX_STEPS=${STEPS:-2000} OCRMEM_FOX__OUTPUT_DIR=runs/fox/checkpoints
  python3 -c "
from ocrmem.settings import load_settings
from ocrmem.evaluation.fox import fox
fox(load_settings('params.yaml'), metrics_path='$out/fox.json', plots_dir='$out')
"
  exit
fi
python3 -c "
from ocrmem.settings import load_settings
from ocrmem.training.pretrain import pretrain
pretrain(load_settings('params.yaml'), metrics_path='$out/pretrain.json')
"
