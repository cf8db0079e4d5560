"""clr-dist sbatch's request: CPUs in proportion to the GPUs, or the CPU processes' count."""

from __future__ import annotations

from pathlib import Path

import pytest

from clr_dist.cli import parse_args
from clr_dist.cluster import cpus_per_task, sbatch_command
from clr_dist.errors import ConfigError

SCRIPT = Path("slurm/train.sbatch")


@pytest.mark.parametrize(
    ("gpus", "per_gpu", "cpus", "expected"),
    [
        (0, None, None, 2),
        (1, None, None, 8),
        (8, None, None, 64),
        (8, 12, None, 96),
        (8, None, 32, 32),
        (0, None, 6, 6),
    ],
)
def test_cpus_follow_the_gpus_unless_given(gpus: int, per_gpu: int | None, cpus: int | None, expected: int) -> None:
    assert cpus_per_task(gpus, per_gpu, cpus) == expected


def test_the_command_asks_for_one_task_per_node_with_the_cpus_then_the_script_and_overrides() -> None:
    command = sbatch_command(4, 8, None, None, SCRIPT, ["--partition=gpu", "--exclusive"], ["data=imagenet"])
    assert command == [
        "sbatch",
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--cpus-per-task=64",
        "--partition=gpu",
        "--exclusive",
        "slurm/train.sbatch",
        "data=imagenet",
    ]
    assert sbatch_command(1, 0, None, None, SCRIPT, [], [])[1:4] == [
        "--nodes=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=2",
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cpus_per_task(-1, None, None), "--gpus-per-node=-1 is not a valid count"),
        (lambda: cpus_per_task(8, 0, None), "--cpus-per-gpu=0 is not a valid count"),
        (lambda: sbatch_command(0, 0, None, None, SCRIPT, [], []), "--nodes=0 is not a valid count"),
        (
            lambda: sbatch_command(1, 0, None, None, SCRIPT, ["--cpus-per-task=4"], []),
            "give it as this command's own flag",
        ),
    ],
)
def test_bad_counts_are_one_line(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_unknown_flags_go_to_sbatch_and_the_rest_to_the_run() -> None:
    args = parse_args(
        ["sbatch", "--gpus-per-node", "2", "--time=1:00:00", "data=imagenet", "--hold", "model=googlenet"]
    )
    assert (args.gpus_per_node, args.sbatch_options) == (2, ["--time=1:00:00", "--hold"])
    assert args.overrides == ["data=imagenet", "model=googlenet"]


@pytest.mark.parametrize("argv", [["sbatch", "--partition", "gpu"], ["sbatch", "-c", "4"]])
def test_an_sbatch_option_without_its_value_or_one_of_ours_is_refused(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "clr-dist: error: " in capsys.readouterr().err
