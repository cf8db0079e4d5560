from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import torch

from clr_dist.config import LoggerConfig
from clr_dist.dist import DistInfo
from clr_dist.plan import RunPlan
from clr_dist.reporting import CyclePeak, build_reporter, format_peaks_table

PEAKS = [
    CyclePeak(1, 40, 0.0145, 0.5, 0.9, 1.2),
    CyclePeak(2, 80, 0.0145, 0.75, 0.95, 0.8),
    CyclePeak(3, 120, 0.0145, 0.7, 0.97, 0.9),
]


PLAN = RunPlan(
    job="train",
    world_size=2,
    device="cpu",
    precision="float32",
    global_batch=32,
    per_rank_batch=16,
    grad_accum_steps=1,
    train_images=640,
    val_images=100,
    classes=10,
    steps_per_epoch=20,
    stepsize=20,
    cycle_length=40,
    planned_steps=120,
    run_dir="run",
)


def info(rank: int) -> DistInfo:
    return DistInfo(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"))


def test_only_rank_0_writes(tmp_path: Path) -> None:
    cfg = LoggerConfig(mode="disabled", progress_bar=False)
    for rank in (1, 0):
        reporter = build_reporter(cfg, tmp_path / f"rank{rank}", info(rank))
        reporter.start({}, {}, PLAN)
        reporter.train(10, {"lr": 0.01, "loss": 2.0, "images_per_sec": 100.0})
        for peak in PEAKS:
            reporter.peak(peak)
        reporter.close()
        assert reporter.peaks == PEAKS  # every rank knows the peaks; only rank 0 writes them
    assert not (tmp_path / "rank1").exists()
    lines = [json.loads(line) for line in (tmp_path / "rank0" / "metrics.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["start", "train", "cycle_peak", "cycle_peak", "cycle_peak"]
    assert lines[0]["resolved"] == {**dataclasses.asdict(PLAN), "start_step": 0}
    with (tmp_path / "rank0" / "cycle_peaks.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["cycle"]), float(r["top1"])) for r in rows] == [(1, 0.5), (2, 0.75), (3, 0.7)]


def test_peaks_table_marks_the_best_cycle() -> None:
    table = format_peaks_table(PEAKS).splitlines()
    assert table[0] == "Cycle-end peaks"
    assert table[1].split() == ["cycle", "step", "lr", "top-1", "top-5", "val", "loss"]
    assert table[3].split() == ["2", "80", "0.0145", "75.00%", "95.00%", "0.8000", "<-", "best"]
    assert "best" not in table[2] + table[4]
    assert "no cycle-end peaks" in format_peaks_table([])
