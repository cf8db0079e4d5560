"""The Trainer in one process, on the small demo set."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from clr_dist.errors import ConfigError, TrainingDiverged
from tests.conftest import closed_form_triangular


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == kind]


def train_losses(run_dir: Path) -> dict[int, float]:
    """The logged training loss at each logged step."""
    return {e["step"]: e["loss"] for e in events(run_dir, "train")}


@pytest.mark.slow
def test_lr_every_step_and_validation_at_cycle_ends(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo,
        "schedule=triangular",
        "schedule.base_lr=0.001",
        "schedule.max_lr=0.004",
        "schedule.stepsize=3",
        "schedule.stepsize_epochs=null",
        "trainer.max_steps=14",
        "trainer.record_lr=true",
        "logger.log_every=4",
    )
    peaks = trainer.fit()
    run = tmp_path / "run"
    with (run / "lr_rank0.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(14))
    for r in rows:
        assert float(r["lr"]) == pytest.approx(closed_form_triangular(int(r["step"]), 0.001, 0.004, 3), abs=1e-15)
        assert float(r["momentum"]) == 0.9  # not cycled unless asked for
    # Cycles of 6 steps end after updates 6 and 12; step 14 ends mid-cycle and gets a plain eval.
    assert [(p.cycle, p.step) for p in peaks] == [(1, 6), (2, 12)]
    assert [(e["cycle"], e["step"]) for e in events(run, "cycle_peak")] == [(1, 6), (2, 12)]
    assert [e["step"] for e in events(run, "eval")] == [14]
    assert [e["step"] for e in events(run, "train")] == [4, 8, 12, 14]
    # The LR reported with a peak is the one the cycle's last update used.
    assert [p.lr for p in peaks] == pytest.approx([closed_form_triangular(s, 0.001, 0.004, 3) for s in (5, 11)])
    for p in peaks:  # 70 validation images: every accuracy is a whole number of them
        assert 0 <= p.top1 <= p.top5 <= 1 and p.top1 * 70 == pytest.approx(round(p.top1 * 70), abs=1e-9)
        assert p.top5 * 70 == pytest.approx(round(p.top5 * 70), abs=1e-9) and math.isfinite(p.val_loss)
    with (run / "cycle_peaks.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(int(r["cycle"]), int(r["step"]), float(r["lr"]), float(r["top1"])) for r in table] == [
        (p.cycle, p.step, p.lr, p.top1) for p in peaks
    ]
    start = events(run, "start")[0]["resolved"]
    assert (start["steps_per_epoch"], start["stepsize"], start["cycle_length"], start["val_images"]) == (15, 3, 6, 70)


@pytest.mark.slow
def test_stop_after_cycles_ends_at_that_cycle_end(small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo,
        "schedule.stepsize=2",
        "schedule.stepsize_epochs=null",
        "trainer.max_steps=1000",
        "trainer.stop_after_cycles=2",
    )
    assert trainer.plan.planned_steps == 8
    assert [p.step for p in trainer.fit()] == [4, 8]
    assert trainer.step == 8


def test_stepsize_in_epochs_uses_optimizer_steps(small_demo: Path, make_trainer) -> None:
    # 240 images / batch 16 = 15 micro-batches an epoch; 2 of them per step -> 7 steps an epoch.
    trainer = make_trainer(small_demo, "schedule.stepsize_epochs=2", "trainer.grad_accum_steps=2")
    assert (trainer.plan.steps_per_epoch, trainer.plan.stepsize) == (7, 14)


def test_stop_after_cycles_needs_a_cyclical_policy(small_demo: Path, make_trainer) -> None:
    with pytest.raises(
        ConfigError, match="trainer.stop_after_cycles=2 needs a cyclical schedule; schedule.policy=fixed has no cycles"
    ):
        make_trainer(small_demo, "schedule=fixed", "trainer.stop_after_cycles=2")


@pytest.mark.slow
def test_divergence_stops_with_the_step_and_lr(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo, "schedule=fixed", "schedule.base_lr=1e6", "trainer.max_steps=20", "logger.log_every=2"
    )
    with pytest.raises(
        TrainingDiverged, match=r"training loss is (nan|inf) at step (\d+) \(lr 1e\+06\); lower schedule.max_lr/base_lr"
    ) as info:
        trainer.fit()
    # The loss is checked when it is logged (every 2 steps): the run stops at a logging step,
    # having logged every earlier one, each with a finite loss; the NaN/inf is never logged.
    diverged_at = int(str(info.value).split(" at step ")[1].split()[0])
    assert diverged_at % 2 == 0 and 2 <= diverged_at <= 20 and trainer.step == diverged_at
    losses = train_losses(tmp_path / "run")
    assert list(losses) == list(range(2, diverged_at, 2))
    assert all(math.isfinite(loss) for loss in losses.values())


@pytest.mark.slow
def test_googlenet_trains_with_aux_heads(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo,
        "model=googlenet",
        "schedule=fixed",
        "schedule.base_lr=0.01",
        "trainer.max_steps=2",
        "logger.log_every=1",
    )
    trainer.fit()
    losses = train_losses(tmp_path / "run")
    # Main loss plus 0.3 x two auxiliary losses, each near ln(10) at the start.
    assert list(losses) == [1, 2] and losses[1] == pytest.approx(1.6 * math.log(10), rel=0.15)
    assert math.isfinite(losses[2])


def test_demo_data_is_made_when_missing(tmp_path: Path, make_trainer) -> None:
    root = tmp_path / "fresh-demo"
    trainer = make_trainer(root, "data=demo", "trainer.max_steps=1")
    assert (root / "train").is_dir() and (trainer.plan.train_images, trainer.plan.val_images) == (2000, 500)


@pytest.mark.slow
def test_bf16_autocast_on_cpu(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo, "trainer.precision=bf16", "schedule=fixed", "trainer.max_steps=2", "logger.log_every=1"
    )
    assert trainer.plan.precision == "bfloat16" and not trainer.scaler.is_enabled()
    images, targets = next(trainer.train_batches())
    with trainer._autocast():
        assert trainer.model(images).dtype == torch.bfloat16
    trainer.fit()
    losses = train_losses(tmp_path / "run")
    assert list(losses) == [1, 2] and all(math.isfinite(loss) for loss in losses.values())


def test_fp16_needs_cuda(small_demo: Path, make_trainer) -> None:
    with pytest.raises(ConfigError, match="trainer.precision=fp16 needs CUDA; on the CPU use bf16 or fp32"):
        make_trainer(small_demo, "trainer.precision=fp16", "trainer.device=cpu")


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_channels_last_on_cuda(tmp_path: Path, small_demo: Path, precision: str, make_trainer) -> None:
    trainer = make_trainer(
        small_demo,
        f"trainer.precision={precision}",
        "trainer.device=cuda",
        "schedule=fixed",
        "trainer.max_steps=4",
        "logger.log_every=1",
    )
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    images, _ = next(trainer.train_batches())
    assert images.is_cuda and images.is_contiguous(memory_format=torch.channels_last)
    trainer.fit()
    losses = train_losses(tmp_path / "run")
    assert list(losses) == [1, 2, 3, 4] and all(math.isfinite(loss) for loss in losses.values())


@pytest.mark.slow
def test_synthetic_data_trains_without_a_folder(tmp_path: Path, make_trainer) -> None:
    # data.root is set by make_trainer, but data=synthetic reads no folder: none exists there.
    trainer = make_trainer(
        tmp_path / "no-such-folder",
        "data=synthetic",
        "data.image_size=32",
        "data.val_resize=32",
        "data.batch_size=8",
        "data.synthetic_images=80",
        "data.synthetic_classes=5",
        "model.name=test_resnet",
        "schedule.stepsize=2",
        "schedule.stepsize_epochs=null",
        "trainer.max_steps=4",
    )
    assert (trainer.plan.steps_per_epoch, trainer.plan.classes) == (10, 5)
    peaks = trainer.fit()
    assert [(p.cycle, p.step) for p in peaks] == [(1, 4)] and trainer.step == 4
    assert not (tmp_path / "no-such-folder").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [7, 15])  # mid-epoch, and right at the end of epoch 0
def test_resume_from_state_dict_is_bit_exact_through_dali(
    tmp_path: Path, small_demo: Path, stop_at: int, make_trainer
) -> None:
    """Stopped at ``stop_at`` and continued from its state_dict, a run ends with the same weights
    and the same cycle peaks as one that never stopped (DALI reader state, dropout RNG, momentum)."""
    common = ("data.loader=dali", "schedule.stepsize=4", "schedule.stepsize_epochs=null", "logger.log_every=5")
    whole = make_trainer(small_demo, *common, "trainer.max_steps=20", run_dir=tmp_path / "whole")
    whole_peaks = whole.fit()

    first = make_trainer(small_demo, *common, f"trainer.max_steps={stop_at}", run_dir=tmp_path / "first")
    first.fit()
    state = first.state_dict()
    assert (state["step"], state["epoch"]) == (stop_at, 0)

    second = make_trainer(small_demo, *common, "trainer.max_steps=20", run_dir=tmp_path / "second")
    second.load_state_dict(state)
    assert second.step == stop_at
    second_peaks = second.fit()
    assert [p.step for p in whole_peaks] == [8, 16] and second_peaks == whole_peaks
    assert second.step == whole.step == 20 and second.epoch == whole.epoch == 1
    weights, resumed = whole.model.state_dict(), second.model.state_dict()
    assert weights and set(resumed) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(resumed[name], tensor), name
    # Against a vacuous pass: the first run's weights at stop_at differ from the end's.
    stopped = first.model.state_dict()
    assert any(not torch.equal(stopped[name], tensor) for name, tensor in weights.items())


def test_half_precision_images_need_mixed_precision(small_demo: Path, make_trainer) -> None:
    with pytest.raises(
        ConfigError,
        match=r"data.output_dtype=float16 needs mixed precision, and this run is fp32 "
        r"\(trainer.precision=auto on cpu\); set trainer.precision=bf16",
    ):
        make_trainer(small_demo, "data.output_dtype=float16")


@pytest.mark.slow
def test_bfloat16_images_train_under_bf16_autocast(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    trainer = make_trainer(
        small_demo,
        "data.output_dtype=bfloat16",
        "trainer.precision=bf16",
        "schedule=fixed",
        "trainer.max_steps=2",
        "logger.log_every=1",
    )
    images, _ = next(trainer.train_batches())
    assert images.dtype == torch.bfloat16
    trainer.fit()
    losses = train_losses(tmp_path / "run")
    assert list(losses) == [1, 2] and all(math.isfinite(loss) for loss in losses.values())
