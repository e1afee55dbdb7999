#!/usr/bin/env bash
# One prepared GPU run (items 2-4 of the benchmarks + OcrMemTrainer/DeepSpeed step + GPU tests).
#
#   bash bench/gpu.sh            # on a GPU machine; results in bench/results/*-cuda*.json
#
# The lent GPU machines have no package registry: wheels and the DeepSpeed sdist are carried in
# .whl/ (see README, "Benchmarks"). Where pip can reach an index, `pip install -e .` does instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target /tmp/site .whl/deepspeed-*.tar.gz
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
python3 bench/costs.py --device cuda --vision real --llm 0.5b 7b --dtype bfloat16 --workers 0 4 --out costs-cuda.json
python3 bench/trainer_step.py --vision real --llm 0.5b --bf16 --deepspeed configs/ds_zero2.json --workers 4
python3 bench/trainer_step.py --vision real --llm 0.5b --bf16 --workers 4
python3 -m pytest -q -m gpu tests/ -p no:cacheprovider || echo "GPU TESTS FAILED"
