"""`clr-dist` as a user runs it: bad input stops before training with one line on stderr."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from clr_dist import cli
from clr_dist.schedules import POLICY_NAMES
from tests.conftest import BIN, copy_tree, run_cli

pytestmark = pytest.mark.slow  # every test starts `clr-dist` in a process of its own

FAST = ["logger.mode=disabled", "trainer.max_steps=1", "data.workers=0", "data.batch_size=16"]


def _layout_mismatch(tmp_path: Path, small_demo: Path) -> Path:
    root = copy_tree(small_demo, tmp_path / "mismatch")
    shutil.rmtree(next((root / "val").iterdir()))
    return root


def _empty(tmp_path: Path, small_demo: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


BAD_INPUTS = {
    "missing data directory": (lambda t, d: t / "nowhere", [], "does not exist or is not a directory"),
    "empty data directory": (_empty, [], "is empty; make one with `clr-dist data make-demo DIR`"),
    "class layout mismatch": (_layout_mismatch, [], "train and val class folders differ"),
    "max_lr below base_lr": (
        lambda t, d: d,
        ["schedule.base_lr=0.01", "schedule.max_lr=0.001"],
        "schedule.max_lr=0.001 is below schedule.base_lr=0.01",
    ),
    "stepsize zero": (
        lambda t, d: d,
        ["schedule.stepsize=0", "schedule.stepsize_epochs=null"],
        "schedule.stepsize=0 must be a positive number of steps",
    ),
    "stepsize negative": (
        lambda t, d: d,
        ["schedule.stepsize=null", "schedule.stepsize_epochs=-2"],
        "schedule.stepsize_epochs=-2.0 must be positive",
    ),
    "unknown model": (
        lambda t, d: d,
        ["model.name=alexnett"],
        "unknown model.name='alexnett': not in timm's registry; did you mean: alexnet",
    ),
    "unknown policy": (
        lambda t, d: d,
        ["schedule.policy=triangel"],
        f"schedule.policy: Invalid value 'triangel', expected one of [{', '.join(POLICY_NAMES)}]",
    ),
    "precision out of its choices": (
        lambda t, d: d,
        ["trainer.precision=fp8"],
        "trainer.precision: Invalid value 'fp8', expected one of [auto, fp32, bf16, fp16]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_before_training(case: str, tmp_path: Path, small_demo: Path) -> None:
    make_root, overrides, message = BAD_INPUTS[case]
    root = make_root(tmp_path, small_demo)
    result = run_cli(
        ["clr-dist", "train", "data=imagenet", f"data.root={root}", *FAST, *overrides],
        cwd=tmp_path,
        env={"CLR_DIST_RUN_ID": "bad"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clr-dist train: error: ") and message in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "bad" / "metrics.jsonl").exists()  # stopped before training


def test_unknown_schedule_group_lists_the_policies(tmp_path: Path) -> None:
    result = run_cli(["clr-dist", "train", "schedule=triangel"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "clr-dist train: error: In 'train': Could not find 'schedule/triangel'; available options: "
        f"{', '.join(POLICY_NAMES)}\n"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["train", "trainer.precision=fp8"],
            "clr-dist train: error: trainer.precision: Invalid value 'fp8', expected one of [auto, fp32, bf16, fp16]",
        ),
        (
            ["train", "--cfg", "job", "logger.mode=onlin"],
            "clr-dist train: error: logger.mode: Invalid value 'onlin', expected one of [online, offline, disabled]",
        ),
        (
            ["range-test", "range_test.rule=half"],
            "clr-dist range-test: error: range_test.rule: Invalid value 'half', expected one of [range, third, quarter]",
        ),
        (
            ["schedule", "--csv", "s.csv", "schedule.shape=square"],
            "clr-dist schedule: error: schedule.shape: Invalid value 'square', expected one of [triangular, welch, hann]",
        ),
    ],
)
def test_a_value_outside_its_choices_is_one_line_at_once(args: list[str], line: str, tmp_path: Path) -> None:
    """Refused while the config composes, before torch is even imported: one line naming the
    key, the value and the valid values, exit status 2."""
    result = run_cli(["clr-dist", *args], cwd=tmp_path, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


def test_nproc_is_what_the_launchers_start_on_this_gpu_less_machine(tmp_path: Path) -> None:
    """No GPU here: 2 CPU processes, NPROC's count with trainer.device=cpu, and an asked-for GPU
    is one line (the GPU counts themselves are unit-tested in test_dist.py)."""
    assert run_cli(["clr-dist", "nproc"], cwd=tmp_path).stdout == "2\n"
    assert (
        run_cli(["clr-dist", "nproc", "--requested", "3", "experiment=demo", "trainer.device=cpu"], cwd=tmp_path).stdout
        == "3\n"
    )
    cuda = run_cli(["clr-dist", "nproc", "trainer.device=cuda"], cwd=tmp_path)
    assert cuda.returncode == 2 and cuda.stderr == (
        "clr-dist nproc: error: trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu\n"
    )


def test_make_demo_then_reuse(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["clr-dist", "data", "make-demo", str(out), "--train-per-class", "3", "--val-per-class", "2"]
    first = run_cli(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "10 classes, 30 train and 20 val images" in first.stdout
    assert len(list((out / "val").rglob("*.JPEG"))) == 20
    again = run_cli(args[:-1] + ["3"], cwd=tmp_path)  # other settings: refused, nothing lost
    assert again.returncode == 2
    assert again.stderr.strip().startswith("clr-dist data: error: ") and "other settings" in again.stderr
    assert len(list((out / "val").rglob("*.JPEG"))) == 20


def test_schedule_command_writes_the_configured_schedule(tmp_path: Path) -> None:
    csv_path, png_path = tmp_path / "s.csv", tmp_path / "s.png"
    result = run_cli(
        [
            "clr-dist",
            "schedule",
            "--csv",
            str(csv_path),
            "--png",
            str(png_path),
            "schedule=triangular",
            "schedule.base_lr=0.001",
            "schedule.max_lr=0.006",
            "schedule.stepsize=2000",
            "schedule.stepsize_epochs=null",
            "trainer.max_steps=8000",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8000
    # The paper's CIFAR-10 example: 0.001 at cycle starts, 0.006 at step 2000, cycle 2 from 4000.
    assert (float(rows[0]["lr"]), float(rows[2000]["lr"]), float(rows[4000]["lr"])) == (0.001, 0.006, 0.001)
    assert (rows[3999]["cycle"], rows[4000]["cycle"], rows[0]["momentum"]) == ("1", "2", "")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_command_reports_bad_overrides(tmp_path: Path) -> None:
    result = run_cli(["clr-dist", "schedule", "--csv", str(tmp_path / "s.csv"), "schedule.bogus=1"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "clr-dist schedule: error: Key 'bogus' not in 'ScheduleConfig'"
    assert not (tmp_path / "s.csv").exists()


def test_data_check_reports_a_corrupt_image_and_fails(tmp_path: Path, small_demo: Path) -> None:
    root = copy_tree(small_demo, tmp_path / "d")
    bad = next((root / "val").rglob("*.JPEG"))
    bad.write_bytes(b"not a jpeg at all")
    result = run_cli(
        ["clr-dist", "data", "check", str(root), "--out", str(tmp_path / "report"), "--workers", "1"], cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert bad.name in result.stdout
    val_list = (tmp_path / "report" / "val.txt").read_text().splitlines()
    assert len(val_list) == 69 and not any(bad.name in line for line in val_list)


def test_fashion_mnist_without_the_package_says_how_to_install(tmp_path: Path) -> None:
    result = run_cli(
        ["clr-dist", "data", "fashion-mnist", str(tmp_path / "out"), "--source", str(tmp_path)], cwd=tmp_path
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert (
        line.startswith("clr-dist data: error: Fashion-MNIST file") and "apt-get install dataset-fashion-mnist" in line
    )
    assert "\n" not in line


def test_composing_first_leaves_interpolations_to_the_run(tmp_path: Path) -> None:
    """The check before Hydra composes only: ${hydra:...} resolves in the run, not before it."""
    result = run_cli(["clr-dist", "train", "--cfg", "job", "logger.run_name=${hydra:job.name}"], cwd=tmp_path)
    assert result.returncode == 0 and "run_name: ${hydra:job.name}" in result.stdout, result.stderr


def _complete(line: str, tmp_path: Path, command: str = "train") -> list[str]:
    """What Tab offers at the end of ``line`` in bash, with the script `clr-dist COMMAND -sc
    install=bash` prints installed: the completion function run as bash runs it on Tab."""
    script = f"""
        eval "$(clr-dist {command} -sc install=bash)"
        complete -p clr-dist
        COMP_LINE={shlex.quote(line)}
        COMP_POINT=${{#COMP_LINE}}
        words=($COMP_LINE)
        COMP_CWORD=$(( ${{#words[@]}} - 1 ))
        [[ "$COMP_LINE" == *" " ]] && COMP_CWORD=${{#words[@]}}
        hydra_bash_completion
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    registration, *offered = result.stdout.splitlines()
    assert registration.endswith("-F hydra_bash_completion clr-dist")  # for the program, not "clr-dist train"
    return offered


def test_shell_completion_completes_the_overrides_of_train_and_range_test(tmp_path: Path) -> None:
    models = ["model=alexnet", "model=cifar10_full", "model=googlenet", "model=resnet50"]
    assert _complete("clr-dist train model=", tmp_path) == models
    assert _complete("clr-dist range-test experiment=range_test_", tmp_path, command="range-test") == [
        "experiment=range_test_googlenet",
        "experiment=range_test_superconvergence",
    ]
    assert _complete("clr-dist range-test range_test.ru", tmp_path) == ["range_test.rule="]
    assert _complete("clr-dist train -m trainer.max_st", tmp_path) == ["trainer.max_steps="]
    assert _complete("clr-dist ra", tmp_path) == ["range-test"]  # the subcommand itself


def test_overrides_after_the_flags_count_as_before_them(tmp_path: Path) -> None:
    """`schedule=exp_range --csv F schedule.gamma=0.999`: the gamma, after the flag, applies."""
    result = run_cli(
        [
            "clr-dist",
            "schedule",
            "schedule=exp_range",
            "--csv",
            "lr.csv",
            "schedule.gamma=0.999",
            "--steps-per-epoch",
            "10",
            "schedule.stepsize=5",
            "schedule.stepsize_epochs=null",
            "trainer.max_steps=30",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with (tmp_path / "lr.csv").open() as f:
        lr = [float(row["lr"]) for row in csv.DictReader(f)]
    # exp_range: both bounds shrink by gamma^step, so a cycle start after 20 steps is 0.999^20 of the first.
    assert len(lr) == 30 and lr[20] == pytest.approx(lr[0] * 0.999**20)


@pytest.mark.parametrize(
    "argv",
    [
        ["schedule", "a=1", "--csv", "f", "b=2", "--png", "g", "c=3"],
        ["nproc", "a=1", "--requested", "2", "b=2", "c=3"],
        ["interpolate", "A", "B", "a=1", "--alphas", "-1:1:3", "b=2", "--out", "o", "c=3"],
        ["ensemble", "R", "a=1", "--last", "2", "b=2", "--bn-images", "0", "c=3"],
        ["run-dir", "a=1", "b=2", "c=3"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_command_with_overrides_takes_them_anywhere(argv: list[str]) -> None:
    assert cli.parse_args(argv).overrides == ["a=1", "b=2", "c=3"]


def test_an_unknown_flag_among_overrides_is_named_alone(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["schedule", "a=1", "--csv", "f", "b=2", "--pgn", "g"])
    assert capsys.readouterr().err.strip().endswith("error: unrecognized arguments: --pgn")
