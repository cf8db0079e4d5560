"""Checkpoints in one process: what is written, a torn newest one, a refused incompatible resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clr_dist.errors import ConfigError
from clr_dist.trainer import Trainer
from tests.conftest import compose_train, quick_overrides

CHECKPOINTED = ("model.name=test_resnet", "trainer.save_checkpoints=true", "trainer.checkpoint_every=4",
                "trainer.keep_checkpoints=2", "schedule.stepsize=3", "schedule.stepsize_epochs=null",
                "logger.log_every=2")


def run(run_dir: Path, data: Path, *overrides: str) -> Trainer:
    trainer = Trainer(compose_train(quick_overrides(data, *CHECKPOINTED, *overrides)), run_dir)
    trainer.resume()
    trainer.fit()
    trainer.close()
    return trainer


def test_periodic_checkpoints_and_cycle_snapshots(tmp_path: Path, small_demo: Path) -> None:
    run(tmp_path, small_demo, "trainer.max_steps=13")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # Periodic at 4, 8, 12 (the two newest kept) and the end (13); snapshots at the cycle ends 6, 12.
    assert names == ["step-00000006-cycle-001", "step-00000008", "step-00000012-cycle-002", "step-00000013"]
    shared = torch.load(tmp_path / "checkpoints" / "step-00000013" / "shared.pt", weights_only=True)
    assert (shared["step"], shared["epoch"]) == (13, 0)
    assert [p["cycle"] for p in shared["peaks"]] == [1, 2]
    assert shared["meta"]["settings"]["schedule.stepsize"] == 3 and shared["meta"]["settings"]["world_size"] == 1
    rank0 = torch.load(tmp_path / "checkpoints" / "step-00000013" / "rank0.pt", weights_only=True)
    assert set(rank0) == {"rng", "data", "meter"} and rank0["data"]["yielded"] == 13


def test_a_finished_run_resumed_changes_nothing(tmp_path: Path, small_demo: Path) -> None:
    first = run(tmp_path, small_demo, "trainer.max_steps=9")
    again = run(tmp_path, small_demo, "trainer.max_steps=9")
    assert again.step == 9
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name


def test_a_torn_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path: Path, small_demo: Path,
                                                                        capfd: pytest.CaptureFixture) -> None:
    run(tmp_path, small_demo, "trainer.max_steps=8", "trainer.snapshot_cycle_ends=false")
    newest = tmp_path / "checkpoints" / "step-00000008" / "shared.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as a full disk or a crash would
    capfd.readouterr()
    trainer = Trainer(compose_train(quick_overrides(small_demo, *CHECKPOINTED, "trainer.max_steps=8")), tmp_path)
    trainer.resume()
    err = capfd.readouterr().err
    assert f"clr-dist: checkpoint {newest.parent} cannot be read (" in err and "trying the one before it" in err
    assert f"resuming from {tmp_path / 'checkpoints' / 'step-00000004'} at step 4" in err
    assert trainer.step == 4
    trainer.close()


def test_resume_with_another_schedule_is_refused_unless_allowed(tmp_path: Path, small_demo: Path) -> None:
    run(tmp_path, small_demo, "trainer.max_steps=4", "schedule.max_lr=0.02")
    changed = Trainer(compose_train(quick_overrides(small_demo, *CHECKPOINTED, "trainer.max_steps=8",
                                                    "schedule.max_lr=0.03", "data.batch_size=8")), tmp_path)
    with pytest.raises(ConfigError) as info:
        changed.resume()
    message = str(info.value)
    assert "schedule.max_lr: 0.02 then, 0.03 now" in message and "data.batch_size: 16 then, 8 now" in message
    assert message.endswith("start a new run directory, or set trainer.resume_allow_changes=true to resume anyway")
    allowed = Trainer(compose_train(quick_overrides(small_demo, *CHECKPOINTED, "trainer.max_steps=8",
                                                    "schedule.max_lr=0.03", "trainer.resume_allow_changes=true")),
                      tmp_path)
    allowed.resume()
    assert allowed.step == 4


def test_resume_from_a_named_checkpoint_and_a_bad_name(tmp_path: Path, small_demo: Path) -> None:
    run(tmp_path / "a", small_demo, "trainer.max_steps=8")
    chosen = tmp_path / "a" / "checkpoints" / "step-00000006-cycle-001"
    trainer = Trainer(compose_train(quick_overrides(small_demo, *CHECKPOINTED, "trainer.max_steps=8",
                                                    f"trainer.resume={chosen}")), tmp_path / "b")
    trainer.resume()
    assert trainer.step == 6
    with pytest.raises(ConfigError, match=r"trainer.resume='/nowhere' is not a checkpoint folder \(no shared.pt in it\)"):
        Trainer(compose_train(quick_overrides(small_demo, *CHECKPOINTED, "trainer.resume=/nowhere")),
                tmp_path / "c").resume()
