"""The launch/ scripts, as a user runs them (2 CPU processes each)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO

pytestmark = pytest.mark.slow


def script_env(work: Path, env: dict) -> dict:
    """What a user's shell would hold, plus ``env``: 2 processes, runs under ``work``. A
    CLR_DIST_RUN_ID of the test's own environment is dropped unless ``env`` sets it, so the run
    is named the way the script names it (RUN_ID, torchrun's rendezvous id or the date)."""
    full_env = {**os.environ, "VENV": str(BIN.parent), "NPROC": "2", "CLR_DIST_RUNS_DIR": str(work / "runs")}
    full_env.pop("CLR_DIST_RUN_ID", None)
    return {**full_env, **env}


def run_script(script: str, work: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "launch" / script), *overrides],
        cwd=work,
        env=script_env(work, env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def small_run(data: Path) -> list[str]:
    return [
        f"data.root={data}",
        "data.batch_size=16",
        "model.name=test_resnet",
        "schedule.stepsize=3",
        "schedule.stepsize_epochs=null",
        "trainer.stop_after_cycles=1",
        "trainer.save_checkpoints=false",
        "logger.mode=disabled",
        "logger.progress_bar=false",
    ]


def started(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["resolved"]


def test_single_node(tmp_path: Path, small_demo: Path) -> None:
    result = run_script("single_node.sh", tmp_path, {"CLR_DIST_RUN_ID": "one"}, *small_run(small_demo))
    assert result.returncode == 0, result.stderr[-3000:]
    assert started(tmp_path / "runs" / "one")["world_size"] == 2


def test_multi_node_rendezvous_names_the_run_directory(tmp_path: Path, small_demo: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"NNODES": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RUN_ID": "mn", "MAX_RESTARTS": "0"}
    result = run_script("multi_node.sh", tmp_path, env, *small_run(small_demo))
    assert result.returncode == 0, result.stderr[-3000:]
    assert started(tmp_path / "runs" / "torchrun-mn")["world_size"] == 2  # the same directory on every node


def test_multi_node_says_what_is_missing(tmp_path: Path) -> None:
    result = run_script("multi_node.sh", tmp_path, {"NNODES": "2"})
    assert result.returncode != 0 and "MASTER_ADDR: set MASTER_ADDR to the first node" in result.stderr


def start_script(script: str, work: Path, env: dict, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(REPO / "launch" / script), *overrides],
        cwd=work,
        env=script_env(work, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def long_run(data: Path) -> list[str]:
    """120 steps of 16 images, long enough to be stopped part way; no periodic checkpoint."""
    return [
        f"data.root={data}",
        "data.batch_size=16",
        "data.workers=0",
        "model.name=test_resnet",
        "schedule.stepsize=5",
        "schedule.stepsize_epochs=null",
        "trainer.max_steps=120",
        "trainer.checkpoint_every=null",
        "trainer.snapshot_cycle_ends=false",
        "trainer.record_lr=true",
        "logger.mode=disabled",
        "logger.progress_bar=false",
    ]


def wait_for_rows(path: Path, rows: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not (path.exists() and len(path.read_text().splitlines()) > rows):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path}: fewer than {rows} rows after 240 s"
        time.sleep(0.01)


def worker(**match: str) -> tuple[int, dict[str, str]]:
    """The pid and environment of the clr_dist.train worker whose environment holds ``match``."""
    wanted = {f"{k}={v}".encode() for k, v in match.items()}
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except (OSError, ValueError):
            continue
        if b"clr_dist.train" in cmdline and b"torchrun" not in cmdline and wanted <= environ:
            return int(entry.name), dict(e.decode().split("=", 1) for e in environ if b"=" in e)
    raise AssertionError(f"no worker with {match}")


def steps_logged(run_dir: Path) -> list[int]:
    return [int(row.split(",")[0]) for row in (run_dir / "lr_rank0.csv").read_text().splitlines()[1:]]


def test_a_stop_sent_to_the_script_checkpoints_and_the_printed_command_continues(
    tmp_path: Path, small_demo: Path
) -> None:
    """--standalone gets a new rendezvous id each launch; the script names the run instead, and
    SIGUSR1 sent to the script itself (not to torchrun) reaches the workers."""
    process = start_script("single_node.sh", tmp_path, {}, *long_run(small_demo))
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs").glob("run-*/lr_rank0.csv")):
        assert time.monotonic() < deadline and process.poll() is None, "the run did not start"
        time.sleep(0.05)
    (run_dir,) = (tmp_path / "runs").iterdir()
    wait_for_rows(run_dir / "lr_rank0.csv", 8, process)
    _, environ = worker(CLR_DIST_RUN_ID=run_dir.name, RANK="0")
    assert environ["PYTHONFAULTHANDLER"] == "1" and "NCCL_DEBUG" not in environ
    os.kill(process.pid, signal.SIGUSR1)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 75, err[-3000:]
    stopped_at = int((run_dir / "stopped").read_text())
    assert 8 <= stopped_at < 120 and steps_logged(run_dir) == list(range(stopped_at))
    hint = f"clr_dist: stopped at step {stopped_at} with a checkpoint in {run_dir}; continue with: "
    assert hint in err
    again = err.split(hint)[1].splitlines()[0]
    assert again.startswith(f"RUN_ID={run_dir.name} bash ")

    resumed = subprocess.run(
        ["bash", "-c", again], cwd=tmp_path, env=script_env(tmp_path, {}), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {stopped_at}" in resumed.stderr and "resuming from" in resumed.stderr
    assert steps_logged(run_dir) == list(range(120)) and not (run_dir / "stopped").exists()


def test_a_stop_is_not_restarted_by_torchrun_but_ends_the_job(tmp_path: Path, small_demo: Path) -> None:
    """multi_node.sh lets torchrun restart crashed workers (MAX_RESTARTS=3); a stop signal sent to
    one worker alone must still end the job stopped, not turn into a restarted run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"NNODES": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RUN_ID": "kept", "MAX_RESTARTS": "3"}
    process = start_script("multi_node.sh", tmp_path, env, *long_run(small_demo))
    run_dir = tmp_path / "runs" / "torchrun-kept"
    wait_for_rows(run_dir / "lr_rank0.csv", 8, process)
    os.kill(worker(TORCHELASTIC_RUN_ID="kept", RANK="1")[0], signal.SIGUSR1)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 75, err[-3000:]
    stopped_at = int((run_dir / "stopped").read_text())
    assert stopped_at < 120 and steps_logged(run_dir) == list(range(stopped_at))
    assert "resuming from" not in err  # torchrun did not start the workers again
    assert "continue with: NNODES=1 MASTER_ADDR=127.0.0.1 RUN_ID=kept bash " in err
