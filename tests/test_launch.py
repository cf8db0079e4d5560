"""The launch/ scripts, as a user runs them (2 CPU processes each)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO

pytestmark = pytest.mark.slow


def run_script(script: str, work: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "VENV": str(BIN.parent), "NPROC": "2", "CLR_DIST_RUNS_DIR": str(work / "runs"), **env}
    if "RUN_ID" in env:  # the run directory must come from torchrun's rendezvous id alone
        full_env.pop("CLR_DIST_RUN_ID", None)
    return subprocess.run(
        ["bash", str(REPO / "launch" / script), *overrides],
        cwd=work,
        env=full_env,
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
