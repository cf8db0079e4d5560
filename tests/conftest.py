"""Shared fixtures: a small demo dataset, and configs composed exactly as `clr-dist train` does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from clr_dist import config
from clr_dist.data.datasets import make_demo_dataset

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Nothing in the tests may reach W&B's servers, and one thread per process keeps two
# torchrun workers from fighting over the two cores of CI.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo set at a tenth of its size: 10 classes, 24 train and 7 val images each."""
    root = tmp_path_factory.mktemp("data") / "demo-small"
    make_demo_dataset(root, train_per_class=24, val_per_class=7)
    return root


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo set as `make demo` uses it."""
    root = tmp_path_factory.mktemp("data") / "demo"
    make_demo_dataset(root)
    return root


def compose_train(overrides: list[str]) -> config.TrainConfig:
    """conf/train.yaml with ``overrides``, as the typed TrainConfig the Trainer takes."""
    config.register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return config.to_object(cfg)


def quick_overrides(data_root: Path, *extra: str) -> list[str]:
    """A run that finishes in seconds: no W&B, no progress bar, one loader worker."""
    return [f"data.root={data_root}", "logger.mode=disabled", "logger.progress_bar=false",
            "data.workers=0", "data.batch_size=16", "trainer.seed=0", "trainer.save_checkpoints=false", *extra]


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``clr-dist ARGS`` (or any console script of the venv) as a user would."""
    full_env = {**os.environ, "CLR_DIST_RUNS_DIR": str(cwd / "runs"), **(env or {})}
    exe = args[0] if "/" in args[0] else str(BIN / args[0])
    return subprocess.run([exe, *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A one-node SLURM cluster (tests/slurm_cluster.py); the environment for its commands."""
    from tests import slurm_cluster

    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    env, processes = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield env
    slurm_cluster.stop(processes)
