"""Every check that needs only the configuration, in one place, run before anything is built.

``validate`` runs first in ``Trainer.__init__``, before the process group forms: bad input
fails in a second with one line (ConfigError), on every rank alike, and never waits for a
rendezvous, a dataset or a model. A value outside a fixed set (``trainer.precision=fp8``) never
gets here: those keys are enums in the schema (``clr_dist.config``), which Hydra checks while
it composes the config. It needs the world size and the device, which the launcher's
environment gives without any communication.

What needs the data (optimizer steps per epoch, and so a stepsize given in epochs or the length
of a range test in epochs) is checked where the data is read: ``clr_dist.plan`` and
``clr_dist.range_test``. The schedule library checks its own keys (it is usable on its own, as
``clr-dist schedule`` does); ``validate`` runs those checks too.
"""

from __future__ import annotations

import os
import shutil

import torch

from clr_dist.config import OptimizerConfig, RangeTestConfig, TrainConfig
from clr_dist.errors import ConfigError
from clr_dist.models import check_model_fits, check_model_name
from clr_dist.optim import OPTIMIZERS, WITHOUT_MOMENTUM, implementation_kwargs
from clr_dist.plan import JOBS, autocast_dtype
from clr_dist.schedules import Schedule, check_schedule_config


def validate(cfg: TrainConfig, world_size: int, device: torch.device = torch.device("cpu"), job: str = "train") -> None:
    """Raise ConfigError, one line naming the key, the value and what to do, for the first
    setting of ``cfg`` that cannot work in a ``job`` on ``world_size`` ranks of ``device``."""
    check_choice("job", job, JOBS)
    _check_data(cfg, world_size)
    _check_trainer(cfg)
    _check_logger(cfg)
    check_model_name(cfg.model.name)
    check_model_fits(cfg.model.name, dict(cfg.model.kwargs), cfg.data.image_size)
    check_optimizer(cfg.optimizer, device.type)
    _check_precision(cfg, device)
    _check_compile(cfg, device)
    schedule = check_schedule_config(cfg.schedule)
    _check_schedule_against_the_run(cfg, schedule)
    if job == "range_test":
        check_range_test(cfg.range_test)


def check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(valid)}")


def _check_positive(*pairs: tuple[str, int]) -> None:
    for key, value in pairs:
        if value <= 0:
            raise ConfigError(f"{key}={value} must be a positive integer")


def _check_logger(cfg: TrainConfig) -> None:
    _check_positive(("logger.log_every", cfg.logger.log_every))
    for tag in cfg.logger.tags:
        if not 1 <= len(tag) <= 64:  # what W&B accepts, checked by wandb.init on rank 0 only
            raise ConfigError(f"logger.tags: tag {tag!r} has {len(tag)} characters; W&B takes 1 to 64")
    if cfg.logger.log_cycle_end_artifacts and not cfg.trainer.snapshot_cycle_ends:
        raise ConfigError(
            "logger.log_cycle_end_artifacts=true logs the cycle-end snapshots, but trainer.snapshot_cycle_ends=false "
            "saves none; set trainer.snapshot_cycle_ends=true, or drop the artifacts"
        )


def _check_data(cfg: TrainConfig, world_size: int) -> None:
    data = cfg.data
    _check_positive(("data.batch_size", data.batch_size), ("data.image_size", data.image_size))
    if data.batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={data.batch_size} (the global batch) does not divide evenly "
            f"over {world_size} ranks; use a multiple of {world_size}"
        )
    if data.val_resize < data.image_size:
        raise ConfigError(
            f"data.val_resize={data.val_resize} is smaller than data.image_size="
            f"{data.image_size}; the validation crop must fit inside the resized image"
        )
    low, high = data.crop_scale
    if not 0 < low <= high <= 1:
        raise ConfigError(
            f"data.crop_scale=[{low}, {high}] must satisfy 0 < low <= high <= 1 (shares of the image area)"
        )
    low, high = data.crop_ratio
    if not 0 < low <= high:
        raise ConfigError(f"data.crop_ratio=[{low}, {high}] must satisfy 0 < low <= high (width/height)")
    workers = data.workers  # typed Any in the schema: check it here
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(
            f"data.workers={workers!r} must be auto or a whole number >= 0 (DALI threads or DataLoader workers per rank)"
        )
    if not 0 <= data.hw_decoder_load <= 1:
        raise ConfigError(
            f"data.hw_decoder_load={data.hw_decoder_load} must be in [0, 1] (the hardware decoder's share of JPEGs)"
        )
    for key in ("device_memory_padding", "host_memory_padding", "preallocate_width_hint", "preallocate_height_hint"):
        if getattr(data, key) < 0:
            raise ConfigError(f"data.{key}={getattr(data, key)} must be >= 0 (0: no preallocation)")
    _check_positive(("data.prefetch_queue_depth", data.prefetch_queue_depth))
    if data.output_dtype != "float32" and data.loader != "dali" and data.name != "synthetic":
        raise ConfigError(
            f"data.output_dtype={data.output_dtype} needs data.loader=dali; the {data.loader} loader gives float32"
        )
    if data.file_lists is not None:
        if data.loader != "dali":
            raise ConfigError(f"data.file_lists needs data.loader=dali (not {data.loader})")
        for split in ("train", "val"):
            if not os.path.isfile(os.path.join(data.file_lists, f"{split}.txt")):
                raise ConfigError(
                    f"data.file_lists={data.file_lists!r} has no {split}.txt; make the lists with "
                    f"`clr-dist data check {data.root} --out DIR`"
                )


