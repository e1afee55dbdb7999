"""Adapter-only training with the HF Trainer (DeepSpeed optional), tracked in WandB.

    ocrmem train [--params params.yaml]                        # train(settings); CPU / one GPU
    deepspeed --num_gpus 8 -m ocrmem.cli train --params ...    # ZeRO-2/3 (train.deepspeed)

With train.deepspeed set and CUDA GPUs present, `ocrmem train` starts itself through the DeepSpeed
launcher on every local GPU (`deepspeed_command`), so `dvc repro` and the Prefect flow train alike.

`OcrMemTrainer` overrides only what adapter-only training needs: the step-0 gradient guard, the
non-finite-loss stop, per-objective loss logging, and saving/loading just the trained tensors.
A run resumes from the last checkpoint in `train.output_dir`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import SCHEDULER_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints, sort_checkpoints

from ocrmem.common.card import write_model_card
from ocrmem.common.errors import DiskFullError
from ocrmem.common.faults import fault_point
from ocrmem.common.io import FULL_DISK, disk_full, write_json
from ocrmem.common.tracking import print0, trainer_report_to
from ocrmem.data.dataset import TrainingInputs, first_batch, training_inputs
from ocrmem.memory.model import ADAPTER_WEIGHTS, OcrMemModel, read_adapter
from ocrmem.settings import OBJECTIVES, Settings
from ocrmem.training.align import align
from ocrmem.training.gradcheck import GradientFlowError, check_gradient_flow
from ocrmem.training.patches import resume_without_frozen, state_without_frozen


class NonFiniteLossError(RuntimeError):
    pass


PARTIAL = ".partial-"  # prefix of a checkpoint being written; renamed to checkpoint-N when whole


def _incomplete(ckpt: Path) -> str | None:
    """Why checkpoint directory `ckpt` cannot be resumed from, or None when it is complete."""
    state = ckpt / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json (a run was killed while saving it)"
    try:
        json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "its trainer_state.json is torn (a run was killed while saving it)"
    if not ((ckpt / ADAPTER_WEIGHTS).is_file() or (ckpt / "latest").is_file()):  # latest: DeepSpeed's engine state
        return f"it has no {ADAPTER_WEIGHTS}"
    return None


def last_complete_checkpoint(out_dir: str | Path, report: bool = True) -> str | None:
    """The newest checkpoint-N in `out_dir` that a run can resume from; each newer incomplete one is
    skipped, and (with `report`) said so with the reason."""
    if not os.path.isdir(out_dir):
        return None
    for ckpt in reversed(sort_checkpoints(str(out_dir), PREFIX_CHECKPOINT_DIR)):
        why = _incomplete(Path(ckpt))
        if why is None:
            return ckpt
        if report:
            print0(f"skipping {ckpt}: {why}; resuming from the newest complete checkpoint before it")
    return None


def _nonfinite(what: str, args, state) -> NonFiniteLossError:
    last = last_complete_checkpoint(args.output_dir, report=False)
    return NonFiniteLossError(
        f"{what} at step {state.global_step}: training stopped; the last good checkpoint is "
        f"{last or 'none (no checkpoint saved yet)'}; lower train.learning_rate or use fp32/bf16"
    )


class NonFiniteGuard(TrainerCallback):
    """After each optimizer step and before any save: a non-finite trained weight stops the run,
    so no checkpoint is ever written from poisoned weights."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        for name, p in model.trainable_parameters():
            if p.numel() and not torch.isfinite(p.detach()).all():
                raise _nonfinite(f"trained weight {name} is not finite", args, state)
        fault_point("train", state.global_step)  # tests only (ocrmem/common/faults.py)


