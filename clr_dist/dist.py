"""Everything that touches torch.distributed. Each helper also works in a single process.

Collectives are marked "every rank must call": calling them from a subset of ranks deadlocks.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from clr_dist.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


CPU_PROCESSES = 2  # per node when there is no GPU: 2 gloo processes, as on the 2-core CI machine


def resolve_device(preference: str, local_rank: int) -> torch.device:
    """``auto`` picks CUDA (one GPU per local rank) when there is one, else the CPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu")
        if local_rank >= (gpus := torch.cuda.device_count()):
            raise ConfigError(
                f"local rank {local_rank} has no GPU of its own: {gpus} visible on this node, so start at most "
                f"{gpus} process(es) per node (torchrun --nproc_per_node={gpus}), or train on the CPU with "
                "trainer.device=cpu"
            )
        return torch.device("cuda", local_rank)
    return torch.device(preference)


def processes_per_node(requested: int | None, gpus: int, device: str = "auto") -> int:
    """How many processes to start on a node with ``gpus`` visible GPUs: one per GPU, or
    ``requested`` of them (never more than the GPUs); on the CPU (no GPU, or ``device="cpu"``),
    ``requested`` or ``CPU_PROCESSES``. What ``make demo`` and the launch scripts start."""
    if requested is not None and requested < 1:
        raise ConfigError(f"{requested} processes per node asked for; ask for at least 1")
    if device == "cpu" or (device == "auto" and gpus == 0):
        return requested or CPU_PROCESSES
    if gpus == 0:
        raise ConfigError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu")
    if requested is not None and requested > gpus:
        raise ConfigError(
            f"{requested} processes per node asked for but {gpus} GPU(s) visible: each process needs a GPU of its "
            f"own; ask for at most {gpus}, or train on the CPU with trainer.device=cpu"
        )
    return requested or gpus


def local_info(device_preference: str = "auto") -> DistInfo:
    """This process's rank, world size and device, from the environment torchrun (or srun) set
    up; rank 0 of 1 without it. No communication: safe before the process group forms."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(device_preference, local_rank)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def init(info: DistInfo) -> None:
    """Join the process group of ``info``'s world: nccl on CUDA, gloo on the CPU. Waits for
    every rank (the rendezvous). Nothing to do for a single process. Every rank must call."""
    if info.device.type == "cuda":
        torch.cuda.set_device(info.device)
    if info.world_size > 1 and not dist.is_initialized():
        if info.is_main and _restarts_across_nodes_share_the_agent_store():
            print(
                "clr_dist: warning: torchrun restarts workers on several nodes through its agents' store: "
                "after a restart they can hang in the rendezvous; export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                "before torchrun (launch/*.sh and slurm/*.sbatch do)",
                file=sys.stderr,
                flush=True,
            )
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=timedelta(minutes=30),
            device_id=info.device if info.device.type == "cuda" else None,
            **_restart_store(info.rank, info.world_size),
        )


def _restarts_across_nodes_share_the_agent_store() -> bool:
    """torchrun on several nodes, with restarts allowed, handing its workers the agents' store.
    The nodes' restart counts then differ (torchrun counts a failure, not the membership change
    the other nodes restart for), and so do the store prefixes of ``_restart_store``."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1
        and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    )


def _restart_store(rank: int, world_size: int) -> dict:
    """After ``torchrun --max-restarts`` restarts the workers, they meet in the store of the
    agent again, which still holds the addresses the dead workers published: gloo then tries to
    connect to them and fails. Each attempt gets keys of its own (the restart count as prefix).
    Empty (the environment's defaults) outside an elastic restart."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=timedelta(minutes=5),
    )
    return {"store": dist.PrefixStore(f"clr_dist/attempt_{attempt}", store), "rank": rank, "world_size": world_size}


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int) -> None:
    """Seed Python, NumPy and torch; ranks get different streams (different augmentations)."""
    seed = seed + 1000 * rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, and return it. Every rank must call."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all ranks, in place, and return it. Every rank must call."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)  # gloo has no AVG
        tensor /= dist.get_world_size()
    return tensor


class StopFlag:
    """SIGUSR1 or SIGTERM on any rank stops every rank at the same step.

    Each ``check()`` (every rank, every step) sums the ranks' flags and returns the sum made at
    the previous step: on CUDA the reduction and the copy of its one number to the host are
    queued behind the step's work, and the host waits for them only a step later, so the loop
    never waits on the step it has just queued. Every rank reads the same sum at the same step,
    so all stop together, one step after the signal.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.received: int | None = None
        self.pending: tuple[torch.cuda.Event | None, torch.Tensor] | None = None
        # Where the sum lands on the host: pinned, so the copy can be queued without a wait.
        self.host = torch.zeros(1, dtype=torch.int64, pin_memory=True) if device.type == "cuda" else None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum

    def check(self) -> bool:
        """True on every rank once any rank has received a signal. Every rank must call."""
        if not dist.is_initialized():
            return self.received is not None
        agreed = False
        if self.pending is not None:
            done, host = self.pending
            if done is not None:
                done.synchronize()
            agreed = bool(host.item())
        # Filled on the device: torch.tensor([...], device=cuda) would copy from pageable host
        # memory, and such a copy waits for the stream, a host sync every step.
        flag = torch.full((1,), int(self.received is not None), dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM, async_op=True).wait()  # CUDA: orders streams only
        if self.host is not None:  # read at the previous call, so free to overwrite
            self.host.copy_(flag, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self.pending = (done, self.host)
        else:
            self.pending = (None, flag)
        return agreed

    def close(self) -> None:
        """Put the previous signal handlers back."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def all_gather_object(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order. Every rank must call."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank. Every rank must call."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank. Every rank must call."""
    if dist.is_initialized():
        dist.barrier()


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP around ``model`` when there is more than one rank; the model itself otherwise."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
