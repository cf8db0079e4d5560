"""What each rank's loaders actually read, written down by a worker of a real torchrun job.

Run by tests/test_multinode.py under two torchrun agents that act as two nodes (through
launch/multi_node.sh with ``MODULE=tests.multinode_probe``), with the same Hydra overrides as
``clr-dist train``. Its one option comes from the environment, because the launcher hands every
argument to ``clr-dist nproc`` as well:

    MULTINODE_PROBE_OUT   folder for ``rank<R>.json`` (required)

Each worker builds a real ``Trainer`` (which joins the gloo process group and builds its loaders
with the DistInfo it derives from torchrun's environment, as ``clr-dist train`` does), draws one
training epoch from ``Trainer.train_batches()``, reads ``data.val_batches()``, and records every
sample it was handed as its label and mean colour, beside its RANK, LOCAL_RANK, GROUP_RANK, its
agent's pid and the test's name for the launch it came from (MULTINODE_TEST_NODE). On a dataset
of solid-colour images, one colour per image, the colour survives random crops, resizing and
flips, so it names the image: the test can check that the two ranks together read every image
exactly once. The worker then builds a second set of loaders through
``clr_dist.data.build_loaders`` with the rank replaced by the local rank (the classic multi-node
bug) and records what those read, so the test can show that its check tells the two apart.

What this exercises: torchrun's c10d rendezvous over two agents, the environment each worker
gets, ``dist.local_info`` / ``dist.init``, ``build_loaders``, the DALI pipeline's sharding on CPU
operators, and ``DaliLoaders.train_epoch`` through ``Trainer.train_batches``. What it does not:
the training loop (``fit``: which batches a step consumes, later epochs), DDP's gradient
reduction, evaluation's reduction and the reporter; the trainer's own two-node run in the test
module covers those, but cannot show which images it trained on. The local-rank variant is made
here by replacing the DistInfo, not by a change to clr_dist, so it shows that the test's check
would catch such a bug in the loader, not that the check would see a bug in how the Trainer
derives its DistInfo (the real run's rank, local rank and node are recorded for that).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from clr_dist import config, dist
from clr_dist.config import DataConfig
from clr_dist.data import build_loaders
from clr_dist.trainer import Trainer


def samples_of(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], data: DataConfig) -> list[list[float]]:
    """``[label, r, g, b]`` for every sample of ``batches``: its label and its mean colour in
    0-255 pixel values (the normalisation undone). A solid-colour image keeps its colour through
    random crops, resizing and flips, so the colour tells which image it was."""
    mean = torch.tensor(data.mean).view(1, 3) * 255
    std = torch.tensor(data.std).view(1, 3) * 255
    samples = []
    for images, targets in batches:
        colours = images.float().mean(dim=(2, 3)) * std + mean  # CHW on the CPU (no channels-last)
        samples += [[int(label), *map(float, colour)] for label, colour in zip(targets.tolist(), colours)]
    return samples


def main(overrides: list[str]) -> None:
    out = Path(os.environ["MULTINODE_PROBE_OUT"])
    cfg = config.compose(overrides)
    trainer = Trainer(cfg, out / "trainer")
    try:
        info = trainer.info
        batches = trainer.train_batches()
        train = samples_of((next(batches) for _ in range(trainer.data.batches_per_epoch)), cfg.data)
        val = samples_of(trainer.data.val_batches(), cfg.data)
        # The bug to catch: shard_id=LOCAL_RANK. Every node's first worker then reads shard 0.
        wrong = build_loaders(cfg.data, dataclasses.replace(info, rank=info.local_rank), cfg.trainer.seed)
        record = {
            "rank": info.rank,
            "local_rank": info.local_rank,
            "world_size": info.world_size,
            "group_rank": int(os.environ["GROUP_RANK"]),
            "node": os.environ.get("MULTINODE_TEST_NODE"),  # set by the test on each launch
            "agent_pid": os.getppid(),
            "train_size": trainer.data.train_size,
            "val_size": trainer.data.val_size,
            "train": train,
            "val": val,
            "local_rank_sharded": {
                "train": samples_of(wrong.train_epoch(0), cfg.data),
                "val": samples_of(wrong.val_batches(), cfg.data),
            },
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{info.rank}.json").write_text(json.dumps(record))
        dist.barrier()  # neither worker leaves the process group while the other still reads
    finally:
        trainer.close()
        dist.close()


if __name__ == "__main__":
    main(sys.argv[1:])
