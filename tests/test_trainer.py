"""The Trainer in one process, on the small demo set."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from clr_dist.errors import ConfigError, TrainingDiverged
from clr_dist.trainer import Trainer
from tests.conftest import compose_train, quick_overrides


def closed_form_triangular(step: int, base: float, top: float, stepsize: int) -> float:
    cycle = math.floor(1 + step / (2 * stepsize))
    x = abs(step / stepsize - 2 * cycle + 1)
    return base + (top - base) * max(0.0, 1 - x)


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == kind]


def make_trainer(tmp_path: Path, data: Path, *overrides: str) -> Trainer:
    return Trainer(compose_train(quick_overrides(data, *overrides)), tmp_path / "run")


def test_lr_every_step_and_validation_at_cycle_ends(tmp_path: Path, small_demo: Path) -> None:
    trainer = make_trainer(
        tmp_path, small_demo, "schedule=triangular", "schedule.base_lr=0.001", "schedule.max_lr=0.004",
        "schedule.stepsize=3", "schedule.stepsize_epochs=null", "trainer.max_steps=14",
        "trainer.record_lr=true", "logger.log_every=4",
    )
    peaks = trainer.fit()
    trainer.close()
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
    assert peaks[0].lr == pytest.approx(closed_form_triangular(5, 0.001, 0.004, 3))
    with (run / "cycle_peaks.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(int(r["cycle"]), int(r["step"]), float(r["top1"])) for r in table] == [(p.cycle, p.step, p.top1) for p in peaks]
    start = events(run, "start")[0]["resolved"]
    assert (start["steps_per_epoch"], start["stepsize"], start["cycle_length"], start["val_images"]) == (15, 3, 6, 70)


def test_stop_after_cycles_ends_at_that_cycle_end(tmp_path: Path, small_demo: Path) -> None:
    trainer = make_trainer(tmp_path, small_demo, "schedule.stepsize=2", "schedule.stepsize_epochs=null",
                           "trainer.max_steps=1000", "trainer.stop_after_cycles=2")
    assert trainer.planned_steps == 8
    assert [p.step for p in trainer.fit()] == [4, 8]
    trainer.close()


def test_stepsize_in_epochs_uses_optimizer_steps(tmp_path: Path, small_demo: Path) -> None:
    # 240 images / batch 16 = 15 micro-batches an epoch; 2 of them per step -> 7 steps an epoch.
    trainer = make_trainer(tmp_path, small_demo, "schedule.stepsize_epochs=2", "trainer.grad_accum_steps=2")
    assert (trainer.resolved["steps_per_epoch"], trainer.resolved["stepsize"]) == (7, 14)
    trainer.close()


def test_stop_after_cycles_needs_a_cyclical_policy(tmp_path: Path, small_demo: Path) -> None:
    with pytest.raises(ConfigError, match="trainer.stop_after_cycles=2 needs a cyclical schedule; schedule.policy=fixed has no cycles"):
        make_trainer(tmp_path, small_demo, "schedule=fixed", "trainer.stop_after_cycles=2")


def test_divergence_stops_with_the_step_and_lr(tmp_path: Path, small_demo: Path) -> None:
    trainer = make_trainer(tmp_path, small_demo, "schedule=fixed", "schedule.base_lr=1e6",
                           "trainer.max_steps=20", "logger.log_every=2")
    with pytest.raises(TrainingDiverged, match=r"training loss is (nan|inf) at step \d+ \(lr 1e\+06\); lower schedule.max_lr/base_lr"):
        trainer.fit()
    trainer.close()
    assert all(math.isfinite(e["loss"]) for e in events(tmp_path / "run", "train"))  # no NaN/inf metric


def test_googlenet_trains_with_aux_heads(tmp_path: Path, small_demo: Path) -> None:
    trainer = make_trainer(tmp_path, small_demo, "model=googlenet", "schedule=fixed", "schedule.base_lr=0.01",
                           "trainer.max_steps=2", "logger.log_every=1")
    trainer.fit()
    trainer.close()
    losses = [e["loss"] for e in events(tmp_path / "run", "train")]
    # Main loss plus 0.3 x two auxiliary losses, each near ln(10) at the start.
    assert len(losses) == 2 and losses[0] == pytest.approx(1.6 * math.log(10), rel=0.15)


def test_demo_data_is_made_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "fresh-demo"
    trainer = make_trainer(tmp_path, root, "data=demo", "trainer.max_steps=1")
    assert (root / "train").is_dir() and trainer.resolved["train_images"] == 2000
    trainer.close()


def test_bf16_autocast_on_cpu(tmp_path: Path, small_demo: Path) -> None:
    trainer = make_trainer(tmp_path, small_demo, "trainer.precision=bf16", "schedule=fixed", "trainer.max_steps=2",
                           "logger.log_every=1")
    assert trainer.resolved["precision"] == "bfloat16" and not trainer.scaler.is_enabled()
    images, targets = next(trainer.train_batches())
    with trainer._autocast():
        assert trainer.model(images).dtype == torch.bfloat16
    trainer.fit()
    trainer.close()
    assert all(math.isfinite(e["loss"]) for e in events(tmp_path / "run", "train"))


def test_fp16_needs_cuda(tmp_path: Path, small_demo: Path) -> None:
    with pytest.raises(ConfigError, match="trainer.precision=fp16 needs CUDA; on the CPU use bf16 or fp32"):
        make_trainer(tmp_path, small_demo, "trainer.precision=fp16", "trainer.device=cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_channels_last_on_cuda(tmp_path: Path, small_demo: Path, precision: str) -> None:
    trainer = make_trainer(tmp_path, small_demo, f"trainer.precision={precision}", "trainer.device=cuda",
                           "schedule=fixed", "trainer.max_steps=4", "logger.log_every=1")
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    images, _ = next(trainer.train_batches())
    assert images.is_cuda and images.is_contiguous(memory_format=torch.channels_last)
    trainer.fit()
    trainer.close()
    assert all(math.isfinite(e["loss"]) for e in events(tmp_path / "run", "train"))


def test_synthetic_data_trains_without_a_folder(tmp_path: Path) -> None:
    trainer = Trainer(compose_train(["data=synthetic", "data.image_size=32", "data.val_resize=32",
                                     "data.batch_size=8", "data.synthetic_images=80", "data.synthetic_classes=5",
                                     "model.name=test_resnet", "schedule.stepsize=2", "schedule.stepsize_epochs=null",
                                     "trainer.max_steps=4", "trainer.save_checkpoints=false", "logger.mode=disabled",
                                     "logger.progress_bar=false"]),
                      tmp_path / "run")
    assert (trainer.resolved["steps_per_epoch"], trainer.resolved["classes"]) == (10, 5)
    peaks = trainer.fit()
    trainer.close()
    assert [p.step for p in peaks] == [4]


@pytest.mark.parametrize("stop_at", [7, 15])  # mid-epoch, and right at the end of epoch 0
def test_resume_from_state_dict_is_bit_exact_through_dali(tmp_path: Path, small_demo: Path, stop_at: int) -> None:
    """Stopped at ``stop_at`` and continued from its state_dict, a run ends with the same weights
    and the same cycle peaks as one that never stopped (DALI reader state, dropout RNG, momentum)."""
    common = ("data.loader=dali", "schedule.stepsize=4", "schedule.stepsize_epochs=null", "logger.log_every=5")
    whole = make_trainer(tmp_path / "whole", small_demo, *common, "trainer.max_steps=20")
    whole_peaks = whole.fit()
    whole.close()

    first = make_trainer(tmp_path / "first", small_demo, *common, f"trainer.max_steps={stop_at}")
    first.fit()
    state = first.state_dict()
    first.close()
    assert (state["step"], state["epoch"]) == (stop_at, 0)

    second = make_trainer(tmp_path / "second", small_demo, *common, "trainer.max_steps=20")
    second.load_state_dict(state)
    second_peaks = second.fit()
    second.close()
    assert [p.step for p in whole_peaks] == [8, 16] and second_peaks == whole_peaks
    assert second.epoch == whole.epoch == 1
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], tensor), name


def test_half_precision_images_need_mixed_precision(tmp_path: Path, small_demo: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.output_dtype=float16 needs mixed precision, and this run is fp32 "
                                          r"\(trainer.precision=auto on cpu\); set trainer.precision=bf16"):
        make_trainer(tmp_path, small_demo, "data.output_dtype=float16")


def test_bfloat16_images_train_under_bf16_autocast(tmp_path: Path, small_demo: Path) -> None:
    trainer = make_trainer(tmp_path, small_demo, "data.output_dtype=bfloat16", "trainer.precision=bf16",
                           "schedule=fixed", "trainer.max_steps=2", "logger.log_every=1")
    images, _ = next(trainer.train_batches())
    assert images.dtype == torch.bfloat16
    trainer.fit()
    trainer.close()
    assert all(math.isfinite(e["loss"]) for e in events(tmp_path / "run", "train"))