class OcrMemTrainer(Trainer):
    def __init__(self, *args, tokenizer=None, gradcheck: bool = True, **kwargs):
        if tokenizer is not None:  # transformers 5 removed `tokenizer=`; accept it from old callers
            warnings.warn("OcrMemTrainer(tokenizer=...) is deprecated: pass processing_class=", FutureWarning)
            kwargs.setdefault("processing_class", tokenizer)
        super().__init__(*args, **kwargs)
        self.add_callback(NonFiniteGuard())
        self.gradcheck = gradcheck
        self._obj_loss = torch.zeros(len(OBJECTIVES), dtype=torch.float64)
        self._obj_n = torch.zeros(len(OBJECTIVES), dtype=torch.float64)

    def train(self, *args, **kwargs):
        if self.gradcheck:
            # Before DeepSpeed wraps the model and before any optimizer step: a broken chain stops at
            # step 0 with its diagnosis instead of "element 0 of tensors does not require grad".
            batch = first_batch(self.train_dataset, self.data_collator, self.args.per_device_train_batch_size,
                                self.args.device)
            report = check_gradient_flow(self.model, batch)
            if not report.ok:
                raise GradientFlowError(report)
            print0(f"step-0 gradient check passed: loss {report.loss:.4f}, gradient reaches "
                   f"{len(report.trainable_grad_norms)} trainable tensors and no frozen one")
        # The Trainer resumes a DeepSpeed engine strictly unless the model is a PEFT model; ours lacks the
        # frozen tensors on purpose (_save_optimizer_and_scheduler), so it gets a loader that allows just those.
        with resume_without_frozen():
            return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        objective_ids = inputs.pop("objective_ids", None)
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts the target tokens of every rank and DDP / DeepSpeed average the ranks'
            # gradients: undo that average, as Trainer.compute_loss does, or n processes learn n times slower.
            loss = loss * self.accelerator.num_processes
        if not torch.isfinite(loss.detach()).all():
            raise _nonfinite(f"loss is {float(loss.detach())}", self.args, self.state)
        if model.training and objective_ids is not None and outputs.per_example_loss is not None:
            ids = objective_ids.cpu()
            self._obj_loss.index_add_(0, ids, outputs.per_example_loss.detach().cpu().double())
            self._obj_n.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs):
        if "loss" in logs and self._obj_n.sum() > 0:
            for i, name in enumerate(OBJECTIVES):
                if self._obj_n[i] > 0:
                    logs[f"loss_{name}"] = round(float(self._obj_loss[i] / self._obj_n[i]), 4)
            self._obj_loss.zero_()
            self._obj_n.zero_()
        super().log(logs, *args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        return getattr(self, "_partial_root", None) or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        # The Trainer writes checkpoint-N file by file (trainer_state.json last, not atomically): write it
        # under a hidden name and rename it when whole, so a kill mid-save never leaves a checkpoint-N.
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._partial_root = os.path.join(run_dir, PARTIAL + name)
        try:
            super()._save_checkpoint(model, trial)
        except OSError as e:  # a full disk mid-checkpoint: nothing torn is kept, one line names it
            if e.errno not in FULL_DISK and not isinstance(e, DiskFullError):
                raise
            torn = Path(self._partial_root)
            written = sum(f.stat().st_size for f in torn.rglob("*") if f.is_file())
            shutil.rmtree(torn, ignore_errors=True)
            raise (e if isinstance(e, DiskFullError) else disk_full(Path(run_dir) / name, None, written)) from None
        finally:
            self._partial_root = None
        self.accelerator.wait_for_everyone()  # every rank's shards are in before the rename
        fault_point("checkpoint", self.state.global_step)  # tests only: written whole, not yet renamed
        if self.args.should_save:
            final = os.path.join(run_dir, name)
            if os.path.isdir(final):  # a rerun that reached the same step
                shutil.rmtree(final)
            os.replace(os.path.join(run_dir, PARTIAL + name, name), final)
            shutil.rmtree(os.path.join(run_dir, PARTIAL + name), ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.is_deepspeed_enabled:
            return super()._save_optimizer_and_scheduler(output_dir)
        from accelerate.utils import DeepSpeedSchedulerWrapper

        # DeepSpeed's engine state without the frozen LLM, which never changes (~15 GB per resume point for
        # a 7B LLM); the Trainer passes exclude_frozen_parameters only for PEFT models.
        engine = self.model_wrapped
        with state_without_frozen(engine):
            engine.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save and not isinstance(self.lr_scheduler, DeepSpeedSchedulerWrapper):
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _save(self, output_dir: str | None = None, state_dict=None):
        # Only the trained tensors (plus the JSON naming the frozen parts); the frozen LLM is never copied.
        # Rank 0 only: under DeepSpeed the Trainer calls this on every rank.
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        model.save_adapter(output_dir, state_dict=state_dict)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        path = Path(resume_from_checkpoint) / ADAPTER_WEIGHTS
        if self.is_deepspeed_enabled or not path.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        (model or self.model).load_trained_state(read_adapter(resume_from_checkpoint))


class PagesToWandb(TrainerCallback):
    """At the start: the config, the compression figures and a few rendered pages."""

    def __init__(self, settings: Settings, stats: dict, pages: list[Path]):
        self.settings, self.stats, self.pages = settings, stats, pages

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            import wandb
        except ImportError:
            return
        if wandb.run is None or not state.is_world_process_zero:
            return
        wandb.config.update({"ocrmem": self.settings.model_dump()}, allow_val_change=True)
        for split, figures in self.stats.items():
            if isinstance(figures, dict):
                wandb.run.summary.update({f"data/{split}/{k}": v for k, v in figures.items()
                                          if isinstance(v, (int, float))})
        if self.pages:
            wandb.log({"pages": [wandb.Image(str(p), caption=p.name) for p in self.pages]})


def training_arguments(settings: Settings, report_to: str) -> TrainingArguments:
    t = settings.train
    return TrainingArguments(
        output_dir=t.output_dir, max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=settings.eval.batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type, seed=t.seed, data_seed=t.seed, logging_steps=t.logging_steps,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, bf16=t.bf16, deepspeed=t.deepspeed,
        dataloader_num_workers=t.dataloader_num_workers, report_to=report_to, run_name=settings.tracking.run_name,
        remove_unused_columns=False, disable_tqdm=False, logging_first_step=True,
        use_cpu=not torch.cuda.is_available(), prediction_loss_only=True,
    )


@torch.no_grad()
def heldout_loss(model: OcrMemModel, dataset, collator, batch_size: int) -> float:
    """Mean target loss over a dataset, weighted like Trainer.evaluate (before DeepSpeed wraps the model)."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        batch.pop("objective_ids", None)
        out = model(**{k: v.to(model.device) for k, v in batch.items()})
        total += float(out.loss) * len(batch["input_ids"])
        n += len(batch["input_ids"])
    model.train(was)
    return total / max(n, 1)


def deepspeed_command(settings: Settings, params_path: str, resume: bool = True) -> list[str] | None:
    """The DeepSpeed launcher command for `ocrmem train` when train.deepspeed is set, CUDA GPUs exist and
    this process is not already one the launcher started (no LOCAL_RANK); else None (train in-process)."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not (settings.train.deepspeed and n) or "LOCAL_RANK" in os.environ:
        return None
    cmd = ["deepspeed", "--num_gpus", str(n), "--module", "ocrmem.cli", "train", "--params", str(params_path)]
    return cmd + ([] if resume else ["--no-resume"])


def mean_train_loss(result, log_history: list[dict], resumed_step: int) -> float:
    """Mean training loss of the whole run: this session's steps plus, after a resume, the steps logged
    before it (the Trainer's own figure covers only the steps since the resume)."""
    before, last = 0.0, 0
    for h in log_history:
        if "loss" in h and last < h["step"] <= resumed_step:
            before, last = before + h["loss"] * (h["step"] - last), h["step"]
    ran = result.global_step - resumed_step
    return (before + result.training_loss * ran) / max(last + ran, 1)


def _print_counts(model: OcrMemModel) -> dict:
    counts = model.parameter_counts()
    print0(f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} "
           f"({100 * counts['trainable'] / counts['total']:.3f}%): {[n for n, _ in model.trainable_parameters()]}")
    return counts


def _make_trainer(settings: Settings, t: TrainingInputs, report_to: str, callbacks: list | None) -> OcrMemTrainer:
    stats_file = settings.rendered_dir / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    sample_pages = [settings.rendered_dir / p for r in t.train.rows[: settings.tracking.log_pages]
                    for p in r["pages"][:1]]
    return OcrMemTrainer(
        model=t.model, args=training_arguments(settings, report_to), train_dataset=t.train,
        eval_dataset=t.eval, data_collator=t.collator, processing_class=t.model.tokenizer,
        gradcheck=settings.train.gradcheck_at_start,
        callbacks=[PagesToWandb(settings, stats, sample_pages)] + (callbacks or []),
    )


def _step_of(checkpoint: str | None) -> int:
    return int(str(checkpoint).rsplit("-", 1)[1]) if checkpoint else 0


def start_from_reader(model: OcrMemModel, settings: Settings) -> None:
    """Stage 2 from stage 1: the trained tensors of train.init_from (`ocrmem pretrain`'s reader), checked
    against this run's encoder, pooling and LLM width before they load (a one-line error otherwise)."""
    from ocrmem.memory.hub import check_adapter_against_run, read_adapter_config

    reader = settings.train.init_from
    check_adapter_against_run(read_adapter_config(reader), reader, settings)
    model.load_trained_state(read_adapter(reader))
    print0(f"starting from the stage-1 reader {reader}")


def train(settings: Settings, model: OcrMemModel | None = None, resume: bool = True,
          callbacks: list | None = None, metrics_path: str | Path | None = "metrics/train.json",
          card_data: str | None = None) -> dict:
    """The train stage: the projector on the rendered data; writes the adapter, its model card (README.md;
    `card_data`: what the data was, where data.source does not say) and metrics/train.json."""
    report_to = trainer_report_to(settings)  # first: a missing WandB key stops before anything loads
    t = training_inputs(settings, model)
    counts = _print_counts(t.model)
    out_dir = settings.train.output_dir
    last = last_complete_checkpoint(out_dir) if resume else None
    aligned = {}
    if settings.train.init_from and not last:  # a stage-1 reader is aligned already
        start_from_reader(t.model, settings)
    elif settings.train.align_steps and not last:  # a resumed run restores the aligned projector instead
        aligned = align(settings, t.model, t.train.rows, t.train.pages)
    trainer = _make_trainer(settings, t, report_to, callbacks)
    before = heldout_loss(t.model, t.eval, trainer.data_collator, settings.eval.batch_size)
    for torn in Path(out_dir).glob(PARTIAL + "*") if trainer.is_world_process_zero() else []:
        shutil.rmtree(torn, ignore_errors=True)  # a checkpoint a killed run did not finish writing
    if last:
        print0(f"resuming from {last}")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - t0
    after = trainer.evaluate(metric_key_prefix="eval_after")["eval_after_loss"]
    trainer.save_model(str(settings.adapter_dir))
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "final_loss": round(float(logged[-1]), 5) if logged else None,
        "mean_train_loss": round(mean_train_loss(result, trainer.state.log_history, _step_of(last)), 5),
        "steps": int(result.global_step),
        "samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 3),
        "train_seconds": round(seconds, 1), "trainable_parameters": counts["trainable"],
        "total_parameters": counts["total"], "eval_loss_before": round(before, 5), "eval_loss_after": round(after, 5),
        "resumed_from": last, **{k: round(v, 5) for k, v in aligned.items()},
    }
    if trainer.is_world_process_zero():  # the model card travels with the adapter (ocrmem.common.card)
        write_model_card(settings.adapter_dir, settings.model_dump(mode="json"), metrics,
                         {"training examples": len(t.train), "held-out examples": len(t.eval)}, card_data)
    if trainer.is_world_process_zero() and metrics_path:
        write_json(metrics_path, metrics)
        print(f"adapter: {settings.adapter_dir}  held-out loss {before:.3f} -> {after:.3f}")
    if not math.isfinite(after):
        raise NonFiniteLossError(f"held-out loss is {after} after training")
    return metrics