def _check_trainer(cfg: TrainConfig) -> None:
    trainer = cfg.trainer
    _check_positive(
        ("trainer.max_steps", trainer.max_steps),
        ("trainer.grad_accum_steps", trainer.grad_accum_steps),
        ("trainer.keep_checkpoints", trainer.keep_checkpoints),
        ("trainer.average_bn_images", trainer.average_bn_images),
    )
    if trainer.checkpoint_every is not None and trainer.checkpoint_every <= 0:
        raise ConfigError(
            f"trainer.checkpoint_every={trainer.checkpoint_every} must be a positive "
            f"number of steps, or null (checkpoints only on a stop signal and at the end)"
        )
    if trainer.stop_after_cycles is not None and trainer.stop_after_cycles <= 0:
        raise ConfigError(f"trainer.stop_after_cycles={trainer.stop_after_cycles} must be positive or null")


def check_optimizer(cfg: OptimizerConfig, device_type: str = "cpu") -> None:
    implementation_kwargs(OPTIMIZERS[cfg.name][0](cfg), cfg.implementation, device_type)  # one the class has
    if cfg.momentum_style == "caffe" and cfg.name != "sgd":
        raise ConfigError(f"optimizer.momentum_style=caffe applies to optimizer.name=sgd only, not {cfg.name}")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"optimizer.momentum={cfg.momentum} must be in [0, 1)")


def _check_precision(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.trainer.precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs CUDA; on the CPU use bf16 or fp32")
    if cfg.data.output_dtype != "float32" and autocast_dtype(cfg.trainer.precision, device) is None:
        raise ConfigError(
            f"data.output_dtype={cfg.data.output_dtype} needs mixed precision, and this run is fp32 "
            f"(trainer.precision={cfg.trainer.precision} on {device}); set trainer.precision=bf16 "
            f"or data.output_dtype=float32"
        )


def _check_compile(cfg: TrainConfig, device: torch.device) -> None:
    # On the CPU, torch.compile's code generator builds C++: without a compiler the first step
    # would fail deep inside it, after the data and the model were built.
    if cfg.trainer.compile != "off" and device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        raise ConfigError(
            f"trainer.compile={cfg.trainer.compile} on the CPU needs a C++ compiler and none is on PATH; "
            "install one (apt-get install g++) or set trainer.compile=off"
        )


def _check_schedule_against_the_run(cfg: TrainConfig, schedule: Schedule) -> None:
    """The schedule's keys against the trainer's and the optimizer's."""
    stop_after = cfg.trainer.stop_after_cycles
    if stop_after is not None and schedule.next_cycle_end(0) is None:
        raise ConfigError(
            f"trainer.stop_after_cycles={stop_after} needs a cyclical schedule; "
            f"schedule.policy={cfg.schedule.policy} has no cycles"
        )
    if cfg.schedule.momentum_cycle and (cfg.optimizer.momentum == 0 or cfg.optimizer.name in WITHOUT_MOMENTUM):
        raise ConfigError(
            f"schedule.momentum_cycle=true but optimizer.name={cfg.optimizer.name} with "
            f"optimizer.momentum={cfg.optimizer.momentum} has no momentum to cycle (cycling never "
            f"turns it on); use an optimizer with momentum or leave momentum_cycle off"
        )


def check_range_test(cfg: RangeTestConfig) -> None:
    """The ``range_test`` node (``clr-dist range-test`` only)."""
    if not 0 < cfg.start_lr < cfg.end_lr:
        raise ConfigError(
            f"range_test.start_lr={cfg.start_lr} and end_lr={cfg.end_lr}: need 0 < start_lr < end_lr (the LR rises)"
        )
    if (cfg.steps is None) == (cfg.epochs is None):
        raise ConfigError("give the sweep's length as range_test.steps or range_test.epochs, and set the other to null")
    if cfg.steps is not None and cfg.steps < 2:
        raise ConfigError(f"range_test.steps={cfg.steps}: the sweep needs at least 2 steps")
    if cfg.epochs is not None and cfg.epochs <= 0:
        raise ConfigError(f"range_test.epochs={cfg.epochs} must be positive")
    if cfg.diverge_factor is not None and cfg.diverge_factor <= 1:
        raise ConfigError(f"range_test.diverge_factor={cfg.diverge_factor} must be above 1 (or null: never stop)")
    if not 0 < cfg.rise_fraction < 0.5:
        raise ConfigError(f"range_test.rise_fraction={cfg.rise_fraction} must be in (0, 0.5)")
    if cfg.ragged_fraction is not None and not 0 < cfg.ragged_fraction < 1:
        raise ConfigError(f"range_test.ragged_fraction={cfg.ragged_fraction} must be in (0, 1) (or null: off)")
    for key in ("eval_images", "eval_every"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"range_test.{key}={value} must be a positive integer")
