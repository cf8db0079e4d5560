"""``clr-dist schedule``: the CSV rows are the schedule's own values, and the PNG is a real image."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import numpy as np
from omegaconf import OmegaConf

from clr_dist.schedules import ScheduleConfig, build_schedule
from clr_dist.schedules.plot import schedule_command


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_and_png_with_momentum(tmp_path: Path):
    # A structured DictConfig, as the CLI passes it after composing the overrides.
    cfg = OmegaConf.structured(
        ScheduleConfig(policy="triangular2", base_lr=0.001, max_lr=0.006, stepsize_epochs=1.5, momentum_cycle=True)
    )
    csv_path, png_path = tmp_path / "schedule.csv", tmp_path / "schedule.png"
    schedule_command(cfg, steps_per_epoch=10, max_steps=95, csv_path=str(csv_path), png_path=str(png_path))

    schedule = build_schedule(cfg, 10).schedule
    assert csv_path.read_text().splitlines()[0] == "step,lr,momentum,cycle"
    rows = read_rows(csv_path)
    assert [int(row["step"]) for row in rows] == list(range(95))
    for step, row in enumerate(rows):
        assert float(row["lr"]) == schedule.lr(step)  # written with repr: exact
        assert float(row["momentum"]) == schedule.momentum(step)
        assert int(row["cycle"]) == schedule.cycle(step)
    # stepsize 15: cycles of 30 steps, peaks at 15, 45, 75 with the amplitude halved each time.
    assert [int(rows[step]["cycle"]) for step in (0, 29, 30, 60, 94)] == [1, 1, 2, 3, 4]
    assert float(rows[45]["lr"]) == 0.001 + 0.005 / 2

    image = matplotlib.image.imread(png_path)
    assert image.shape[:2] == (700, 900)  # two panels (LR and momentum): 9 x 7 inches at 100 dpi
    assert image[..., :3].std() > 0.01  # lines drawn, not a blank canvas


def test_csv_without_momentum_and_no_png(tmp_path: Path):
    csv_path = tmp_path / "fixed.csv"
    schedule_command(ScheduleConfig(policy="exp", base_lr=0.01, gamma=0.9), 10, 20, str(csv_path), None)
    rows = read_rows(csv_path)
    assert len(rows) == 20
    assert all(row["momentum"] == "" and row["cycle"] == "0" for row in rows)
    assert np.allclose([float(row["lr"]) for row in rows], [0.01 * 0.9**step for step in range(20)], rtol=1e-15)
    assert list(tmp_path.iterdir()) == [csv_path]


def test_png_marks_cycle_ends(tmp_path: Path):
    from clr_dist.schedules.plot import cycle_ends

    schedule = build_schedule(
        ScheduleConfig(policy="cosine_restarts", base_lr=0.0, stepsize=4, cycle_mult=2), 10
    ).schedule
    assert cycle_ends(schedule, 56) == [8, 24, 56]
    png_path = tmp_path / "one_panel.png"
    schedule_command(ScheduleConfig(policy="triangular", stepsize=5), 10, 40, None, str(png_path))
    assert matplotlib.image.imread(png_path).shape[:2] == (500, 900)  # one panel: no momentum
