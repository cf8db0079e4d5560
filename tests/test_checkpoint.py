"""Checkpoints in one process: what is written, a torn newest one, a refused incompatible resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clr_dist.errors import ConfigError

pytestmark = pytest.mark.slow  # every test trains

CHECKPOINTED = (
    "model.name=test_resnet",
    "trainer.save_checkpoints=true",
    "trainer.checkpoint_every=4",
    "trainer.keep_checkpoints=2",
    "schedule.stepsize=3",
    "schedule.stepsize_epochs=null",
    "logger.log_every=2",
)


def run(make_trainer, run_dir: Path, data: Path, *overrides: str):
    """A checkpointed run in ``run_dir``, resumed from its newest checkpoint if it has one; the Trainer."""
    trainer = make_trainer(data, *CHECKPOINTED, *overrides, run_dir=run_dir)
    trainer.resume()
    trainer.fit()
    return trainer


def test_periodic_checkpoints_and_cycle_snapshots(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    run(make_trainer, tmp_path, small_demo, "trainer.max_steps=13")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # Periodic at 4, 8, 12 (the two newest kept) and the end (13); snapshots at the cycle ends 6, 12.
    assert names == ["step-00000006-cycle-001", "step-00000008", "step-00000012-cycle-002", "step-00000013"]
    shared = torch.load(tmp_path / "checkpoints" / "step-00000013" / "shared.pt", weights_only=True)
    assert (shared["step"], shared["epoch"]) == (13, 0)
    assert [p["cycle"] for p in shared["peaks"]] == [1, 2]
    assert shared["meta"]["settings"]["schedule.stepsize"] == 3 and shared["meta"]["settings"]["world_size"] == 1
    rank0 = torch.load(tmp_path / "checkpoints" / "step-00000013" / "rank0.pt", weights_only=True)
    assert set(rank0) == {"rng", "data", "meter"} and rank0["data"]["yielded"] == 13


def test_a_finished_run_resumed_changes_nothing(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    first = run(make_trainer, tmp_path, small_demo, "trainer.max_steps=9")
    metrics = (tmp_path / "metrics.jsonl").read_text()
    again = run(make_trainer, tmp_path, small_demo, "trainer.max_steps=9")
    assert first.step == again.step == 9
    weights = first.model.state_dict()
    assert weights and set(again.model.state_dict()) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
    # Nothing trained again: the resumed run logged no training step of its own.
    again_lines = (tmp_path / "metrics.jsonl").read_text()[len(metrics) :].splitlines()
    assert metrics.startswith('{"event": "start"') and '"event": "train"' not in "".join(again_lines)


def test_a_torn_newest_checkpoint_is_reported_and_the_previous_one_used(
    tmp_path: Path, small_demo: Path, capfd: pytest.CaptureFixture, make_trainer
) -> None:
    run(make_trainer, tmp_path, small_demo, "trainer.max_steps=8", "trainer.snapshot_cycle_ends=false")
    newest = tmp_path / "checkpoints" / "step-00000008" / "shared.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as a full disk or a crash would
    capfd.readouterr()
    trainer = make_trainer(small_demo, *CHECKPOINTED, "trainer.max_steps=8", run_dir=tmp_path)
    trainer.resume()
    err = capfd.readouterr().err
    assert f"clr-dist: checkpoint {newest.parent} cannot be read (" in err and "trying the one before it" in err
    assert f"resuming from {tmp_path / 'checkpoints' / 'step-00000004'} at step 4" in err
    assert trainer.step == 4


def test_resume_with_another_schedule_is_refused_unless_allowed(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    run(make_trainer, tmp_path, small_demo, "trainer.max_steps=4", "schedule.max_lr=0.02")
    changed = make_trainer(
        small_demo, *CHECKPOINTED, "trainer.max_steps=8", "schedule.max_lr=0.03", "data.batch_size=8", run_dir=tmp_path
    )
    with pytest.raises(ConfigError) as info:
        changed.resume()
    message = str(info.value)
    assert "schedule.max_lr: 0.02 then, 0.03 now" in message and "data.batch_size: 16 then, 8 now" in message
    assert message.endswith("start a new run directory, or set trainer.resume_allow_changes=true to resume anyway")
    assert changed.step == 0  # refused before anything was loaded
    allowed = make_trainer(
        small_demo,
        *CHECKPOINTED,
        "trainer.max_steps=8",
        "schedule.max_lr=0.03",
        "trainer.resume_allow_changes=true",
        run_dir=tmp_path,
    )
    allowed.resume()
    assert allowed.step == 4


def test_resume_from_a_named_checkpoint_and_a_bad_name(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    run(make_trainer, tmp_path / "a", small_demo, "trainer.max_steps=8")
    chosen = tmp_path / "a" / "checkpoints" / "step-00000006-cycle-001"
    trainer = make_trainer(
        small_demo, *CHECKPOINTED, "trainer.max_steps=8", f"trainer.resume={chosen}", run_dir=tmp_path / "b"
    )
    trainer.resume()
    assert trainer.step == 6  # the one named, not the newest (step 8)
    with pytest.raises(
        ConfigError, match=r"trainer.resume='/nowhere' is not a checkpoint folder \(no shared.pt in it\)"
    ):
        make_trainer(small_demo, *CHECKPOINTED, "trainer.resume=/nowhere", run_dir=tmp_path / "c").resume()
