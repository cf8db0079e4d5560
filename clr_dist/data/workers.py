"""How many CPUs one rank decodes with: DALI threads, or PyTorch DataLoader worker processes.

``data.workers`` is an explicit number, used as given, or ``auto``: the CPUs this rank has. Ranks
on one node share its CPUs, so auto divides what the process may use by the ranks torchrun
started on the node (``LOCAL_WORLD_SIZE``); a fixed number such as DALI's example's 4 threads
is too few on a 224-thread, 8-GPU node and too many on a CI runner with two cores.
"""

from __future__ import annotations

import os

AUTO = "auto"


def cpus_per_rank() -> int:
    """The CPUs this process may run on (its affinity, which SLURM's CPU binding, cgroups and
    taskset narrow), at most SLURM's ``SLURM_CPUS_PER_TASK`` when that is set (a SLURM without
    CPU binding leaves the affinity at the whole node), shared by the ``LOCAL_WORLD_SIZE``
    ranks on this node; at least 1.

    slurm/train.sbatch runs one task per node, and torchrun starts every rank of the node in it,
    so the task's CPUs are the node's share for all of them."""
    cpus = len(os.sched_getaffinity(0))
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm_cpus:
        cpus = min(cpus, int(slurm_cpus))
    ranks_on_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cpus // ranks_on_node)


def dali_threads(workers: int | str) -> int:
    """DALI's ``num_threads``: under auto, the rank's CPUs; else ``data.workers``, at least 1
    (a pipeline needs one thread; 0 is how the torchvision loader says "no workers").

    The threads share the training process, whose own thread mostly waits: for the GPU, or, when
    decoding is the bottleneck, for these threads."""
    return cpus_per_rank() if workers == AUTO else max(1, int(workers))


def dataloader_workers(workers: int | str) -> int:
    """The DataLoader's ``num_workers``: under auto, one fewer than the rank's CPUs; else
    ``data.workers``.

    Worker processes run beside the training process, which keeps a CPU for itself; a rank
    with a single CPU gets 0, loading in the training process, where a worker process would only
    add the copy of every batch between processes."""
    return cpus_per_rank() - 1 if workers == AUTO else int(workers)


def loader_workers(name: str, loader: str, workers: int | str) -> int:
    """What one rank decodes with, as the run's plan reports it: DALI threads, DataLoader worker
    processes, or 0 for synthetic data (nothing to decode)."""
    if name == "synthetic":
        return 0
    return dali_threads(workers) if loader == "dali" else dataloader_workers(workers)
