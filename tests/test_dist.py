"""The single-process behaviour of dist.py (the multi-process one is in test_torchrun.py)."""

from __future__ import annotations

import re

import pytest
import torch

from clr_dist import dist
from clr_dist.errors import ConfigError


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


@pytest.mark.parametrize(
    ("requested", "gpus", "device", "expected"),
    [
        (None, 0, "auto", 2),  # no GPU: 2 gloo processes
        (4, 0, "auto", 4),
        (None, 1, "auto", 1),  # one per GPU, never two processes on one GPU
        (None, 8, "auto", 8),
        (2, 8, "auto", 2),
        (8, 8, "cuda", 8),
        (None, 8, "cpu", 2),  # the CPU asked for on a GPU machine
        (3, 8, "cpu", 3),
    ],
)
def test_processes_per_node(requested: int | None, gpus: int, device: str, expected: int) -> None:
    assert dist.processes_per_node(requested, gpus, device) == expected


@pytest.mark.parametrize(
    ("requested", "gpus", "device", "message"),
    [
        (2, 1, "auto", "2 processes per node asked for but 1 GPU(s) visible"),
        (9, 8, "cuda", "9 processes per node asked for but 8 GPU(s) visible"),
        (0, 8, "auto", "ask for at least 1"),
        (None, 0, "cuda", "no CUDA device is visible"),
    ],
)
def test_too_many_processes_is_one_line_naming_both_numbers(
    requested: int | None, gpus: int, device: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        dist.processes_per_node(requested, gpus, device)
    assert "\n" not in str(error.value)


def test_a_local_rank_beyond_the_gpus_is_one_line_not_a_cuda_error(monkeypatch) -> None:
    """torchrun --nproc_per_node=2 on a one-GPU machine: rank 1 is told before it touches CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: what the driver would say
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert dist.resolve_device("auto", 0) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"local rank 1 has no GPU of its own: 1 visible"):
        dist.resolve_device("auto", 1)


@pytest.mark.parametrize(
    ("agent_store", "nodes", "max_restarts", "warned"),
    [("True", "2", "3", True), ("False", "2", "3", False), ("True", "1", "3", False), ("True", "2", "0", False)],
)
def test_restarts_across_nodes_through_the_agent_store_are_flagged(
    monkeypatch: pytest.MonkeyPatch, agent_store: str, nodes: str, max_restarts: str, warned: bool
) -> None:
    """The case tests/test_multinode.py saw hang: several nodes, restarts allowed, the workers
    on torchrun's agent store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE unset)."""
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", agent_store)
    monkeypatch.setenv("GROUP_WORLD_SIZE", nodes)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", max_restarts)
    assert dist._restarts_across_nodes_share_the_agent_store() is warned
