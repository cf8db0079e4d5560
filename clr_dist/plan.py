"""The numbers a run derives from its config, its world and its data, fixed before the first step.

``RunPlan`` is what the console prints at the start, what ``metrics.jsonl``'s start record and
the W&B config hold (under the key ``resolved``, which runs already logged use), and what the
trainer, the range test and the reporter read by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from clr_dist.config import TrainConfig, TrainerConfig
from clr_dist.data.workers import loader_workers
from clr_dist.dist import DistInfo
from clr_dist.errors import ConfigError
from clr_dist.schedules import BuiltSchedule, Schedule

JOBS = ("train", "range_test", "interpolate", "ensemble")


class DataSizes(Protocol):
    """What a plan reads of a loader (every loader in ``clr_dist.data`` has these)."""

    classes: list[str]
    train_size: int
    val_size: int

    @property
    def batches_per_epoch(self) -> int: ...


@dataclass(frozen=True)
class RunPlan:
    job: str  # one of JOBS
    world_size: int
    device: str
    precision: str  # the autocast dtype's name, float32 without mixed precision
    global_batch: int
    per_rank_batch: int
    grad_accum_steps: int
    train_images: int
    val_images: int
    classes: int
    steps_per_epoch: int  # optimizer steps: full global batches, then micro-batches per step
    stepsize: int | None  # in optimizer steps, after converting schedule.stepsize_epochs
    cycle_length: int | None
    planned_steps: int  # where this run will stop (trainer.max_steps, or a cycle end before it)
    run_dir: str
    # Per rank: DALI threads or DataLoader workers (data.workers resolved on this node, from the
    # CPUs the process may use, SLURM's share and the ranks beside it; 0 for synthetic data).
    loader_workers: int = 0


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype of mixed precision, None for fp32. ``auto`` is bf16 on CUDA when supported,
    else fp16; fp32 on the CPU. (``clr_dist.checks`` refuses fp16 without CUDA.)"""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def backend_settings(trainer: TrainerConfig, device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, bool]:
    """The CUDA switches this run sets (none on the CPU): cuDNN's autotuning
    (``trainer.cudnn_benchmark``) and TF32 (``trainer.tf32``; null: on under mixed precision only)."""
    if device.type != "cuda":
        return {}
    tf32 = amp_dtype is not None if trainer.tf32 is None else trainer.tf32
    return {"cudnn_benchmark": trainer.cudnn_benchmark, "tf32": tf32}


def apply_backend_settings(settings: dict[str, bool]) -> None:
    """Set ``backend_settings``' switches on torch.backends (process-wide)."""
    if "cudnn_benchmark" in settings:
        torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    if "tf32" in settings:
        torch.backends.cuda.matmul.allow_tf32 = settings["tf32"]
        torch.backends.cudnn.allow_tf32 = settings["tf32"]


def steps_per_epoch(cfg: TrainConfig, data: DataSizes) -> int:
    """Optimizer steps in one epoch of ``data``; ConfigError when not even one fits."""
    accum = cfg.trainer.grad_accum_steps
    steps = data.batches_per_epoch // accum
    if steps == 0:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} x trainer.grad_accum_steps={accum} is larger than "
            f"the training set ({data.train_size} images); use a smaller batch"
        )
    return steps


def planned_steps(schedule: Schedule, max_steps: int, stop_after_cycles: int | None) -> int:
    """``max_steps``, or earlier: the end of cycle ``stop_after_cycles`` (a cyclical schedule)."""
    if stop_after_cycles is None:
        return max_steps
    end: int | None = 0
    for _ in range(stop_after_cycles):
        end = schedule.next_cycle_end(end)
        if end is None or end >= max_steps:
            return max_steps
    return end


def make_plan(
    cfg: TrainConfig,
    job: str,
    info: DistInfo,
    amp_dtype: torch.dtype | None,
    data: DataSizes,
    built: BuiltSchedule,
    run_dir: Path,
) -> RunPlan:
    """The plan of a run with mixed precision in ``amp_dtype`` (``autocast_dtype``), loaders
    ``data`` and schedule ``built``."""
    return RunPlan(
        job=job,
        world_size=info.world_size,
        device=str(info.device),
        precision=str(amp_dtype or torch.float32).removeprefix("torch."),
        global_batch=cfg.data.batch_size,
        per_rank_batch=cfg.data.batch_size // info.world_size,
        grad_accum_steps=cfg.trainer.grad_accum_steps,
        train_images=data.train_size,
        val_images=data.val_size,
        classes=len(data.classes),
        steps_per_epoch=built.steps_per_epoch,
        stepsize=built.stepsize,
        cycle_length=built.schedule.cycle_length,
        planned_steps=planned_steps(built.schedule, cfg.trainer.max_steps, cfg.trainer.stop_after_cycles),
        run_dir=str(run_dir),
        loader_workers=loader_workers(cfg.data.name, cfg.data.loader, cfg.data.workers),
    )
