"""The LR range test (Smith 2015, §3.3): one short run with a rising LR hands training its bounds.

    clr-dist range-test [overrides]                       # one process
    torchrun --nproc_per_node=8 -m clr_dist.range_test model=googlenet experiment=range_test_googlenet

The run trains the configured model on the configured data, with the same loaders, optimizer and
mixed precision as ``clr-dist train``, while the LR rises from ``range_test.start_lr`` to
``range_test.end_lr``. It records the training loss of every step (averaged over the ranks) and,
at a fixed interval, the accuracy on a fixed subset of the validation set. The paper reads the
bounds off the accuracy curve: ``base_lr`` where accuracy starts to rise, ``max_lr`` where it
slows, turns ragged or falls (``clr_dist.bounds`` does the reading). ``range_test.json`` and ``range_test.png`` in the run directory hold
the curve and the suggestion; ``schedule.bounds_from=PATH`` trains with it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from clr_dist import config, dist
from clr_dist.bounds import centred_mean, smoothing_window, suggest
from clr_dist.config import RangeTestConfig, TrainConfig
from clr_dist.errors import ConfigError, reported_as_one_line
from clr_dist.files import atomic_write_text
from clr_dist.optim import set_lr
from clr_dist.reporting import Reporter
from clr_dist.trainer import Trainer

# --- the sweep ---------------------------------------------------------------------------------


def sweep_steps(cfg: RangeTestConfig, steps_per_epoch: int) -> int:
    steps = cfg.steps if cfg.steps is not None else round(cfg.epochs * steps_per_epoch)
    if steps < 2:
        raise ConfigError(
            f"range_test.epochs={cfg.epochs} is {steps} optimizer step(s) at {steps_per_epoch} steps an epoch; "
            f"the sweep needs at least 2: give more epochs or range_test.steps"
        )
    return steps


def sweep_lr(step: int, steps: int, start: float, end: float, mode: str) -> float:
    """The LR of update ``step`` (0-based) of a ``steps``-update sweep: ``start`` first, ``end`` last."""
    fraction = step / (steps - 1)
    if mode == "exp":
        return start * (end / start) ** fraction
    return start + (end - start) * fraction


def run_range_test(trainer: Trainer, cfg: RangeTestConfig, reporter: Reporter | None = None) -> dict:
    """The sweep, on every rank (each call below that reduces is made by all ranks in the same
    order). Returns the curve and the suggestion, identical on every rank. The trainer's state is
    put back afterwards, so a ``fit()`` that follows starts as if no range test had run.
    ``reporter``, already started, receives the loss and LR as the sweep goes."""
    reporter = reporter or Reporter([])
    steps = sweep_steps(cfg, trainer.plan.steps_per_epoch)
    eval_every = cfg.eval_every or max(1, steps // 25)
    eval_images = min(cfg.eval_images, trainer.data.val_size)
    block = trainer.cfg.logger.log_every
    snapshot = copy.deepcopy(trainer.state_dict())
    batches = trainer.train_batches()
    meter = trainer.meter  # put back with the rest of the trainer's state at the end
    meter.restart_clock()
    curve: dict[str, list] = {"step": [], "lr": [], "loss": []}
    evaluations: list[dict] = []
    pending: list[torch.Tensor] = []
    lowest, stopped = math.inf, None
    for step in range(steps):
        lr = sweep_lr(step, steps, cfg.start_lr, cfg.end_lr, cfg.mode)
        set_lr(trainer.optimizer, lr)
        loss = trainer.train_step(batches)
        meter.add(loss)
        pending.append(loss)
        curve["step"].append(step)
        curve["lr"].append(lr)
        if (step + 1) % eval_every == 0:
            with meter.paused():
                evaluations.append({"step": step, "lr": lr, **trainer.evaluate(eval_images)})
        if len(pending) < block and step < steps - 1:
            continue
        # One reduction per block of steps: every rank then holds the same losses, so every rank
        # takes the same decision to stop, and none is left waiting in a collective.
        losses = dist.all_reduce_mean(torch.stack(pending)).tolist()
        pending.clear()
        images_per_sec = meter.flush()
        for offset, value in enumerate(losses):
            curve["loss"].append(value)
            lowest = min(lowest, value)
            at = step - len(losses) + 1 + offset
            if not math.isfinite(value):
                stopped = f"loss {value} at step {at} (lr {curve['lr'][at]:.4g})"
            elif cfg.diverge_factor and value > cfg.diverge_factor * lowest:
                stopped = (
                    f"loss {value:.4g} at step {at} (lr {curve['lr'][at]:.4g}) is above "
                    f"{cfg.diverge_factor} x the lowest, {lowest:.4g}"
                )
            if stopped:
                break
        done = len(curve["loss"])
        reporter.train(done, {"lr": curve["lr"][done - 1], "loss": curve["loss"][-1], "images_per_sec": images_per_sec})
        if stopped:
            break
    kept = len(curve["loss"])
    curve = {key: values[:kept] for key, values in curve.items()}
    evaluations = [e for e in evaluations if e["step"] < kept]
    trainer.load_state_dict(snapshot)
    settings = {
        "start_lr": cfg.start_lr,
        "end_lr": cfg.end_lr,
        "steps": steps,
        "mode": cfg.mode,
        "eval_every": eval_every,
        "eval_images": eval_images,
        "diverge_factor": cfg.diverge_factor,
        "method": cfg.method,
        "rule": cfg.rule,
        "rise_fraction": cfg.rise_fraction,
        "ragged_fraction": cfg.ragged_fraction,
        "smooth_fraction": cfg.smooth_fraction,
        "world_size": trainer.info.world_size,
        "global_batch": trainer.cfg.data.batch_size,
        "model": trainer.cfg.model.name,
        "optimizer": trainer.cfg.optimizer.name,
        "data_root": trainer.cfg.data.root,
    }
    return {
        "settings": settings,
        "curve": curve,
        "evaluations": evaluations,
        "stopped": stopped,
        **suggest(curve, evaluations, cfg),
    }


# --- output ------------------------------------------------------------------------------------


def plot(result: dict, png: Path) -> None:
    """Accuracy (left axis) and loss (right axis) against the LR, the suggested bounds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, acc_axis = plt.subplots(figsize=(8, 4.5))
    loss_axis = acc_axis.twinx()
    curve, evaluations = result["curve"], result["evaluations"]
    losses = [loss if math.isfinite(loss) else math.nan for loss in curve["loss"]]  # a diverged end: a gap
    loss_axis.plot(curve["lr"], losses, color="tab:red", alpha=0.35, linewidth=0.8, label="training loss")
    window = smoothing_window(len(losses), result["settings"]["smooth_fraction"])
    loss_axis.plot(curve["lr"], centred_mean(losses, window), color="tab:red", label="loss, smoothed")
    if evaluations:
        acc_axis.plot(
            [e["lr"] for e in evaluations],
            [100 * e["top1"] for e in evaluations],
            "o-",
            color="tab:blue",
            label=f"top-1 on {result['settings']['eval_images']} held-out images",
        )
    suggestion = result["suggestion"]
    if suggestion:
        for key, style in (("base_lr", "--"), ("max_lr", "-.")):
            acc_axis.axvline(suggestion[key], color="black", linestyle=style, label=f"{key} {suggestion[key]:.3g}")
        ragged_lr = result["readings"][suggestion["method"]]["ragged_lr"]
        if ragged_lr is not None:
            acc_axis.axvline(ragged_lr, color="grey", linestyle=":", label=f"turned ragged {ragged_lr:.3g}")
    if result["settings"]["mode"] == "exp":
        acc_axis.set_xscale("log")
    acc_axis.set_xlabel("learning rate")
    acc_axis.set_ylabel("top-1 accuracy (%)", color="tab:blue")
    loss_axis.set_ylabel("training loss", color="tab:red")
    title = f"LR range test: {result['settings']['model']}, {result['settings']['steps']} steps"
    acc_axis.set_title(title + (" (stopped: diverged)" if result["stopped"] else ""))
    handles = acc_axis.get_legend_handles_labels()[0] + loss_axis.get_legend_handles_labels()[0]
    acc_axis.legend(handles=handles, loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _finite_or_null(value):
    """Plain JSON has no NaN or Infinity: a diverged loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_finite_or_null(result), indent=1, allow_nan=False) + "\n")


# --- entry point -------------------------------------------------------------------------------


def range_test(cfg: TrainConfig, run_dir: Path) -> dict:
    """Build the trainer (every check first), sweep, write and report. Every rank calls."""
    trainer = Trainer(cfg, run_dir, job="range_test")
    try:
        steps = sweep_steps(cfg.range_test, trainer.plan.steps_per_epoch)
        trainer.start_reporter(dataclasses.replace(trainer.plan, planned_steps=steps))
        result = run_range_test(trainer, cfg.range_test, trainer.reporter)
        if cfg.range_test.per_rank_output:
            write_json(result, run_dir / f"range_test_rank{trainer.info.rank}.json")
        if trainer.info.is_main:
            write_json(result, run_dir / "range_test.json")
            plot(result, run_dir / "range_test.png")
            trainer.reporter.range_test(result, run_dir / "range_test.png")
        return result
    finally:
        trainer.close()


@hydra.main(config_path=config.CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        with reported_as_one_line("range-test"):
            range_test(config.to_object(cfg), Path(HydraConfig.get().runtime.output_dir))
    finally:
        dist.close()


def main() -> None:
    config.register()
    _hydra_main()


if __name__ == "__main__":
    main()
