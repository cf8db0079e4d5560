"""Preemption on 2 real torchrun processes: SIGKILL at random steps, a stop signal to one rank,
and torchrun's own restarts; every resumed run must end exactly as an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import BIN

pytestmark = pytest.mark.slow

MAX_STEPS = 60


def command(data: Path, *torchrun_flags: str) -> list[str]:
    # 240 images, 8 per rank: 15 steps an epoch, 4 epochs; cycles end at 10, 20, ...; a checkpoint
    # every 4 steps.
    return [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        *torchrun_flags,
        "-m",
        "clr_dist.train",
        f"data.root={data}",
        "data.batch_size=16",
        "data.workers=0",
        # A small ResNet (batch norm included) on the demo's 64-pixel images at their own size:
        # what is tested, the state a resume restores, does not need ResNet-18 at 224.
        "model.name=test_resnet",
        "data.image_size=64",
        "data.val_resize=64",
        "schedule.base_lr=0.01",
        "schedule.max_lr=0.1",
        "schedule.stepsize=5",
        "schedule.stepsize_epochs=null",
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.checkpoint_every=4",
        "trainer.record_lr=true",
        # The running average of the cycle ends (batch norm recomputed over both ranks) is part
        # of the run state: a resumed run must end with the same average.
        "trainer.average_cycle_ends=true",
        "trainer.average_bn_images=64",
        "logger.log_every=2",
        "logger.mode=disabled",
        "logger.progress_bar=false",
    ]


def launch(work: Path, run_id: str, cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "CLR_DIST_RUNS_DIR": str(work / "runs"), "CLR_DIST_RUN_ID": run_id}
    return subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def steps_done(run_dir: Path, rank: int = 0) -> int:
    path = run_dir / f"lr_rank{rank}.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int, rank: int = 0) -> int:
    deadline = time.monotonic() + 240
    while steps_done(run_dir, rank) < step:
        assert process.poll() is None, f"the run ended before step {step}: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no step {step} after 240 s"
        time.sleep(0.005)
    return steps_done(run_dir, rank)


def worker_pid(rank: int, run_id: str) -> int:
    """The torchrun worker process of ``rank`` in the job ``run_id``."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if (
            b"clr_dist.train" in cmdline
            and f"RANK={rank}".encode() in environ
            and f"CLR_DIST_RUN_ID={run_id}".encode() in environ
            and b"LOCAL_RANK=" + str(rank).encode() in environ
        ):
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} found")


def history(run_dir: Path) -> dict:
    """Everything a run reports that must not depend on interruptions (not its timings)."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = ("images_per_sec",)
    return {
        "train": [{k: v for k, v in e.items() if k not in timed} for e in events if e["event"] == "train"],
        "evaluations": [e for e in events if e["event"] in ("eval", "cycle_peak")],
        "peaks": (run_dir / "cycle_peaks.csv").read_text(),
        "lr": [(run_dir / f"lr_rank{r}.csv").read_text() for r in (0, 1)],
    }


def final_weights(run_dir: Path) -> dict:
    """The model's weights and the average of the cycle ends, as saved at the last step."""
    (last,) = (run_dir / "checkpoints").glob(f"step-{MAX_STEPS:08d}*")  # the last step also ends cycle 6
    shared = torch.load(last / "shared.pt", weights_only=True)
    return {**shared["model"], **{f"averaged.{k}": v for k, v in shared["averaged"].items()}}


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert history(run_dir) == history(reference)
    reference_weights = final_weights(reference)
    assert final_weights(run_dir).keys() == reference_weights.keys()
    for name, tensor in final_weights(run_dir).items():
        assert torch.equal(tensor, reference_weights[name]), name


def test_the_average_of_the_cycle_ends_is_their_mean_and_validated_at_each(work: Path) -> None:
    """6 cycle ends folded into the average; cycle_peaks.csv holds its validation beside each peak."""
    run_dir = work / "runs" / "whole"
    averaged = torch.load(next((run_dir / "checkpoints").glob(f"step-{MAX_STEPS:08d}*")) / "shared.pt")["averaged"]
    assert averaged["n_averaged"] == 6
    snapshots = sorted((run_dir / "checkpoints").glob("step-*-cycle-*"))
    assert len(snapshots) == 6
    models = [torch.load(p / "shared.pt", weights_only=True)["model"] for p in snapshots]
    weight = "fc.weight"
    mean = torch.stack([m[weight] for m in models]).mean(0)
    assert torch.allclose(averaged[f"module.{weight}"], mean, atol=1e-6)
    with (run_dir / "cycle_peaks.csv").open() as f:
        header = f.readline().strip().split(",")
    assert header[-3:] == ["avg_top1", "avg_top5", "avg_val_loss"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    """The uninterrupted run every other run is compared with, in runs/whole."""
    work = tmp_path_factory.mktemp("resume")
    code, err = finish(launch(work, "whole", command(small_demo)))
    assert code == 0, err[-3000:]
    return work


KILL_STEPS = sorted(random.Random(6).sample(range(3, MAX_STEPS - 5), 3))


@pytest.mark.parametrize("kill_at", KILL_STEPS)
def test_sigkill_at_a_random_step_then_resume(work: Path, small_demo: Path, kill_at: int) -> None:
    run_id = f"killed-{kill_at}"
    process = launch(work, run_id, command(small_demo))
    wait_for_step(process, work / "runs" / run_id, kill_at)
    os.killpg(process.pid, signal.SIGKILL)  # every process of the job at once, as a lost node
    process.wait()
    code, err = finish(launch(work, run_id, command(small_demo)))
    assert code == 0, err[-3000:]
    assert_same_run(work / "runs" / run_id, work / "runs" / "whole")


def test_stop_signal_to_one_rank_checkpoints_within_a_step_and_resumes(work: Path, small_demo: Path) -> None:
    process = launch(work, "signalled", command(small_demo))
    run_dir = work / "runs" / "signalled"
    at = wait_for_step(process, run_dir, 23, rank=1)
    os.kill(worker_pid(1, "signalled"), signal.SIGUSR1)
    code, err = finish(process)
    assert code != 0 and "exitcode  : 75" in err  # both workers exit with the requeue code
    assert "clr-dist train: stopped by signal" in err
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.count("-") == 1)[-1]
    stopped_at = int(saved.split("-")[1])
    assert at <= stopped_at <= at + 3  # the step running when the signal came, or the one after
    assert steps_done(run_dir, 0) == steps_done(run_dir, 1) == stopped_at  # both ranks stopped there
    code, err = finish(launch(work, "signalled", command(small_demo)))
    assert code == 0, err[-3000:]
    assert_same_run(run_dir, work / "runs" / "whole")  # no step repeated or skipped


def test_torchrun_restarts_a_dead_worker_from_the_last_checkpoint(work: Path, small_demo: Path) -> None:
    process = launch(work, "restarted", command(small_demo, "--max-restarts=1"))
    wait_for_step(process, work / "runs" / "restarted", 30)
    os.kill(worker_pid(1, "restarted"), signal.SIGKILL)
    code, err = finish(process)
    assert code == 0, err[-3000:]
    assert "resuming from" in err
    assert_same_run(work / "runs" / "restarted", work / "runs" / "whole")
