"""The range test on 2 real torchrun processes (gloo, CPU), and training with its bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import copy_tree, offline_run, run_cli, wandb_summary
from tests.test_torchrun import read_csv

pytestmark = pytest.mark.slow

RANGE_TEST = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "clr_dist.range_test"]
TRAIN = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "clr_dist.train"]


def rank_results(run_dir: Path) -> tuple[dict, dict]:
    return tuple(json.loads((run_dir / f"range_test_rank{r}.json").read_text()) for r in (0, 1))


@pytest.fixture(scope="module")
def demo_range_test(tmp_path_factory: pytest.TempPathFactory, demo: Path) -> Path:
    """ResNet-18 on the demo set, 2 ranks, LR 0.002 -> 0.5 over 2 epochs (124 steps), W&B offline."""
    work = tmp_path_factory.mktemp("range_test")
    copy_tree(demo, work / "data")
    result = run_cli(
        [
            *RANGE_TEST,
            "experiment=demo",
            "model.name=resnet18",
            f"data.root={work / 'data'}",
            "data.batch_size=32",
            "range_test.start_lr=0.002",
            "range_test.end_lr=0.5",
            "range_test.diverge_factor=null",
            "range_test.epochs=2",
            "range_test.eval_images=200",
            "range_test.per_rank_output=true",
            "logger.mode=offline",
            "logger.progress_bar=false",
        ],
        cwd=work,
        env={"CLR_DIST_RUN_ID": "rt"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Suggested bounds (read off the accuracy curve" in result.stdout
    return work


def test_both_ranks_record_the_same_curve_and_suggestion(demo_range_test: Path) -> None:
    rank0, rank1 = rank_results(demo_range_test / "runs" / "rt")
    assert rank0 == rank1
    assert rank0["curve"]["step"] == list(range(124)) and len(rank0["curve"]["loss"]) == 124
    assert rank0["stopped"] is None
    written = json.loads((demo_range_test / "runs" / "rt" / "range_test.json").read_text())
    assert written == rank0


def test_demo_bounds_are_ordered_inside_the_sweep_and_reach_wandb(demo_range_test: Path) -> None:
    run = demo_range_test / "runs" / "rt"
    suggestion = json.loads((run / "range_test.json").read_text())["suggestion"]
    assert suggestion["method"] == "accuracy"
    assert 0.002 <= suggestion["base_lr"] < suggestion["max_lr"] <= 0.5
    summary = wandb_summary(offline_run(run))
    assert (summary["range_test/base_lr"], summary["range_test/max_lr"]) == (
        suggestion["base_lr"],
        suggestion["max_lr"],
    )
    assert summary["range_test/plot"]["_type"] == "image-file"


def test_a_short_clr_run_with_the_suggested_bounds_learns(demo_range_test: Path) -> None:
    bounds = demo_range_test / "runs" / "rt" / "range_test.json"
    result = run_cli(
        [
            *TRAIN,
            "experiment=demo",
            "model.name=resnet18",
            f"data.root={demo_range_test / 'data'}",
            "data.batch_size=32",
            f"schedule.bounds_from={bounds}",
            "schedule.stepsize=20",
            "schedule.stepsize_epochs=null",
            "trainer.stop_after_cycles=2",
            "trainer.save_checkpoints=false",
            "logger.mode=disabled",
            "logger.progress_bar=false",
        ],
        cwd=demo_range_test,
        env={"CLR_DIST_RUN_ID": "clr"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = demo_range_test / "runs" / "clr"
    config = (run / ".hydra" / "config.yaml").read_text()
    assert f"bounds_from: {bounds}" in config
    peaks = read_csv(run / "cycle_peaks.csv")
    assert [int(p["step"]) for p in peaks] == [40, 80]
    assert float(peaks[-1]["top1"]) > 0.4  # chance is 0.1


def test_both_ranks_stop_together_on_divergence(tmp_path: Path, small_demo: Path) -> None:
    result = run_cli(
        [
            *RANGE_TEST,
            "model.name=test_resnet",
            f"data.root={small_demo}",
            "data.batch_size=16",
            "range_test.start_lr=0.01",
            "range_test.end_lr=1e6",
            "range_test.mode=exp",
            "range_test.steps=60",
            "range_test.epochs=null",
            "range_test.per_rank_output=true",
            "logger.log_every=5",
            "logger.mode=disabled",
            "logger.progress_bar=false",
        ],
        cwd=tmp_path,
        env={"CLR_DIST_RUN_ID": "div"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = rank_results(tmp_path / "runs" / "div")
    assert rank0 == rank1
    assert rank0["stopped"] and len(rank0["curve"]["loss"]) < 60
    assert "The sweep stopped early: loss" in result.stdout
