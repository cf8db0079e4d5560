"""The single-process behaviour of dist.py (the multi-process one is in test_torchrun.py)."""

from __future__ import annotations

import torch

from clr_dist import dist


def test_single_process_info(monkeypatch) -> None:
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    info = dist.local_info("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert info.device == torch.device("cpu")
    dist.init(info)  # one process: no group to form
    assert not torch.distributed.is_initialized()


def test_launcher_environment_is_read_without_communicating(monkeypatch) -> None:
    """What torchrun sets for rank 3 of 4 (local rank 1), read before any rendezvous, so the
    config can be checked against the world size before the process group forms."""
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = dist.local_info("cpu")
    assert (info.rank, info.local_rank, info.world_size, info.is_main) == (3, 1, 4, False)
    assert not torch.distributed.is_initialized()


def test_reductions_are_identity_in_one_process() -> None:
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(dist.all_reduce_sum(t.clone()), t)
    assert torch.equal(dist.all_reduce_mean(t.clone()), t)
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.all_gather_object(3) == [3]


def test_ranks_get_different_seeds() -> None:
    dist.seed_everything(0, rank=0)
    a = torch.rand(3)
    dist.seed_everything(0, rank=1)
    b = torch.rand(3)
    dist.seed_everything(0, rank=0)
    assert not torch.equal(a, b) and torch.equal(a, torch.rand(3))
