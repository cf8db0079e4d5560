"""The single-process behaviour of dist.py (the multi-process one is in test_torchrun.py)."""

from __future__ import annotations

import torch

from clr_dist import dist


def test_single_process_info(monkeypatch) -> None:
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    info = dist.init("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert info.device == torch.device("cpu")


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
