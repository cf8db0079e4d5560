"""`clr-dist` as a user runs it: bad input stops before training with one line on stderr."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from clr_dist.schedules import POLICY_NAMES
from tests.conftest import copy_tree, run_cli

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
        f"unknown schedule.policy='triangel'; valid policies: {', '.join(POLICY_NAMES)}",
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
    assert result.returncode != 0
    assert "Could not find 'schedule/triangel'" in result.stderr
    for name in ("triangular", "triangular2", "exp_range", "fixed"):
        assert f"\t{name}\n" in result.stderr


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
