"""``clr-dist sbatch``: submit slurm/train.sbatch with CPUs requested for the GPUs it asks for.

An sbatch file cannot compute its own request, and ``#SBATCH --cpus-per-gpu`` in it would make
every CPU-only job fail (SLURM refuses it without GPUs, and refuses it beside --cpus-per-task).
So the request is derived here, before sbatch runs: one task per node holding
``--cpus-per-gpu`` (8) CPUs for each GPU of the node, for torchrun, its workers and their DALI
threads; on a node without GPUs, ``--cpus-per-task`` (2, the CPU processes' count).
"""

from __future__ import annotations

from pathlib import Path

from clr_dist.errors import ConfigError

CPUS_PER_GPU = 8  # DALI's ImageNet example decodes with a few threads per GPU; the rest feed the loop
CPU_ONLY_CPUS = 2  # the 2 CPU processes a node without GPUs runs

# Flags this command sets itself: given among the sbatch options too, they would contradict it.
OWN_FLAGS = ("--nodes", "-N", "--gpus-per-node", "--cpus-per-task", "-c", "--cpus-per-gpu", "--ntasks-per-node")


def cpus_per_task(gpus_per_node: int, cpus_per_gpu: int | None, cpus: int | None) -> int:
    """CPUs for the one task of each node: ``cpus`` if given, else ``cpus_per_gpu`` (8) per GPU,
    else ``CPU_ONLY_CPUS`` on a node without GPUs."""
    for name, value in (
        ("--gpus-per-node", gpus_per_node),
        ("--cpus-per-gpu", cpus_per_gpu),
        ("--cpus-per-task", cpus),
    ):
        if value is not None and value < (0 if name == "--gpus-per-node" else 1):
            raise ConfigError(f"{name}={value} is not a valid count; give a whole number of at least 1")
    if cpus is not None:
        return cpus
    if gpus_per_node == 0:
        return CPU_ONLY_CPUS
    return gpus_per_node * (cpus_per_gpu or CPUS_PER_GPU)


def find_script(script: str | None) -> Path:
    """``script``, or slurm/train.sbatch here or in the checkout this package runs from."""
    candidates = (
        [Path(script)] if script else [Path("slurm/train.sbatch"), Path(__file__).parents[1] / "slurm/train.sbatch"]
    )
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"no sbatch script at {' or '.join(str(c) for c in candidates)}; run from the clr_dist checkout or give "
        "--script PATH"
    )


def sbatch_command(
    nodes: int,
    gpus_per_node: int,
    cpus_per_gpu: int | None,
    cpus: int | None,
    script: Path,
    sbatch_options: list[str],
    overrides: list[str],
) -> list[str]:
    """The sbatch command line: ``nodes`` nodes, ``gpus_per_node`` GPUs and ``cpus_per_task()``
    CPUs on each, the user's other ``sbatch_options`` (``--partition=gpu``, ``--time=24:00:00``),
    the script, then the run's Hydra ``overrides``."""
    if nodes < 1:
        raise ConfigError(f"--nodes={nodes} is not a valid count; give a whole number of at least 1")
    for option in sbatch_options:
        if option.split("=", 1)[0] in OWN_FLAGS:
            raise ConfigError(
                f"{option}: give it as this command's own flag (clr-dist sbatch --help), not as an sbatch option"
            )
    command = ["sbatch", f"--nodes={nodes}", "--ntasks-per-node=1"]
    if gpus_per_node:
        command.append(f"--gpus-per-node={gpus_per_node}")
    command.append(f"--cpus-per-task={cpus_per_task(gpus_per_node, cpus_per_gpu, cpus)}")
    return [*command, *sbatch_options, str(script), *overrides]
