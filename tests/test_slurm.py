"""slurm/train.sbatch on a real one-node SLURM cluster started by the test suite."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, wandb_history

pytestmark = pytest.mark.slow

VENV = BIN.parent


def sbatch(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "VENV": str(VENV), "NPROC_PER_NODE": "2", "CLR_DIST_RUNS_DIR": str(work / "runs")}
    full_env.pop("CLR_DIST_RUN_ID", None)
    return subprocess.run(
        ["sbatch", "--parsable", f"--chdir={work}", "--cpus-per-task=2", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def sbatch_and_wait(work: Path, env: dict, *args: str) -> tuple[str, str]:
    """Submit, wait for the job to end, and return its id and final "JobState=... ExitCode=..."
    from scontrol. Polled every 0.2 s: `sbatch --wait` polls at growing intervals, and a job
    of 15 s took 42 s to be seen ending."""
    result = sbatch(work, env, *args)
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip().splitlines()[0]
    full_env = {**os.environ, **env}
    while True:
        shown = subprocess.run(["scontrol", "show", "job", job], env=full_env, capture_output=True, text=True).stdout
        state = shown.split("JobState=")[1].split()[0]
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return job, f"JobState={state} ExitCode={shown.split(' ExitCode=')[1].split()[0]}"
        time.sleep(0.2)


def overrides(data: Path, *extra: str) -> list[str]:
    return [
        f"data.root={data}",
        "data.batch_size=16",
        "data.workers=0",
        "schedule.stepsize=5",
        "schedule.stepsize_epochs=null",
        "trainer.checkpoint_every=4",
        "trainer.record_lr=true",
        "logger.progress_bar=false",
        *extra,
    ]


def test_sbatch_trains_on_two_processes_and_finishes(tmp_path: Path, small_demo: Path, slurm_cluster: dict) -> None:
    job, ended = sbatch_and_wait(
        tmp_path,
        slurm_cluster,
        str(REPO / "slurm" / "train.sbatch"),
        *overrides(small_demo, "model.name=test_resnet", "trainer.stop_after_cycles=2", "logger.mode=disabled"),
    )
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert ended == "JobState=COMPLETED ExitCode=0:0", log[-3000:]
    assert f"clr_dist: job {job} (restart 0) on 1 node(s) x 2, 2 CPU(s) per node" in log
    assert f"rendezvous on localhost:{10000 + int(job) % 20000}," in log  # a port of its own per job
    run = tmp_path / "runs" / f"slurm-{job}"
    assert [line.split(",")[1] for line in (run / "cycle_peaks.csv").read_text().splitlines()[1:]] == ["10", "20"]
    assert '"world_size": 2' in (run / "metrics.jsonl").read_text().splitlines()[0]


def squeue_state(job: str, env: dict) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%T"], env={**os.environ, **env}, capture_output=True, text=True
    ).stdout.strip()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"after {seconds} s: {what}"
        time.sleep(0.2)


def start_requeued_job_soon(job: str, env: dict) -> None:
    """Let a requeued (PENDING) job start in two seconds instead of SLURM's delay. Not `now`:
    slurmd refuses a job whose credential dates from the second its previous run was revoked in
    ("Killing non-startable batch job: Job credential revoked"), and the job would end unrun."""
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+2"], env={**os.environ, **env}, check=True)


def test_the_time_limit_signal_checkpoints_and_the_script_requeues(
    tmp_path: Path, small_demo: Path, slurm_cluster: dict
) -> None:
    """What --signal=TERM@120 does before the time limit, sent now with scancel: the torchrun
    agents pass SIGTERM to the workers, which stop together and save a checkpoint, here one that
    takes 32 s, longer than torchrun's own 30 s shutdown timeout; the script finds the run in
    the directory hydra.run.dir names, sees it stopped and requeues the job, which continues to
    the end."""
    env = {**os.environ, **slurm_cluster}
    run = tmp_path / "elsewhere" / "my-run"
    job = sbatch(
        tmp_path,
        {**slurm_cluster, "MODULE": "tests.slow_stop_train", "PYTHONPATH": str(REPO)},
        str(REPO / "slurm" / "train.sbatch"),
        *overrides(
            small_demo,
            "model.name=resnet18",
            "trainer.max_steps=30",
            "trainer.checkpoint_every=100",
            "logger.mode=disabled",
            f"hydra.run.dir={run}",
        ),
    ).stdout.strip()
    lr_log = run / "lr_rank0.csv"
    wait_for(lambda: lr_log.exists() and len(lr_log.read_text().splitlines()) > 8, 300, "no training")
    signalled = time.monotonic()
    subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)  # to the job's steps only
    wait_for(lambda: squeue_state(job, slurm_cluster) == "PENDING", 150, "the job was not requeued")
    assert time.monotonic() - signalled > 32  # the slow checkpoint was waited for
    stopped_at = int((run / "stopped").read_text())
    (saved,) = (run / "checkpoints").glob(f"step-{stopped_at:08d}*")  # not a periodic one: every 100 steps
    assert (saved / "shared.pt").exists()
    start_requeued_job_soon(job, slurm_cluster)
    wait_for(lambda: not squeue_state(job, slurm_cluster), 400, "the requeued job did not finish")
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert f"clr_dist: stopped at step {stopped_at} with a checkpoint; requeueing job {job}" in log
    assert f"resuming from {saved} at step {stopped_at}" in log
    assert [int(row.split(",")[0]) for row in lr_log.read_text().splitlines()[1:]] == list(range(30))
    assert not (run / "stopped").exists()


def test_sigusr1_to_the_batch_script_stops_the_run_with_a_checkpoint(
    tmp_path: Path, small_demo: Path, slurm_cluster: dict
) -> None:
    """`scancel --batch --signal=USR1`: only the batch shell gets the signal; it passes it to the
    step, whose torchrun passes it to the workers, and the job is requeued."""
    env = {**os.environ, **slurm_cluster}
    job = sbatch(
        tmp_path,
        slurm_cluster,
        str(REPO / "slurm" / "train.sbatch"),
        *overrides(small_demo, "model.name=test_resnet", "trainer.max_steps=2000", "logger.mode=disabled"),
    ).stdout.strip()
    run = tmp_path / "runs" / f"slurm-{job}"
    lr_log = run / "lr_rank0.csv"
    wait_for(lambda: lr_log.exists() and len(lr_log.read_text().splitlines()) > 8, 300, "no training")
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=env, check=True)
    wait_for(lambda: squeue_state(job, slurm_cluster) == "PENDING", 120, "the job was not requeued")
    subprocess.run(["scancel", job], env=env, check=True)
    stopped_at = int((run / "stopped").read_text())
    assert 8 <= stopped_at < 2000
    assert list((run / "checkpoints").glob(f"step-{stopped_at:08d}*/shared.pt"))
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "stopped by signal 10" in log  # SIGUSR1 reached the workers
    assert f"clr_dist: stopped at step {stopped_at} with a checkpoint; requeueing job {job}" in log


def test_a_requeued_job_resumes_in_the_same_run_directory_and_wandb_run(
    tmp_path: Path, small_demo: Path, slurm_cluster: dict
) -> None:
    env = {**os.environ, **slurm_cluster}
    result = sbatch(
        tmp_path,
        slurm_cluster,
        str(REPO / "slurm" / "train.sbatch"),
        *overrides(small_demo, "model.name=resnet18", "trainer.max_steps=36", "logger.mode=offline"),
    )
    job = result.stdout.strip().splitlines()[0]
    run = tmp_path / "runs" / f"slurm-{job}"
    lr_log = run / "lr_rank0.csv"
    deadline = time.monotonic() + 300
    while not (lr_log.exists() and len(lr_log.read_text().splitlines()) > 14):  # past the checkpoint at 12
        assert time.monotonic() < deadline and squeue_state(job, slurm_cluster), "the job did not get going"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job], env=env, check=True)
    deadline = time.monotonic() + 120
    while squeue_state(job, slurm_cluster) != "PENDING":  # requeued jobs wait before they start again
        assert time.monotonic() < deadline, squeue_state(job, slurm_cluster)
        time.sleep(0.5)
    start_requeued_job_soon(job, slurm_cluster)
    deadline = time.monotonic() + 400
    while squeue_state(job, slurm_cluster):
        assert time.monotonic() < deadline, "the requeued job did not finish"
        time.sleep(1)

    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert f"clr_dist: job {job} (restart 1)" in log
    assert f"clr-dist: resuming from {run / 'checkpoints'}" in log
    steps = [int(row.split(",")[0]) for row in lr_log.read_text().splitlines()[1:]]
    assert steps == list(range(36))  # no step lost or repeated across the requeue
    run_id = (run / "wandb_run_id").read_text().strip()
    segments = sorted((run / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(f"-{run_id}") for s in segments)  # one W&B run, twice
    steps = [row["_step"] for segment in segments for row in wandb_history(segment) if "train/loss" in row]
    assert steps == sorted(set(steps)) and steps[-1] == 36  # forward only, nothing logged twice


def test_a_two_job_multirun_through_the_submitit_launcher(
    tmp_path: Path, small_demo: Path, slurm_cluster: dict
) -> None:
    result = subprocess.run(
        [
            str(BIN / "clr-dist"),
            "train",
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10",
            "schedule.max_lr=0.02,0.04",
            "model.name=test_resnet",
            *overrides(
                small_demo, "trainer.stop_after_cycles=1", "trainer.save_checkpoints=false", "logger.mode=disabled"
            ),
        ],
        cwd=tmp_path,
        env={**os.environ, **slurm_cluster, "CLR_DIST_RUNS_DIR": str(tmp_path / "runs"), "CLR_DIST_RUN_ID": "sweep"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = tmp_path / "runs" / "multirun-sweep"
    # One SLURM job array, one task a combination, each with its log and its result.
    assert len(list((sweep / ".submitit").glob("*_*/*_0_result.pkl"))) == 2
    for job, max_lr in (("0", "0.02"), ("1", "0.04")):
        assert f"max_lr: {max_lr}" in (sweep / job / ".hydra" / "config.yaml").read_text()
        peaks = (sweep / job / "cycle_peaks.csv").read_text().splitlines()
        assert len(peaks) == 2 and peaks[1].startswith("1,10,")  # one cycle, validated at its end


def test_range_test_sbatch_writes_its_suggestion(tmp_path: Path, small_demo: Path, slurm_cluster: dict) -> None:
    job, ended = sbatch_and_wait(
        tmp_path,
        slurm_cluster,
        str(REPO / "slurm" / "range_test.sbatch"),
        f"data.root={small_demo}",
        "data.batch_size=16",
        "model.name=test_resnet",
        "range_test.steps=30",
        "range_test.epochs=null",
        "range_test.eval_every=3",
        "logger.mode=disabled",
        "logger.progress_bar=false",
    )
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert ended == "JobState=COMPLETED ExitCode=0:0", log[-3000:]
    written = json.loads((tmp_path / "runs" / f"slurm-{job}" / "range_test.json").read_text())
    assert written["settings"]["world_size"] == 2 and len(written["curve"]["loss"]) in range(2, 31)


def test_clr_dist_sbatch_asks_for_the_cpus_the_node_runs_on(
    tmp_path: Path, small_demo: Path, slurm_cluster: dict
) -> None:
    """No GPUs here: the default request is the 2 CPU processes' CPUs, and --cpus-per-task sets it."""
    env = {**os.environ, **slurm_cluster, "VENV": str(VENV), "CLR_DIST_RUNS_DIR": str(tmp_path / "runs")}
    for flags, cpus in (([], 2), (["--cpus-per-task", "1"], 1)):
        result = subprocess.run(
            [
                str(BIN / "clr-dist"),
                "sbatch",
                *flags,
                "--hold",
                f"--chdir={tmp_path}",
                "--script",
                str(REPO / "slurm" / "train.sbatch"),
                *overrides(small_demo),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"sbatch --nodes=1 --ntasks-per-node=1 --cpus-per-task={cpus} --hold ")
        job = result.stdout.split("Submitted batch job ")[1].split()[0]
        shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
        subprocess.run(["scancel", job], env=env, check=True)
        assert f"NumCPUs={cpus} " in shown and f"CPUs/Task={cpus} " in shown and "NumTasks=1 " in shown
