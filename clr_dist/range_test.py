"""The LR range test (Smith 2015, §3.3): one short run with a rising LR hands training its bounds.

    clr-dist range-test [overrides]                       # one process
    torchrun --nproc_per_node=8 -m clr_dist.range_test model=googlenet experiment=range_test_googlenet

The run trains the configured model on the configured data, with the same loaders, optimizer and
mixed precision as ``clr-dist train``, while the LR rises from ``range_test.start_lr`` to
``range_test.end_lr``. It records the training loss of every step (averaged over the ranks) and,
at a fixed interval, the accuracy on a fixed subset of the validation set. The paper reads the
bounds off the accuracy curve: ``base_lr`` where accuracy starts to rise, ``max_lr`` where it
slows, turns ragged or falls. ``range_test.json`` and ``range_test.png`` in the run directory hold
the curve and the suggestion; ``schedule.bounds_from=PATH`` trains with it.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from clr_dist.errors import ConfigError

if TYPE_CHECKING:
    from clr_dist.config import RangeTestConfig
    from clr_dist.reporting import Reporter
    from clr_dist.trainer import Trainer

MODES = ("linear", "exp")
METHODS = ("auto", "accuracy", "loss")
RULES = ("range", "third", "quarter")
MIN_EVALUATIONS = 5  # method=auto reads the accuracy curve from this many points on


# --- the sweep ---------------------------------------------------------------------------------

def check_config(cfg: RangeTestConfig) -> None:
    """One-line ConfigError for the first bad ``range_test`` setting."""
    for key, value, valid in (("mode", cfg.mode, MODES), ("method", cfg.method, METHODS), ("rule", cfg.rule, RULES)):
        if value not in valid:
            raise ConfigError(f"range_test.{key}={value!r} is not one of: {', '.join(valid)}")
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
    import torch

    from clr_dist import dist
    from clr_dist.optim import set_lr
    from clr_dist.reporting import Reporter

    reporter = reporter or Reporter([])

    steps = sweep_steps(cfg, trainer.resolved["steps_per_epoch"])
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
                stopped = (f"loss {value:.4g} at step {at} (lr {curve['lr'][at]:.4g}) is above "
                           f"{cfg.diverge_factor} x the lowest, {lowest:.4g}")
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
    settings = {"start_lr": cfg.start_lr, "end_lr": cfg.end_lr, "steps": steps, "mode": cfg.mode,
                "eval_every": eval_every, "eval_images": eval_images, "diverge_factor": cfg.diverge_factor,
                "method": cfg.method, "rule": cfg.rule, "rise_fraction": cfg.rise_fraction,
                "ragged_fraction": cfg.ragged_fraction, "smooth_fraction": cfg.smooth_fraction,
                "world_size": trainer.info.world_size,
                "global_batch": trainer.cfg.data.batch_size, "model": trainer.cfg.model.name,
                "optimizer": trainer.cfg.optimizer.name, "data_root": trainer.cfg.data.root}
    return {"settings": settings, "curve": curve, "evaluations": evaluations, "stopped": stopped,
            **suggest(curve, evaluations, cfg)}


# --- reading the curve -------------------------------------------------------------------------

def smoothing_window(points: int, smooth_fraction: float) -> int:
    """``smooth_fraction`` of the points, odd, at least 3."""
    return max(3, round(smooth_fraction * points)) | 1


def centred_mean(values: Sequence[float], window: int) -> list[float]:
    """Moving average over ``window`` points centred on each point (narrower near the ends, so
    still centred): unlike a trailing average, it does not move the curve to the right."""
    half = window // 2
    smoothed = []
    for i in range(len(values)):
        h = min(half, i, len(values) - 1 - i)
        smoothed.append(sum(values[i - h:i + h + 1]) / (2 * h + 1))
    return smoothed


def read_bounds_off(lrs: Sequence[float], values: Sequence[float], *, higher_is_better: bool,
                    rise_fraction: float, smooth_fraction: float,
                    ragged_fraction: float | None = None) -> dict | None:
    """Where a curve starts to improve and where it stops, as the paper reads Figure 3.

    The curve is smoothed (centred), then turned so that up is better. From its low point before
    the best, ``base_lr`` is the first LR past ``rise_fraction`` of the whole improvement, and
    ``max_lr`` the first LR within ``rise_fraction`` of the best (where the rise has slowed to a
    plateau, or is about to fall). With ``ragged_fraction``, the rise is also cut short where it
    turns ragged: the first point (unsmoothed) that falls more than that share of the whole rise
    below the best point before it; ``max_lr`` is then that best point's LR. All thresholds are
    shares of the curve's own range, so multiplying the loss by a constant changes nothing. None
    when nothing improved.
    """
    if len(values) < 3:
        return None
    up = [v if higher_is_better else -v for v in values]
    smoothed = centred_mean(up, smoothing_window(len(values), smooth_fraction))
    best = max(range(len(smoothed)), key=smoothed.__getitem__)
    low = min(range(best + 1), key=smoothed.__getitem__)
    rise = smoothed[best] - smoothed[low]
    if not rise > 0:
        return None
    base = next(i for i in range(low, best + 1) if smoothed[i] >= smoothed[low] + rise_fraction * rise)
    top = next(i for i in range(base, best + 1) if smoothed[i] >= smoothed[best] - rise_fraction * rise)
    ragged = None
    if ragged_fraction is not None:
        peak = base
        for i in range(base, top + 1):
            if up[peak] - up[i] > ragged_fraction * rise:
                ragged, top = i, peak
                break
            peak = max(peak, i, key=up.__getitem__)
    return {"base_lr": lrs[base], "max_lr": lrs[top], "best_lr": lrs[best],
            "ragged_lr": None if ragged is None else lrs[ragged]}


def suggest(curve: dict, evaluations: list[dict], cfg: RangeTestConfig) -> dict:
    """Both readings (accuracy, loss), the chosen one, and the rule-of-thumb alternatives."""
    common = {"rise_fraction": cfg.rise_fraction, "smooth_fraction": cfg.smooth_fraction}
    finite = [(lr, loss) for lr, loss in zip(curve["lr"], curve["loss"]) if math.isfinite(loss)]
    readings = {
        # Each evaluation measures the same held-out images, so a fall between two is the curve
        # turning ragged. Each loss is one batch's: its noise alone would look ragged.
        "accuracy": read_bounds_off([e["lr"] for e in evaluations], [e["top1"] for e in evaluations],
                                    higher_is_better=True, ragged_fraction=cfg.ragged_fraction, **common),
        "loss": read_bounds_off([lr for lr, _ in finite], [loss for _, loss in finite],
                                higher_is_better=False, **common),
    }
    method = cfg.method
    if method == "auto":
        method = "accuracy" if len(evaluations) >= MIN_EVALUATIONS and readings["accuracy"] else "loss"
    reading = readings[method]
    if reading is None:
        return {"readings": readings, "suggestion": None,
                "problem": f"the {method} never improved over the sweep: widen the range (range_test.start_lr/end_lr) "
                           f"or sweep longer"}
    max_lr = reading["max_lr"]
    rules = {"range": reading["base_lr"], "third": max_lr / 3, "quarter": max_lr / 4}
    base_lr, rule = rules[cfg.rule], cfg.rule
    if base_lr >= max_lr:  # the rise was one step: the curve cannot tell the two apart
        base_lr, rule = rules["quarter"], "quarter"
    suggestion = {"base_lr": base_lr, "max_lr": max_lr, "method": method, "rule": rule}
    return {"readings": readings, "suggestion": suggestion, "rules": rules}


def read_bounds(path: str) -> tuple[float, float]:
    """``(base_lr, max_lr)`` from a ``range_test.json``, for ``schedule.bounds_from``."""
    try:
        result = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"schedule.bounds_from={path!r} cannot be read ({exc.strerror}); "
                          f"give the range_test.json that `clr-dist range-test` wrote") from exc
    except ValueError as exc:
        raise ConfigError(f"schedule.bounds_from={path!r} is not JSON; give the range_test.json that "
                          f"`clr-dist range-test` wrote") from exc
    suggestion = result.get("suggestion") if isinstance(result, dict) else None
    if not suggestion:
        raise ConfigError(f"schedule.bounds_from={path!r} holds no suggested bounds"
                          + (f": {result['problem']}" if isinstance(result, dict) and result.get("problem") else ""))
    return float(suggestion["base_lr"]), float(suggestion["max_lr"])


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
        acc_axis.plot([e["lr"] for e in evaluations], [100 * e["top1"] for e in evaluations], "o-",
                      color="tab:blue", label=f"top-1 on {result['settings']['eval_images']} held-out images")
    suggestion = result["suggestion"]
    if suggestion:
        for key, style in (("base_lr", "--"), ("max_lr", "-.")):
            acc_axis.axvline(suggestion[key], color="black", linestyle=style,
                             label=f"{key} {suggestion[key]:.3g}")
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


def format_suggestion(result: dict, json_path: Path) -> str:
    suggestion = result["suggestion"]
    lines = []
    if result["stopped"]:
        lines.append(f"The sweep stopped early: {result['stopped']}.")
    if suggestion is None:
        lines.append(f"No bounds suggested: {result['problem']}.")
        return "\n".join(lines)
    lines.append(f"Suggested bounds (read off the {suggestion['method']} curve, base_lr by the {suggestion['rule']} "
                 f"rule): base_lr {suggestion['base_lr']:.4g}, max_lr {suggestion['max_lr']:.4g}")
    ragged_lr = result["readings"][suggestion["method"]]["ragged_lr"]
    if ragged_lr is not None:
        lines.append(f"  the accuracy turned ragged at LR {ragged_lr:.4g}: max_lr is the best point before it")
    lines += [
        f"  alternatives: base_lr = max_lr/3 = {result['rules']['third']:.4g}, max_lr/4 = {result['rules']['quarter']:.4g}",
        "Train with them:",
        f"  clr-dist train schedule.base_lr={suggestion['base_lr']:.4g} schedule.max_lr={suggestion['max_lr']:.4g}",
        f"  clr-dist train schedule.bounds_from={json_path}",
    ]
    return "\n".join(lines)


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
    from clr_dist.reporting import rewrite

    path.parent.mkdir(parents=True, exist_ok=True)
    rewrite(path, json.dumps(_finite_or_null(result), indent=1, allow_nan=False) + "\n")


# --- entry point -------------------------------------------------------------------------------

def range_test(cfg, run_dir: Path) -> dict:
    """Build the trainer (every check first), sweep, write and report. Every rank calls."""
    from omegaconf import OmegaConf

    from clr_dist.reporting import environment
    from clr_dist.trainer import Trainer

    check_config(cfg.range_test)
    trainer = Trainer(cfg, run_dir)
    try:
        steps = sweep_steps(cfg.range_test, trainer.resolved["steps_per_epoch"])
        resolved = {**trainer.resolved, "planned_steps": steps, "job": "range_test"}
        trainer.reporter.start(OmegaConf.to_container(OmegaConf.structured(cfg)), environment(trainer.info), resolved)
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


def _hydra_main():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from clr_dist import config, dist
    from clr_dist.errors import UsageError
    from clr_dist.train import CONF_DIR

    config.register()

    @hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
    def main(cfg) -> None:
        try:
            range_test(config.to_object(cfg), Path(HydraConfig.get().runtime.output_dir))
        except UsageError as exc:
            print(f"clr-dist range-test: error: {exc}", file=sys.stderr)
            sys.exit(2)
        finally:
            dist.close()

    return main


def main() -> None:
    _hydra_main()()


if __name__ == "__main__":
    main()
