from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clr_dist.config import LoggerConfig
from clr_dist.dist import DistInfo
from clr_dist.plan import RunPlan
from clr_dist.reporting import CyclePeak, build_reporter, environment, format_peaks_table, run_identity

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


def test_the_start_record_holds_the_command_line_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["train.py", "+hydra.job.env_set.HF_TOKEN=hf_plantedsecret", "data.root=https://al:pw@host/x"]
    monkeypatch.setattr(sys, "argv", argv)
    reporter = build_reporter(LoggerConfig(mode="disabled", progress_bar=False), tmp_path, info(0))
    reporter.start({}, environment(info(0)), PLAN)
    reporter.close()
    start = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert start["environment"]["command"] == [
        "train.py",
        "+hydra.job.env_set.HF_TOKEN=REDACTED",
        "data.root=https://al:REDACTED@host/x",
    ]
    assert sys.argv == argv  # the process's own command line is untouched


def test_hydra_files_are_redacted_in_place_only_where_they_hold_a_secret(tmp_path: Path) -> None:
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text("- trainer.seed=1\n- +hydra.job.env_set.HF_TOKEN=hf_plantedsecret\n")
    clean = "model:\n  name: alexnet\ndata:\n  root: /data/imagenet\n"
    (hydra_dir / "config.yaml").write_text(clean)
    reporter = build_reporter(LoggerConfig(mode="disabled", progress_bar=False), tmp_path, info(0))
    reporter.start({}, {}, PLAN)
    reporter.close()
    overrides = (hydra_dir / "overrides.yaml").read_text()
    assert "plantedsecret" not in overrides
    assert yaml.safe_load(overrides) == ["trainer.seed=1", "+hydra.job.env_set.HF_TOKEN=REDACTED"]
    assert (hydra_dir / "config.yaml").read_text() == clean  # as Hydra wrote it


@pytest.mark.parametrize(
    ("logger", "sweep", "expected"),
    [
        # A lone run: the run directory's name, no group.
        ({}, None, {"name": "slurm-123", "group": None}),
        # A job of a multirun: folders 0, 1, ... in every sweep, so the sweep's name goes first.
        ({}, ("multirun-slurm-77", 3), {"name": "multirun-slurm-77/3", "group": "multirun-slurm-77"}),
        ({"run_name": "mine", "group": "seeds"}, ("multirun-x", 0), {"name": "mine", "group": "seeds"}),
    ],
)
def test_run_identity_names_and_groups_runs(logger: dict, sweep: tuple[str, int] | None, expected: dict) -> None:
    cfg = LoggerConfig(tags=["baseline", "alexnet"], **logger)
    identity = run_identity(cfg, Path("runs") / "slurm-123", "range_test", sweep)
    assert identity == {**expected, "job_type": "range_test", "tags": ["baseline", "alexnet"]}
