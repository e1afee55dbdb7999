"""Distributed training run for real on the CPU, every run a subprocess on the
tiny stand-ins, as the README launches it:

- DeepSpeed resume points (ZeRO-2, ZeRO-3) hold no frozen weight, and a run SIGKILLed after a checkpoint
  resumes to the adapter of an uninterrupted run;
- 2 processes (gloo) under `torchrun` and under the `deepspeed` launcher give the adapter of one process
  at the same global batch; only rank 0 writes files (rank 1 only its own shard of a resume point),
  prints summaries and logs to WandB; a kill and resume works under either launcher.

Which rank wrote what: tests/rank_probe/sitecustomize.py (on the ranks' PYTHONPATH) lists the files
each rank wrote. Rank 1 prints one line on its own, transformers' "[INFO] Running in WANDB offline
mode" at import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_settings_dict
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "rank_probe"
STEPS, SAVE = 4, 2  # a kill at train:3 leaves checkpoint-2 and no checkpoint-3
RANK_FILES = ("rng_state_1.pth", "zero_pp_rank_1_")  # the resume state only rank 1 has
DS_PROBE = ("test.c", "test.o", "stderr.txt")


@pytest.fixture(scope="module")
def data(tiny_models, tmp_path_factory):
    """Pages and features made once; every run trains on them in its own directory."""
    from ocrmem.data.features import encode
    from ocrmem.data.manifest import render_dataset
    from ocrmem.settings import Settings

    root = tmp_path_factory.mktemp("dist")
    s = Settings.model_validate(tiny_settings_dict(root, tiny_models, train={
        "max_steps": STEPS, "save_steps": SAVE, "save_total_limit": 3, "per_device_train_batch_size": 4}))
    render_dataset(s, progress=False)
    encode(s, progress=False)
    return root, s


def _run_dir(data, name: str, wandb: bool = False, **train):
    root, s = data
    run = root / name
    run.mkdir()
    s = s.model_copy(deep=True)
    s.train.output_dir = str(run / "ckpt")
    if wandb:
        s.train.report_to, s.tracking.wandb_mode = "wandb", "offline"
    for k, v in train.items():
        setattr(s.train, k, v)
    (run / "params.yaml").write_text(yaml.safe_dump(json.loads(s.model_dump_json())))
    return run, s


def _env(run: Path, port: int, fault: str | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OCRMEM_FAULT_AT")}
    env.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(PROBE), env.get("PYTHONPATH", "")]), OCRMEM_PROBE_DIR=str(run),
               OMP_NUM_THREADS="1", **extra)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    if fault:
        env["OCRMEM_FAULT_AT"] = fault
    return env


def _launch(cmd: list[str], run: Path, env: dict, killed: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=900)
    out = f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert (r.returncode != 0) if killed else (r.returncode == 0), out
    return r


def _train_cmd(launcher: list[str], module: str = "-m") -> list[str]:
    return launcher + [module, "ocrmem.cli", "train", "--params", "params.yaml"]


def _one_process(run: Path, port: int, fault: str | None = None) -> subprocess.CompletedProcess:
    """`ocrmem train` as one DeepSpeed process (what the launcher sets up for rank 0 of 1)."""
    env = _env(run, port, fault, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    return _launch([sys.executable, "-m", "ocrmem.cli", "train", "--params", "params.yaml"], run, env, bool(fault))


def _adapter(run: Path) -> dict:
    return load_file(str(run / "ckpt" / "adapter" / "adapter.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _trained_and_frozen(s) -> tuple[int, set[str]]:
    """Bytes of the trained tensors; state-dict names of the frozen ones (tied aliases included)."""
    from ocrmem.memory import OcrMemModel

    model = OcrMemModel.build(s)
    trained = dict(model.trainable_parameters())
    return sum(p.numel() * p.element_size() for p in trained.values()), set(model.state_dict()) - set(trained)


def _bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


# -- item 11: DeepSpeed resume points without the frozen LLM ---------------------------------------------


@pytest.mark.parametrize("stage, port", [("ds_zero2.json", 29621), ("ds_zero3.json", 29622)])
def test_deepspeed_resume_point_has_no_frozen_weight_and_resumes(data, stage, port):
    ds = str(REPO / "configs" / stage)
    straight, s = _run_dir(data, f"straight-{stage}", deepspeed=ds)
    _one_process(straight, port)
    ckpt = straight / "ckpt" / f"checkpoint-{SAVE}"
    trained_bytes, frozen = _trained_and_frozen(s)
    states = list(ckpt.glob("global_step*/*model_states.pt"))
    assert states, sorted(p.name for p in ckpt.rglob("*"))
    for f in states:
        module = torch.load(f, map_location="cpu", weights_only=False)["module"]
        assert not frozen & set(module), f"{f.name} holds frozen {sorted(frozen & set(module))[:3]}"
    size = _bytes(ckpt / f"global_step{SAVE}")
    print(f"{stage}: engine state of checkpoint-{SAVE} {size:,} bytes; trained tensors {trained_bytes:,} bytes")
    assert size <= 4 * trained_bytes + 64 * 1024  # the module's copy, fp32 master, 2 Adam moments, pickling

    killed, _ = _run_dir(data, f"killed-{stage}", deepspeed=ds)
    _one_process(killed, port, fault=f"train:{SAVE + 1}")  # SIGKILL after checkpoint-2, before step 3 is saved
    assert not (killed / "ckpt" / "adapter").exists()
    r = _one_process(killed, port)
    assert f"resuming from {killed / 'ckpt' / f'checkpoint-{SAVE}'}" in r.stdout
    diff = _max_diff(_adapter(straight), _adapter(killed))
    print(f"{stage}: resumed vs uninterrupted adapter, max abs diff {diff:.3g}")
    assert diff <= 1e-6


# -- item 12: 2 processes on the CPU (gloo) under the README's launchers -------------------------------


def _torchrun(run: Path, port: int, fault: str | None = None) -> dict:
    """`torchrun --nproc_per_node 2 -m ocrmem.cli train`; returns each rank's stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "--log-dir", str(run / "logs"), "--redirects", "3"]
    _launch(_train_cmd(cmd), run, _env(run, port, fault, WANDB_MODE="offline"), killed=bool(fault))
    return {rank: "".join(p.read_text() for p in (run / "logs").rglob(f"{rank}/stdout.log")) for rank in (0, 1)}


