"""Real multi-process runs: `torchrun --standalone --nproc_per_node=2`, gloo on the CPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import (
    closed_form_triangular,
    copy_tree,
    offline_run,
    run_cli,
    wandb_history,
    wandb_summary,
    wandb_table,
)

pytestmark = pytest.mark.slow

TORCHRUN = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "clr_dist.train"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Path:
    """Three triangular cycles of 40 steps on 2 ranks, W&B offline, every LR recorded."""
    work = tmp_path_factory.mktemp("torchrun")
    data = copy_tree(demo, work / "data")
    # 499 validation images: the ranks get 250 and 249, so exact counting is exercised.
    next((data / "val").rglob("*.JPEG")).unlink()
    result = run_cli(
        [
            *TORCHRUN,
            "experiment=demo",
            "model.name=resnet18",
            f"data.root={data}",
            "data.batch_size=32",
            "schedule.base_lr=0.01",
            "schedule.max_lr=0.1",
            "schedule.stepsize=20",
            "schedule.stepsize_epochs=null",
            "schedule.momentum_cycle=true",
            "trainer.record_lr=true",
            "trainer.save_checkpoints=false",
            "logger.mode=offline",
            "logger.progress_bar=false",
        ],
        cwd=work,
        env={"CLR_DIST_RUN_ID": "job"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "runs" / "job"


def test_both_ranks_apply_the_closed_form_lr_and_momentum_at_every_step(two_rank_run: Path) -> None:
    rank0, rank1 = (read_csv(two_rank_run / f"lr_rank{r}.csv") for r in (0, 1))
    assert [int(r["step"]) for r in rank0] == list(range(120))
    assert rank0 == rank1  # identical, to the last printed digit
    for row in rank0:
        lr = closed_form_triangular(int(row["step"]), 0.01, 0.1, 20)
        assert float(row["lr"]) == pytest.approx(lr, rel=1e-12)
        # Momentum cycles inversely: 0.95 where the LR is at its base, 0.85 at its peak.
        assert float(row["momentum"]) == pytest.approx(0.95 - 0.1 * (lr - 0.01) / 0.09, rel=1e-9)


def test_cycle_end_peaks_learn_and_count_every_image_once(two_rank_run: Path) -> None:
    peaks = read_csv(two_rank_run / "cycle_peaks.csv")
    assert [(int(p["cycle"]), int(p["step"])) for p in peaks] == [(1, 40), (2, 80), (3, 120)]
    assert float(peaks[-1]["top1"]) > 0.5  # chance is 0.1 with 10 classes
    for p in peaks:
        # 499 images: every accuracy is a whole number of images out of 499.
        assert float(p["top1"]) * 499 == pytest.approx(round(float(p["top1"]) * 499), abs=1e-6)
    records = [json.loads(line) for line in (two_rank_run / "metrics.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start" and start["resolved"]["world_size"] == 2
    assert (start["resolved"]["val_images"], start["resolved"]["per_rank_batch"]) == (499, 16)
    train_steps = [r["step"] for r in records if r["event"] == "train"]
    # experiment=demo logs every 5 steps: each step once (one writer: no rank duplicated a line).
    assert train_steps == list(range(5, 121, 5))


def test_wandb_offline_run_holds_one_row_per_cycle_peak(two_rank_run: Path) -> None:
    wandb_run = offline_run(two_rank_run)  # one W&B run per job
    history = [row for row in wandb_history(wandb_run) if "val/top1" in row]
    peaks = read_csv(two_rank_run / "cycle_peaks.csv")
    assert len(history) == len(peaks) == 3
    for row, peak in zip(history, peaks):
        assert row["cycle"] == int(peak["cycle"]) and row["_step"] == int(peak["step"])
        for key, column in (("val/top1", "top1"), ("val/top5", "top5"), ("val/loss", "val_loss"), ("val/lr", "lr")):
            assert row[key] == pytest.approx(float(peak[column]), rel=1e-12)

    # The run summary holds the best peak, and the one cycle-peak table every peak, once.
    summary = wandb_summary(wandb_run)
    best = max(peaks, key=lambda p: float(p["top1"]))
    assert (summary["best/cycle"], summary["best/top1"]) == (int(best["cycle"]), float(best["top1"]))
    columns, rows = wandb_table(wandb_run, "cycle_peaks")
    assert columns == list(peaks[0].keys())
    assert [[str(v) for v in row] for row in rows] == [list(p.values()) for p in peaks]


def test_batch_not_divisible_by_world_size(tmp_path: Path, small_demo: Path) -> None:
    result = run_cli([*TORCHRUN, f"data.root={small_demo}", "data.batch_size=15", "logger.mode=disabled"], cwd=tmp_path)
    assert result.returncode != 0
    assert (
        "clr-dist train: error: data.batch_size=15 (the global batch) does not divide evenly over 2 ranks; "
        "use a multiple of 2"
    ) in result.stderr


@pytest.mark.parametrize("loader", ["dali", "torchvision"])
def test_two_ranks_train_through_each_loader(tmp_path: Path, small_demo: Path, loader: str) -> None:
    result = run_cli(
        [
            *TORCHRUN,
            f"data.root={small_demo}",
            f"data.loader={loader}",
            "data.batch_size=16",
            "model.name=test_resnet",
            "schedule.stepsize=3",
            "schedule.stepsize_epochs=null",
            "trainer.stop_after_cycles=2",
            "trainer.save_checkpoints=false",
            "logger.mode=disabled",
            "logger.progress_bar=false",
        ],
        cwd=tmp_path,
        env={"CLR_DIST_RUN_ID": loader},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / loader
    peaks = read_csv(run / "cycle_peaks.csv")
    assert [(int(p["cycle"]), int(p["step"])) for p in peaks] == [(1, 6), (2, 12)]
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["resolved"]
    # 240 images over 2 shards of 120, 8 per rank: 15 steps an epoch; validation counted all 70.
    assert (start["world_size"], start["steps_per_epoch"], start["val_images"]) == (2, 15, 70)
