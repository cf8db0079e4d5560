"""``clr-dist schedule``: write the configured schedule as a CSV table and a plot.

Not imported by the trainer: matplotlib is loaded only when a plot is asked for.
"""

from __future__ import annotations

import csv
from pathlib import Path

from omegaconf import DictConfig

from clr_dist.errors import ConfigError
from clr_dist.files import atomic_open
from clr_dist.schedules.base import Schedule
from clr_dist.schedules.factory import ScheduleConfig, build_schedule

CSV_HEADER = ("step", "lr", "momentum", "cycle")


def cycle_ends(schedule: Schedule, max_steps: int) -> list[int]:
    """Every update count in (0, max_steps] that ends a cycle."""
    ends: list[int] = []
    end = schedule.next_cycle_end(0)
    while end is not None and end <= max_steps:
        ends.append(end)
        end = schedule.next_cycle_end(end)
    return ends


def write_csv(schedule: Schedule, max_steps: int, path: str | Path) -> None:
    """One row per update 0..max_steps-1: step,lr,momentum,cycle; momentum is empty when the
    schedule leaves it alone. Floats are written with repr, so they read back exactly."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for step in range(max_steps):
            momentum = schedule.momentum(step)
            writer.writerow(
                (step, repr(schedule.lr(step)), "" if momentum is None else repr(momentum), schedule.cycle(step))
            )


def write_png(schedule: Schedule, max_steps: int, path: str | Path, title: str) -> None:
    """LR (and momentum, when cycled) over the updates, with a dotted line at every cycle end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(max_steps)
    momentums = [schedule.momentum(step) for step in steps]
    has_momentum = momentums[0] is not None if max_steps else False
    rows = 2 if has_momentum else 1
    figure, axes = plt.subplots(rows, 1, sharex=True, figsize=(9, 3 + 2 * rows), squeeze=False)
    axes = axes[:, 0]
    lrs = [schedule.lr(step) for step in steps]
    axes[0].plot(steps, lrs, linewidth=1)
    axes[0].set_ylabel("learning rate")
    # Multistage and exp schedules span decades (Table 2: 0.005 down to 0.00001); a linear axis
    # would flatten the later stages into the floor.
    if min(lrs) > 0 and max(lrs) / min(lrs) > 100:
        axes[0].set_yscale("log")
    axes[0].set_title(title)
    if has_momentum:
        axes[1].plot(steps, momentums, color="tab:orange", linewidth=1)
        axes[1].set_ylabel("momentum")
    ends = cycle_ends(schedule, max_steps)
    for axis in axes:
        for end in ends:
            axis.axvline(end, color="grey", linestyle=":", linewidth=0.8)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step" + (" (dotted: cycle ends)" if ends else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def schedule_command(
    cfg_schedule: ScheduleConfig | DictConfig,
    steps_per_epoch: int | None,
    max_steps: int,
    csv_path: str | None,
    png_path: str | None,
) -> None:
    """Build the configured schedule as the trainer would and write ``max_steps`` updates of it
    to ``csv_path`` and/or ``png_path`` (either may be None)."""
    if max_steps <= 0:
        raise ConfigError(f"trainer.max_steps={max_steps} must be positive to tabulate the schedule")
    built = build_schedule(cfg_schedule, steps_per_epoch)
    if csv_path is not None:
        write_csv(built.schedule, max_steps, csv_path)
    if png_path is not None:
        title = f"schedule.policy={cfg_schedule.policy}"
        if built.stepsize is not None:
            title += f", stepsize={built.stepsize} steps"
        write_png(built.schedule, max_steps, png_path, title)
