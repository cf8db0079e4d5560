"""Shared fixtures and helpers: a small demo dataset, configs composed exactly as `clr-dist train`
does, Trainers that are always closed, the paper's closed-form triangular LR, and W&B offline runs
read back from disk."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hydra import compose, initialize_config_dir

from clr_dist import config
from clr_dist.data.datasets import make_demo_dataset

if TYPE_CHECKING:
    from clr_dist.trainer import Trainer

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
    return [
        f"data.root={data_root}",
        "logger.mode=disabled",
        "logger.progress_bar=false",
        "data.workers=0",
        "data.batch_size=16",
        "trainer.seed=0",
        "trainer.save_checkpoints=false",
        *extra,
    ]


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``clr-dist ARGS`` (or any console script of the venv) as a user would."""
    full_env = {**os.environ, "CLR_DIST_RUNS_DIR": str(cwd / "runs"), **(env or {})}
    exe = args[0] if "/" in args[0] else str(BIN / args[0])
    return subprocess.run([exe, *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy of the folder ``src`` (a demo set, say) at ``dst``, for a test to modify; ``dst``."""
    shutil.copytree(src, dst)
    return dst


def closed_form_triangular(step: int, base: float, top: float, stepsize: int) -> float:
    """The CLR paper's triangular LR (Smith 2015, §3.1), written as the paper writes it:
    cycle = floor(1 + it / (2 ss)), x = |it / ss - 2 cycle + 1|, lr = base + (top - base) max(0, 1 - x).
    An oracle independent of clr_dist.schedules (which computes the cycle position differently)."""
    cycle = math.floor(1 + step / (2 * stepsize))
    x = abs(step / stepsize - 2 * cycle + 1)
    return base + (top - base) * max(0.0, 1 - x)


@pytest.fixture
def make_trainer(tmp_path: Path) -> Iterator[Callable[..., Trainer]]:
    """A factory ``make_trainer(data_root, *overrides, run_dir=None)``: a Trainer for
    ``quick_overrides(data_root, *overrides)`` in ``run_dir`` (default ``tmp_path / "run"``).
    Every Trainer it made is closed when the test ends, passed or failed."""
    from clr_dist.trainer import Trainer  # imported when used: collecting the tests stays quick

    made: list[Trainer] = []

    def make(data_root: Path, *overrides: str, run_dir: Path | None = None) -> Trainer:
        trainer = Trainer(
            compose_train(quick_overrides(data_root, *overrides)), tmp_path / "run" if run_dir is None else run_dir
        )
        made.append(trainer)
        return trainer

    yield make
    for trainer in made:
        trainer.close()


def offline_run(run_dir: Path) -> Path:
    """The one ``wandb/offline-run-*`` folder of a run directory (fails if there are none or several)."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one W&B offline run in {run_dir / 'wandb'}, found {[r.name for r in runs]}"
    return runs[0]


def _wandb_inspect(offline_run_dir: Path, *flags: str) -> str:
    return subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", *flags, "--json", str(offline_run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def wandb_history(offline_run_dir: Path) -> list[dict]:
    """The history rows (``run.log`` calls) of one W&B offline run folder, read back from its
    .wandb file with `wandb leet inspect --json`."""
    records = [json.loads(line) for line in _wandb_inspect(offline_run_dir).splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def wandb_summary(offline_run_dir: Path) -> dict:
    """The run summary of one W&B offline run folder (`wandb leet inspect --summary --json`)."""
    return json.loads(_wandb_inspect(offline_run_dir, "--summary"))["summary"]


def wandb_records(offline_run_dir: Path, kind: str) -> list[dict]:
    """The records of one type (``run``: name, group, job type, tags, config; ``environment``:
    W&B's metadata, args included; ``artifact``) of one W&B offline run folder."""
    records = [json.loads(line) for line in _wandb_inspect(offline_run_dir).splitlines() if line.startswith("{")]
    return [r[kind] for r in records if r.get("type") == kind]


def wandb_table(offline_run_dir: Path, key: str) -> tuple[list[str], list[list]]:
    """The columns of the table logged under ``key`` and the rows of every log of it, in order.
    Each log of an INCREMENTAL table (log_mode) holds only the rows added since the last one, so
    these are the table W&B shows; a table logged whole each time would repeat its rows here."""
    columns: list[str] = []
    rows: list[list] = []
    for item in wandb_history(offline_run_dir):
        if f"{key}.path" in item:
            logged = json.loads((offline_run_dir / "files" / item[f"{key}.path"]).read_text())
            columns, rows = logged["columns"], rows + logged["data"]
    return columns, rows


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