def _deepspeed(run: Path, port: int, fault: str | None = None) -> dict:
    """`deepspeed --num_gpus 2 --module ocrmem.cli train` (CPU accelerator; it appends --local_rank=N to each
    rank's command); returns each rank's stdout."""
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(port),
           "--enable_each_rank_log", str(run / "logs")]
    _launch(_train_cmd(cmd, "--module"), run, _env(run, port, fault, WANDB_MODE="offline"), killed=bool(fault))
    return {rank: "".join(p.read_text() for p in (run / "logs").rglob(f"*rank{rank}*")) for rank in (0, 1)}


def _written(run: Path, rank: int, data_dir: Path) -> set[str]:
    """What `rank` wrote under the run or the data (tests/rank_probe), relative to the run."""
    paths = {Path(p) for p in (run / f"writes-rank{rank}.txt").read_text().splitlines()}
    probe = {run / n for n in DS_PROBE}  # DeepSpeed's op-builder check compiles in the cwd, then removes them
    return {str(p.relative_to(run)) if p.is_relative_to(run) else str(p) for p in paths
            if (p.is_relative_to(run) or p.is_relative_to(data_dir)) and not p.name.startswith("writes-rank")
            and not (p in probe and not p.exists())}


def _check_rank0_only(run: Path, s, out: dict) -> None:
    data_dir = Path(s.data.out_dir)
    rank0, rank1 = _written(run, 0, data_dir), _written(run, 1, data_dir)
    assert any(w.endswith("adapter/adapter.safetensors") for w in rank0), sorted(rank0)  # the probe sees it
    assert rank1 and all(any(f in w for f in RANK_FILES) for w in rank1), sorted(rank1)
    for line in ("trainable parameters:", "step-0 gradient check passed", "adapter:", "'loss'"):
        assert line in out[0] and line not in out[1], (line, out[1][-2000:])
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # one WandB run: rank 0's


@pytest.fixture(scope="module")
def one_process(data):
    """The 1-process adapter (plain or ZeRO-2) at the global batch of 4 that the 2-process runs reach with 2
    per rank; each made once, when first asked for."""
    from ocrmem.training.trainer import train

    made = {}

    def adapter(deepspeed: str | None) -> dict:
        if deepspeed not in made:
            run, s = _run_dir(data, f"one-process-{deepspeed}", deepspeed=deepspeed and str(REPO / "configs" / deepspeed))
            _one_process(run, 29631) if deepspeed else train(s, metrics_path=None)
            made[deepspeed] = _adapter(run)
        return made[deepspeed]

    return adapter


# A rank killed mid-run, once per launcher: how the launcher stops the others is the launcher's, the
# resume is the Trainer's whatever the engine.
@pytest.mark.parametrize("launcher, deepspeed, port, kill", [("torchrun", None, 29641, True),
                                                            ("torchrun", "ds_zero2.json", 29642, False),
                                                            ("deepspeed", "ds_zero2.json", 29643, True)])
def test_two_processes_match_one_and_only_rank0_writes(data, one_process, launcher, deepspeed, port, kill):
    launch = {"torchrun": _torchrun, "deepspeed": _deepspeed}[launcher]
    ds = {"deepspeed": str(REPO / "configs" / deepspeed)} if deepspeed else {}
    run, s = _run_dir(data, f"two-{launcher}-{deepspeed}", wandb=True, per_device_train_batch_size=2, **ds)
    out = launch(run, port)
    diff = _max_diff(one_process(deepspeed), _adapter(run))
    print(f"{launcher} {deepspeed}: 2 processes vs 1 at global batch 4, adapter max abs diff {diff:.3g}")
    assert diff <= 1e-4  # float32 sums over other batch splits; Adam magnifies them where a gradient is ~0
    _check_rank0_only(run, s, out)
    if not kill:
        return

    killed, _ = _run_dir(data, f"killed-{launcher}-{deepspeed}", wandb=True, per_device_train_batch_size=2, **ds)
    launch(killed, port, fault=f"train:{SAVE + 1}@1")  # rank 1 SIGKILLed after checkpoint-2: the launcher stops rank 0
    assert (killed / "ckpt" / f"checkpoint-{SAVE}").is_dir() and not (killed / "ckpt" / "adapter").exists()
    out = launch(killed, port)
    assert f"resuming from {killed / 'ckpt' / f'checkpoint-{SAVE}'}" in out[0]
    diff = _max_diff(_adapter(run), _adapter(killed))
    print(f"{launcher} {deepspeed}: killed and resumed vs uninterrupted, 2 processes, max abs diff {diff:.3g}")
    assert diff <= 1e-6
