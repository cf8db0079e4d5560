"""The Trainer: owns the run state (step, epoch, peaks) and the loop.

``__init__`` checks the whole config first (``clr_dist.checks``), before the process group forms,
so bad input fails before any rendezvous, data or model; then it builds what the loop needs. ``fit()`` reads top to bottom: set the LR from the
schedule, take one optimizer step, log every ``logger.log_every`` steps, validate at cycle ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel

from clr_dist import checkpoint, dist
from clr_dist.checks import validate
from clr_dist.config import TrainConfig
from clr_dist.data import build_loaders
from clr_dist.errors import Stopped, TrainingDiverged
from clr_dist.files import atomic_write_text
from clr_dist.models import build_model, compiled, training_loss
from clr_dist.optim import build_optimizer, current_momentum, set_lr, set_momentum
from clr_dist.plan import RunPlan, apply_backend_settings, autocast_dtype, backend_settings, make_plan, steps_per_epoch
from clr_dist.reporting import CyclePeak, build_reporter, environment
from clr_dist.schedules import build_schedule
from clr_dist.weights import has_batch_norm, recompute_batch_norm


class ThroughputMeter:
    """Sums the step losses on the device (no sync) and times the steps between two logs.

    ``steps`` counts the losses in the sum, ``timed_steps`` the steps timed since ``started``:
    a resumed run restores the first (its sum spans the checkpoint), not the second.
    """

    def __init__(self, device: torch.device, images_per_step: int) -> None:
        self.loss = torch.zeros((), device=device)
        self.images_per_step = images_per_step
        self.steps = self.timed_steps = 0
        self.started = time.perf_counter()
        self.excluded = 0.0

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss
        self.steps += 1
        self.timed_steps += 1

    def restart_clock(self) -> None:
        self.timed_steps, self.started, self.excluded = 0, time.perf_counter(), 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - start

    def flush(self) -> float | None:
        """Images/s since the last flush (None when no step was timed: the interval held only
        the step that compiled the model); then start again. Call after the host has synced with
        the device, or queued GPU work would be timed in the next interval instead of this one."""
        elapsed = time.perf_counter() - self.started - self.excluded
        images_per_sec = self.timed_steps * self.images_per_step / elapsed if self.timed_steps else None
        self.loss.zero_()
        self.steps = 0
        self.restart_clock()
        return images_per_sec


class Trainer:
    """One training run: builds data, schedule, model and optimizer, then ``fit()`` runs the loop.

    Run state is ``step`` (optimizer updates done), ``epoch`` and the cycle peaks the reporter
    keeps; the learning rate is never stored, it is ``schedule.lr(step)``.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, job: str = "train") -> None:
        """Check ``cfg``, join the process group, then build data, schedule, model, optimizer.
        Every rank must call. ``job``: train, or range_test (``clr_dist.range_test``)."""
        self.cfg, self.run_dir = cfg, run_dir
        self.info = info = dist.local_info(cfg.trainer.device)
        validate(cfg, info.world_size, info.device, job)  # bad input never waits for a rendezvous
        dist.init(info)
        dist.seed_everything(cfg.trainer.seed, info.rank)
        self.amp_dtype = autocast_dtype(cfg.trainer.precision, info.device)
        apply_backend_settings(backend_settings(cfg.trainer, info.device, self.amp_dtype))
        self.channels_last = cfg.trainer.channels_last and info.device.type == "cuda"
        self.data = build_loaders(cfg.data, info, cfg.trainer.seed, channels_last=self.channels_last)
        built = build_schedule(cfg.schedule, steps_per_epoch(cfg, self.data))
        self.schedule = built.schedule
        self.plan = make_plan(cfg, job, info, self.amp_dtype, self.data, built, run_dir)
        self.model = build_model(cfg.model.name, len(self.data.classes), dict(cfg.model.kwargs)).to(info.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ddp_model = dist.wrap_model(self.model, info)
        # trainer.compile: DDP first, then compile (DDP's hooks stay outside the compiled graphs).
        # Evaluation calls the bare model, compiled too: its graphs (no grad, eval mode) are
        # compiled once, at the first validation. self.model stays the plain module that
        # checkpoints hold.
        self.train_forward = compiled(self.ddp_model, cfg.trainer.compile)
        self.eval_forward = compiled(self.model, cfg.trainer.compile)
        self.compile_seconds: float | None = None  # the first step's, with its compilation
        self.optimizer = build_optimizer(cfg.optimizer, self.model, self.schedule.lr(0), info.device.type)
        # trainer.average_cycle_ends: the running average of the cycle-end weights (a copy).
        self.averaged = AveragedModel(self.model) if cfg.trainer.average_cycle_ends else None
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = self.epoch = 0
        self.evaluated_at: int | None = None
        # The training losses since the last log; part of the run state (a resume mid-interval).
        self.meter = ThroughputMeter(info.device, cfg.data.batch_size * cfg.trainer.grad_accum_steps)
        self.reporter = build_reporter(cfg.logger, run_dir, info)
        config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg), sort_keys=True)
        self.config_hash = hashlib.sha256(config_yaml.encode()).hexdigest()[:16]

    def start_reporter(self, plan: RunPlan | None = None) -> None:
        """Open the writers with the config, where the run came from and ``plan`` (this run's
        own by default; the range test passes its sweep's length)."""
        config = OmegaConf.to_container(OmegaConf.structured(self.cfg))
        self.reporter.start(config, environment(self.info), plan or self.plan, self.step)

    # --- the loop ------------------------------------------------------------------------------

    def fit(self) -> list[CyclePeak]:
        """Train to the planned end; validate at every cycle end. Returns the cycle peaks.

        Raises Stopped after saving a checkpoint when a stop signal arrives on any rank.
        """
        log_every = self.cfg.logger.log_every
        self.start_reporter()
        batches = self.train_batches()
        meter = self.meter
        meter.restart_clock()
        self._mark_stopped(False)
        lr_log = self._open_lr_log() if self.cfg.trainer.record_lr else None
        stop = dist.StopFlag(self.info.device)
        compiling = time.perf_counter() if self.cfg.trainer.compile != "off" else None
        try:
            while self.step < self.plan.planned_steps:
                lr, momentum = self._apply_schedule()
                meter.add(self.train_step(batches))
                if compiling is not None:  # the first step compiled the model: timed apart
                    meter.loss.item()  # wait for it
                    self.compile_seconds, compiling = time.perf_counter() - compiling, None
                    meter.restart_clock()
                if lr_log is not None:
                    self._record_lr(lr_log)
                self.step += 1
                if self.step % log_every == 0 or self.step == self.plan.planned_steps:
                    self._log_train(meter, lr, momentum)
                with meter.paused():  # validation and checkpoints are not training throughput
                    self._validate_and_checkpoint_if_due(lr)
                if stop.check():
                    self._stop(stop.received)
        finally:
            stop.close()
            if lr_log is not None:
                lr_log.close()
        if self.evaluated_at != self.step:
            self.reporter.evaluation(self.step, self.evaluate())
            self.evaluated_at = self.step
        self.save_checkpoint(checkpoint.periodic_name(self.step))
        return list(self.reporter.peaks)

    def _apply_schedule(self) -> tuple[float, float | None]:
        """Set this step's LR (and momentum, if the schedule cycles it) on the optimizer."""
        lr = self.schedule.lr(self.step)
        momentum = self.schedule.momentum(self.step)
        set_lr(self.optimizer, lr)
        if momentum is not None:
            set_momentum(self.optimizer, momentum)
        return lr, momentum

    def _log_train(self, meter: ThroughputMeter, lr: float, momentum: float | None) -> None:
        """Reduce the mean loss since the last log over all ranks and report it. Every rank calls."""
        # The one host-device sync of the loop, every logger.log_every steps.
        mean_loss = dist.all_reduce_mean(meter.loss / meter.steps).item()
        images_per_sec = meter.flush()
        if not math.isfinite(mean_loss):  # the same value on every rank, so all stop together
            raise TrainingDiverged(
                f"training loss is {mean_loss} at step {self.step} (lr {lr:.4g}); lower "
                f"schedule.max_lr/base_lr (a range test finds the bounds); the metrics so far "
                f"are in {self.run_dir}"
            )
        metrics = {"lr": lr, "loss": mean_loss, "epoch": self.epoch}
        if images_per_sec is not None:
            metrics["images_per_sec"] = images_per_sec
        if self.compile_seconds is not None:  # once, in the first log after compiling
            metrics["compile_seconds"], self.compile_seconds = self.compile_seconds, None
        if momentum is None:  # not cycled: report the optimizer's own
            momentum = current_momentum(self.optimizer)
        if momentum is not None:
            metrics["momentum"] = momentum
        self.reporter.train(self.step, metrics)

    def _validate_and_checkpoint_if_due(self, lr: float) -> None:
        peak = self._validate_if_due(lr)
        if peak is not None and self.cfg.trainer.snapshot_cycle_ends:
            if self.cfg.trainer.snapshot_weights_only:
                saved = checkpoint.weights_path(self.run_dir, self.step, peak.cycle)
                if self.info.is_main:
                    meta = {"step": self.step, "cycle": peak.cycle, "model": self.cfg.model.name}
                    checkpoint.save_weights(self.model.state_dict(), meta, saved)
            else:
                name = checkpoint.snapshot_name(self.step, peak.cycle)
                self.save_checkpoint(name)
                saved = self.run_dir / "checkpoints" / name / checkpoint.SHARED_FILE  # the weights (and optimizer)
            self.reporter.snapshot(peak, saved)  # absent when trainer.save_checkpoints=false
        if self.cfg.trainer.checkpoint_every and self.step % self.cfg.trainer.checkpoint_every == 0:
            self.save_checkpoint(checkpoint.periodic_name(self.step))

    def _stop(self, signum: int | None) -> None:
        """Every rank, at the same step: checkpoint, mark the run stopped, raise Stopped."""
        self.save_checkpoint(checkpoint.periodic_name(self.step))
        self._mark_stopped(True)
        raise Stopped(
            f"stopped by signal {signum or 'on another rank'} at step {self.step}; a checkpoint "
            f"is in {self.run_dir / 'checkpoints'}: the same command with the same run directory "
            f"continues it (launch/*.sh print that command; under SLURM the job is requeued)"
        )

    def _mark_stopped(self, stopped: bool) -> None:
        """``RUN_DIR/stopped`` (the step) while a run stands stopped by a signal: what
        slurm/train.sbatch looks for to requeue the job. Rank 0."""
        if not self.info.is_main:
            return
        marker = self.run_dir / "stopped"
        if stopped:
            atomic_write_text(marker, f"{self.step}\n")
        else:
            marker.unlink(missing_ok=True)

    def _record_lr(self, lr_log: TextIO) -> None:
        """The LR and momentum the optimizer held for this step, as it applied them."""
        momentum = current_momentum(self.optimizer)
        lr_log.write(
            f"{self.step},{self.optimizer.param_groups[0]['lr']!r},{'' if momentum is None else repr(momentum)}\n"
        )

    def _validate_if_due(self, lr: float) -> CyclePeak | None:
        """At a cycle end: validate and report the peak (returned). Else every trainer.eval_every steps."""
        peak = None
        if self.schedule.is_cycle_end(self.step):
            result = self.evaluate()
            if self.averaged is not None:
                result.update(self._average_cycle_end())
            cycle = self.schedule.cycle(self.step - 1)  # the cycle the last update belonged to
            peak = CyclePeak(cycle=cycle, step=self.step, lr=lr, **result)
            self.reporter.peak(peak)
        elif self.cfg.trainer.eval_every and self.step % self.cfg.trainer.eval_every == 0:
            self.reporter.evaluation(self.step, self.evaluate())
        else:
            return None
        self.evaluated_at = self.step
        return peak

    def _average_cycle_end(self) -> dict[str, float]:
        """Fold this cycle end into the running average, recompute the average's batch norm on
        every rank's share of a fixed training subset, validate it: ``avg_*`` for the peak."""
        self.averaged.update_parameters(self.model)
        module = self.averaged.module
        if has_batch_norm(module):
            batches = self.data.train_subset_batches(self.cfg.trainer.average_bn_images)
            recompute_batch_norm(module, batches, self.info.device)
        return {f"avg_{key}": value for key, value in self.evaluate(model=module).items()}

    def _open_lr_log(self) -> TextIO:
        """``lr_rank<R>.csv``; a resumed run keeps the rows before its first step and appends."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / f"lr_rank{self.info.rank}.csv"
        rows = ["step,lr,momentum\n"]
        if self.step and path.exists():
            whole = [
                row
                for row in path.read_text().splitlines(keepends=True)[1:]
                if row.endswith("\n") and row.count(",") == 2
            ]  # not a row torn by a kill
            rows += [row for row in whole if int(row.split(",")[0]) < self.step]
        atomic_write_text(path, "".join(rows))
        return path.open("a", buffering=1)  # a row a line, on disk as soon as written

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches on the device, epoch after epoch."""
        while True:
            for images, targets in self.data.train_epoch(self.epoch):
                yield self._to_device(images, targets)
            self.epoch += 1

    def _to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.info.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(self.info.device, non_blocking=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)

    def train_step(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One optimizer update over ``grad_accum_steps`` micro-batches; returns the detached loss."""
        accum = self.cfg.trainer.grad_accum_steps
        total = torch.zeros((), device=self.info.device)
        for micro in range(accum):
            images, targets = next(batches)
            # Gradients are all-reduced only on the last micro-batch of the step.
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.info.distributed else self.ddp_model.no_sync()
            with sync:
                with self._autocast():
                    outputs = self.train_forward(images)
                    loss, _ = training_loss(outputs, targets, self.cfg.model.aux_loss_weight)
                    loss = loss / accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def evaluate(
        self, limit: int | None = None, split: str = "val", model: torch.nn.Module | None = None
    ) -> dict[str, float]:
        """Loss, top-1 and top-5 over the whole validation set, or over a fixed subset of
        ``limit`` images spread evenly over it; with ``split="train"``, over a fixed subset of
        ``limit`` training images read without augmentation. ``model``: another model than the
        trainer's (an average, an ensemble) on the same data. Every rank must call; the sums are
        reduced once, at the end."""
        return metrics_of(*self.evaluation_sums(limit, split, model))

    @torch.no_grad()
    def evaluation_sums(
        self, limit: int | None = None, split: str = "val", model: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, int]:
        """``evaluate`` without its reduction: this rank's ``metric_sums`` totals and the number
        of images all ranks together must have counted. For a caller that reduces several
        evaluations at once (``metrics_of`` or ``summarise``).

        Uses the bare model, not the DDP wrapper: ranks may hold different numbers of validation
        batches, and DDP's forward can issue collectives.
        """
        if split == "train":
            limit = self.data.train_size if limit is None else min(limit, self.data.train_size)
            batches, expected = self.data.train_subset_batches(limit), limit
        else:
            batches = self.data.val_batches(limit)
            expected = self.data.val_size if limit is None else min(limit, self.data.val_size)
        model = self.eval_forward if model is None else model
        model.eval()
        totals = torch.zeros(4, dtype=torch.float64, device=self.info.device)  # loss, top1, top5, n
        for images, targets in batches:
            images, targets = self._to_device(images, targets)
            with self._autocast():
                logits = model(images)
            totals += metric_sums(logits.float(), targets)
        model.train()
        return totals, expected

    # --- run state ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """This rank's run state between two steps: enough for ``load_state_dict`` to continue
        exactly where the run stood. The LR is not in it: it is ``schedule.lr(step)``.

        ``data`` is this rank's loader position (for DALI, the reader's own checkpoint); it
        belongs to this rank of this world size, so each rank keeps its own state.
        """
        rng = {"torch": torch.get_rng_state()}
        if self.info.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.info.device)
        return {
            "step": self.step,
            "epoch": self.epoch,
            "evaluated_at": self.evaluated_at,
            "peaks": [dataclasses.asdict(peak) for peak in self.reporter.peaks],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "data": self.data.state_dict(),
            "meter": {"loss": self.meter.loss.detach().cpu().clone(), "steps": self.meter.steps},
            **({"averaged": self.averaged.state_dict()} if self.averaged is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``; call before ``fit()``. Without the rank-local parts
        (``rng``, ``data``: a resume into another world size) the saved epoch starts again."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.averaged is not None and "averaged" in state:
            self.averaged.load_state_dict(state["averaged"])
        if "data" in state:
            self.data.load_state_dict(state["data"])
        if "meter" in state:
            self.meter.loss.copy_(state["meter"]["loss"])
            self.meter.steps = state["meter"]["steps"]
        if "rng" in state:
            torch.set_rng_state(state["rng"]["torch"])
            if "cuda" in state["rng"] and self.info.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.info.device)
        self.step, self.epoch, self.evaluated_at = state["step"], state["epoch"], state["evaluated_at"]
        self.reporter.peaks[:] = [CyclePeak(**peak) for peak in state["peaks"]]

    # --- checkpoints -----------------------------------------------------------------------------

    def _settings(self) -> dict:
        """What a resumed run must share with the checkpoint it continues."""
        # Plain strings for the enum keys (policy, shape): torch.load(weights_only=True) refuses Enum members.
        plain = OmegaConf.to_container(OmegaConf.structured(self.cfg.schedule), enum_to_str=True)
        schedule = {f"schedule.{k}": v for k, v in plain.items() if k != "bounds_from"}
        return {**schedule, "data.batch_size": self.cfg.data.batch_size, "world_size": self.info.world_size}

    def save_checkpoint(self, name: str) -> None:
        """Write ``RUN_DIR/checkpoints/NAME`` and prune old periodic ones, unless
        ``trainer.save_checkpoints`` is off or this step is saved already (under any name: the
        last step may also end a cycle). Every rank must call."""
        root = self.run_dir / "checkpoints"
        if not self.cfg.trainer.save_checkpoints or checkpoint.saved_at(root, self.step):
            return
        id_file = self.run_dir / "wandb_run_id"
        meta = {
            "settings": self._settings(),
            "config_hash": self.config_hash,
            "wandb_run_id": id_file.read_text().strip() if id_file.is_file() else None,
        }
        checkpoint.save(self.state_dict(), meta, root / name, self.info)
        if self.info.is_main:
            checkpoint.prune(root, self.cfg.trainer.keep_checkpoints)

    def resume(self) -> None:
        """``trainer.resume``: auto continues from the newest readable checkpoint in the run
        directory (a fresh start when there is none), a path from that checkpoint, null never.
        Every rank must call, before ``fit()``."""
        choice = self.cfg.trainer.resume
        if choice is None:
            return
        if choice == "auto":
            loaded = checkpoint.load_latest(self.run_dir / "checkpoints", self.info)
        else:
            loaded = checkpoint.load_path(Path(choice), self.info)
        if loaded is None:
            return
        meta = loaded.shared.pop("meta")
        checkpoint.check_compatible(
            meta["settings"], self._settings(), loaded.directory, self.cfg.trainer.resume_allow_changes
        )
        same_layout = loaded.rank is not None and meta["settings"]["world_size"] == self.info.world_size
        self.load_state_dict({**loaded.shared, **(loaded.rank if same_layout else {})})
        id_file = self.run_dir / "wandb_run_id"
        if self.info.is_main and meta["wandb_run_id"] and not id_file.exists():
            atomic_write_text(id_file, meta["wandb_run_id"] + "\n")  # the same W&B run continues
        if self.info.is_main:
            print(f"clr-dist: resuming from {loaded.directory} at step {self.step}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.reporter.close()


def metric_sums(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy, top-1 hits, top-5 hits and the image count of one batch (float64).
    ``logits`` may be log-probabilities (an ensemble's): the cross-entropy is then their NLL."""
    k = min(5, logits.shape[1])
    hits = logits.topk(k, dim=1).indices == targets[:, None]
    return torch.stack(
        [
            F.cross_entropy(logits, targets, reduction="sum").double(),
            hits[:, 0].sum().double(),
            hits.any(dim=1).sum().double(),
            torch.full((), len(targets), dtype=torch.float64, device=logits.device),  # no H2D copy
        ]
    )


def metrics_of(totals: torch.Tensor, expected: int) -> dict[str, float]:
    """``val_loss``, ``top1`` and ``top5`` from this rank's ``metric_sums`` totals, summed over
    the ranks (every rank must call)."""
    return summarise(dist.all_reduce_sum(totals), expected)


def summarise(totals: torch.Tensor, expected: int) -> dict[str, float]:
    """``val_loss``, ``top1`` and ``top5`` from ``metric_sums`` totals already summed over the
    ranks. Checks that every image was counted exactly once."""
    loss, top1, top5, count = totals.tolist()
    if int(count) != expected:  # every image exactly once, or a bug
        raise RuntimeError(f"evaluation saw {int(count)} images, expected {expected}")
    return {"val_loss": loss / count, "top1": top1 / count, "top5": top5 / count}
