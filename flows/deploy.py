"""Deploy the OCR-MEM flow to a GPU docker work pool, running the project's Docker image.

    prefect work-pool create ocrmem-gpu --type docker      # once (needs `pip install prefect-docker`)
    docker build -t ocrmem:latest .                         # the image (Dockerfile), pushed where workers pull
    python -m flows.deploy --image REGISTRY/ocrmem:TAG --repo /srv/ocrmem   # register (from the repo root)
    prefect worker start --pool ocrmem-gpu                  # on the GPU host
    prefect deployment run ocrmem-pipeline/ocrmem-gpu

The flow runs `dvc repro` stage by stage, so it needs the repository itself, not only the code in
the image: `--repo` is the checkout on the GPU host (with .git, .dvc, params.yaml, and its models,
data and DVC cache), mounted at /app, the image's WORKDIR, where its params.yaml and dvc.lock are
read and written. The image brings the environment: CUDA PyTorch, DeepSpeed, dvc, git and the
`ocrmem` command. The container asks Docker for every GPU (`device_requests`, the `docker run
--gpus all` equivalent); tags name the encoder, LLM and projector read from params.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from flows.pipeline import ocrmem_pipeline

POOL = "ocrmem-gpu"
IMAGE = "ocrmem:latest"
WORKDIR = "/app"  # the Dockerfile's WORKDIR: the repo root inside the image

# Docker SDK DeviceRequest: all GPUs with the nvidia driver (= `docker run --gpus all`).
GPU_REQUEST = {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}


def job_variables(image: str = IMAGE, gpus: int = -1, repo: str | None = None) -> dict:
    return {
        "image": image,
        "volumes": [f"{repo}:{WORKDIR}"] if repo else [],  # the repo the flow's `dvc repro` runs in
        "image_pull_policy": "IfNotPresent",
        "env": {"PREFECT_LOGGING_LEVEL": "INFO", "DVC_NO_ANALYTICS": "1", "WANDB_MODE": "offline"},
        "container_create_kwargs": {
            "device_requests": [{**GPU_REQUEST, "count": gpus}],
            "shm_size": "8g",  # DataLoader workers and NCCL need more than Docker's 64 MB
            "working_dir": WORKDIR,
            # The image's ENTRYPOINT is `ocrmem`; the worker's command is `prefect flow-run execute`.
            "entrypoint": ["/usr/bin/env"],
        },
    }


def build_deployment(params_path: str = "params.yaml", image: str = IMAGE, pool: str = POOL, name: str = "ocrmem-gpu",
                     gpus: int = -1, repo: str | None = None):
    """The RunnerDeployment (not yet registered): flow, pool, image + GPU request + the repo mounted at /app."""
    p = yaml.safe_load(Path(params_path).read_text()) or {}
    m = p.get("model", {})
    tags = ["ocrmem", f"encoder:{m.get('encoder')}", f"llm:{Path(str(m.get('base_llm_model_name'))).name}",
            f"projector:{m.get('projector')}"]
    return ocrmem_pipeline.to_deployment(
        name=name,
        work_pool_name=pool,
        job_variables=job_variables(image, gpus, repo),
        parameters={"workdir": WORKDIR},
        tags=tags,
        description=f"OCR-MEM pipeline (dvc repro per stage) on a GPU in {image}, repo {repo} at {WORKDIR}",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--image", default=IMAGE)
    ap.add_argument("--pool", default=POOL)
    ap.add_argument("--name", default="ocrmem-gpu")
    ap.add_argument("--gpus", type=int, default=-1, help="GPUs per run (-1: all)")
    ap.add_argument("--repo", default=str(Path.cwd()), help="the checkout on the GPU host, mounted at /app")
    a = ap.parse_args()
    from prefect import deploy

    dep = build_deployment(a.params, a.image, a.pool, a.name, a.gpus, a.repo)
    # The image is built with `docker build` (Dockerfile) and pushed by you: Prefect neither builds nor pushes it.
    deploy(dep, work_pool_name=a.pool, image=a.image, build=False, push=False)


if __name__ == "__main__":
    main()
