"""data.workers=auto: the CPUs a rank has, from its affinity, SLURM and the ranks on its node."""

from __future__ import annotations

import os

import pytest

from clr_dist.data.workers import cpus_per_rank, dali_threads, dataloader_workers


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Set the process's affinity to ``cpus`` CPUs and the launcher's environment to ``env``."""

    def set_up(cpus: int, **env: str) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
        for key in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return set_up


@pytest.mark.parametrize(
    ("cpus", "env", "expected"),
    [
        (16, {}, 16),  # a lone process: every CPU it may run on
        (224, {"LOCAL_WORLD_SIZE": "8"}, 28),  # torchrun, 8 ranks on a 224-thread node
        (10, {"LOCAL_WORLD_SIZE": "4"}, 2),  # rounded down: never more threads than CPUs
        (3, {"LOCAL_WORLD_SIZE": "8"}, 1),  # fewer CPUs than ranks: still one
        (256, {"SLURM_CPUS_PER_TASK": "64", "LOCAL_WORLD_SIZE": "8"}, 8),  # SLURM without CPU binding
        (32, {"SLURM_CPUS_PER_TASK": "64", "LOCAL_WORLD_SIZE": "4"}, 8),  # the affinity is the harder limit
        (8, {"SLURM_CPUS_PER_TASK": "", "LOCAL_WORLD_SIZE": "2"}, 4),  # empty: not set
    ],
)
def test_cpus_per_rank(machine, cpus: int, env: dict[str, str], expected: int) -> None:
    machine(cpus, **env)
    assert cpus_per_rank() == expected


def test_auto_gives_dali_the_rank_s_cpus_and_the_dataloader_one_fewer(machine) -> None:
    machine(64, SLURM_CPUS_PER_TASK="32", LOCAL_WORLD_SIZE="4")
    assert (dali_threads("auto"), dataloader_workers("auto")) == (8, 7)
    machine(2, LOCAL_WORLD_SIZE="2")  # one CPU per rank: the DataLoader loads in the training process
    assert (dali_threads("auto"), dataloader_workers("auto")) == (1, 0)


def test_an_explicit_number_is_used_as_given(machine) -> None:
    machine(64, LOCAL_WORLD_SIZE="8")
    assert [dali_threads(n) for n in (0, 1, 12)] == [1, 1, 12]  # a pipeline needs one thread
    assert [dataloader_workers(n) for n in (0, 1, 12)] == [0, 1, 12]
