"""``clr-dist``: one command, with subcommands; Hydra overrides follow each subcommand's flags.

    clr-dist train [overrides]                            train (what torchrun and sbatch run)
    clr-dist schedule [--csv F] [--png F] [overrides]     tabulate and plot the configured schedule
    clr-dist range-test [overrides]                       sweep the LR, suggest base_lr and max_lr
    clr-dist data make-demo OUT                           write the embedded demo dataset
    clr-dist data fashion-mnist OUT                       convert Debian's Fashion-MNIST to the same layout
    clr-dist data cifar10 OUT --source ARCHIVE            convert CIFAR-10's binary archive to the same layout
    clr-dist data check ROOT [--out DIR]                  decode every image, report problems, clean lists
    clr-dist data imagenet ROOT                           the official ImageNet archives to the same layout
    clr-dist compare RUN_DIR... [--baseline RUN_DIR]      runs side by side: Table 1 and Figure 1 of the paper
    clr-dist interpolate A B [--alphas ...]               loss and accuracy between two cycle-end solutions
    clr-dist ensemble RUN_DIR [--last K]                  cycle ends alone, as a softmax ensemble, averaged
    clr-dist nproc [--requested N] [overrides]            processes to start per node (what the launchers use)
    clr-dist run-dir [overrides]                          the run directory train would use, here and now
    clr-dist sbatch [--nodes N] [--gpus-per-node G]       submit slurm/train.sbatch with CPUs for the GPUs

Each command imports its modules when it runs, so that ``clr-dist data check`` or ``--help`` does
not wait for torch, timm and DALI to load.

Hydra's shell completion completes the overrides of train and range-test:
``eval "$(clr-dist train -sc install=bash)"`` (see ``_shell_completion``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from clr_dist.errors import UsageError, reported_as_one_line

# The commands whose arguments are Hydra's own (overrides, --cfg job, -m, --help, -sc).
HYDRA_COMMANDS = ("train", "range-test")
SHELL_COMPLETION_FLAGS = ("-sc", "--shell-completion")


def _train(overrides: list[str]) -> None:
    from clr_dist import train

    # @hydra.main reads sys.argv: hand it the overrides as if train.py had been run directly.
    sys.argv = ["clr-dist train", *overrides]
    train.main()


def _range_test(overrides: list[str]) -> None:
    from clr_dist import range_test

    sys.argv = ["clr-dist range-test", *overrides]
    range_test.main()


def _compose_first(hydra_args: list[str]) -> None:
    """Compose the config of a plain run before Hydra does, so that a config that does not
    compose (a mistyped key, a value outside its choices, a missing group option) stops with one
    line naming the key, the value and what is valid, and exit status 2, not Hydra's report of
    several lines. What Hydra composes otherwise or not at all (--multirun's sweeps, --help,
    --info, another config) is left to Hydra, which reports its own errors."""
    from hydra._internal.utils import get_args_parser  # the parser @hydra.main uses (hydra-core is pinned)

    from clr_dist import config

    if "--version" in hydra_args:
        return
    parser = get_args_parser()
    parser.exit_on_error = False  # a bad flag: Hydra says so itself
    try:
        args, unknown = parser.parse_known_args(hydra_args)
    except argparse.ArgumentError:
        return
    elsewhere = (args.help, args.hydra_help, args.info, args.multirun, args.config_path, args.config_name)
    if unknown or any(elsewhere) or args.config_dir or args.experimental_rerun:
        return
    config.compose_unresolved(args.overrides)


def _shell_completion(hydra_args: list[str]) -> None:
    """Hydra's shell completion (``-sc install=bash``, ``-sc query=bash``) of the overrides of
    train and range-test.

    The script that ``install`` prints registers for ``clr-dist`` and, on Tab, runs
    ``clr-dist -sc query=bash`` with the line typed so far in COMP_LINE. Hydra reads that line
    as a program and its overrides, so the subcommand is taken out of it here; a line without a
    subcommand yet completes the subcommand's name, and the other subcommands are left to the
    shell's file-name completion. Both commands compose conf/train.yaml, so one Hydra app that
    loads only the config (not torch: Tab answers at once) serves them."""
    import hydra

    from clr_dist import config

    line = os.environ.get("COMP_LINE")
    query = next((arg.removeprefix("query=") for arg in hydra_args if arg.startswith("query=")), None)
    if query is not None and line is not None:
        words, typing_a_word = line.split(), not line[-1:].isspace()
        if len(words) < 2 or (len(words) == 2 and typing_a_word):
            print(("\n" if query == "fish" else " ").join(_command_names()))
            return
        if words[1] not in HYDRA_COMMANDS:
            return
        os.environ["COMP_LINE"] = " ".join(["clr-dist", *words[2:]]) + ("" if typing_a_word else " ")
    config.register()
    # Hydra's script registers for the base name of argv[0] and runs it back.
    sys.argv = ["clr-dist", *hydra_args]
    hydra.main(config_path=config.CONF_DIR, config_name="train", version_base="1.3")(_completion_only)()


def _completion_only(cfg: Any) -> None:
    """The task of the completion app, never run: Hydra answers ``-sc`` and returns."""


def _command_names() -> list[str]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(commands.choices)


def _schedule(args: argparse.Namespace) -> None:
    from clr_dist.data.datasets import check_image_folder
    from clr_dist.schedules.plot import schedule_command

    if not (args.csv or args.png):
        raise UsageError("nothing to write: give --csv FILE and/or --png FILE")
    from clr_dist.config import compose

    cfg = compose(args.overrides)
    steps_per_epoch = args.steps_per_epoch
    if steps_per_epoch is None and Path(cfg.data.root).is_dir():
        # As the trainer counts it: full global batches per epoch, then micro-batches per step.
        images = check_image_folder(cfg.data.root).train_count
        steps_per_epoch = images // cfg.data.batch_size // cfg.trainer.grad_accum_steps
    schedule_command(cfg.schedule, steps_per_epoch, cfg.trainer.max_steps, args.csv, args.png)
    for path in (args.csv, args.png):
        if path:
            print(f"wrote {path}")


def _make_demo(args: argparse.Namespace) -> None:
    from clr_dist.data.datasets import make_demo_dataset

    summary = make_demo_dataset(
        args.out,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(
        f"demo dataset at {args.out}: {len(summary.classes)} classes, "
        f"{summary.train_count} train and {summary.val_count} val images"
    )


def _fashion_mnist(args: argparse.Namespace) -> None:
    from clr_dist.data.fashion_mnist import convert_fashion_mnist

    summary = convert_fashion_mnist(args.out, source=args.source, limit_per_class=args.limit_per_class)
    print(
        f"Fashion-MNIST at {args.out}: {len(summary.classes)} classes, "
        f"{summary.train_count} train and {summary.val_count} val images"
    )


def _cifar10(args: argparse.Namespace) -> None:
    from clr_dist.data.cifar10 import convert_cifar10

    summary = convert_cifar10(args.out, source=args.source, limit_per_class=args.limit_per_class)
    print(
        f"CIFAR-10 at {args.out}: {len(summary.classes)} classes, "
        f"{summary.train_count} train and {summary.val_count} val images"
    )


def _check(args: argparse.Namespace) -> None:
    from clr_dist.data.check import check_dataset, format_summary

    out = args.out or f"{Path(args.root).resolve().name}-check"
    report = check_dataset(args.root, out, workers=args.workers)  # progress lines go to stderr
    print(format_summary(report))
    if not report.ok:
        sys.exit(1)  # problems found; 2 stays "could not run"


def _imagenet(args: argparse.Namespace) -> None:
    from clr_dist.data.imagenet import prepare_imagenet

    result = prepare_imagenet(args.root, train=args.train, val=args.val, devkit=args.devkit)  # progress: stderr
    print(result.describe())
    if not args.no_check:  # as `clr-dist data check ROOT`: the summary, exit status 1 on problems
        _check(argparse.Namespace(root=args.root, out=args.check_out, workers=args.workers))


def _compare(args: argparse.Namespace) -> None:
    from clr_dist.compare import compare_command

    compare_command(args.runs, args.baseline, args.out, args.md, args.png, args.wandb)


def _cycle_ends(args: argparse.Namespace) -> None:
    from clr_dist import cycle_ends, dist

    try:
        {"interpolate": cycle_ends.interpolate_command, "ensemble": cycle_ends.ensemble_command}[args.command](args)
    finally:
        dist.close()


def _nproc(args: argparse.Namespace) -> None:
    import torch

    from clr_dist import dist

    # The one setting that decides it; no preset sets it, so the overrides are enough.
    devices = [o.split("=", 1)[1] for o in args.overrides if o.lstrip("+").startswith("trainer.device=")]
    print(dist.processes_per_node(args.requested, torch.cuda.device_count(), (devices or ["auto"])[-1]))


def _sbatch(args: argparse.Namespace) -> None:
    import shlex
    import subprocess

    from clr_dist import cluster

    command = cluster.sbatch_command(
        args.nodes,
        args.gpus_per_node,
        args.cpus_per_gpu,
        args.cpus_per_task,
        cluster.find_script(args.script),
        args.sbatch_options,
        args.overrides,
    )
    print(shlex.join(command), flush=True)
    if not args.print_only:
        sys.exit(subprocess.run(command).returncode)


def _run_dir(args: argparse.Namespace) -> None:
    from clr_dist import config

    print(config.run_dir(args.overrides))


def _add_cycle_end_parsers(commands: argparse._SubParsersAction) -> None:
    overrides_help = "Hydra overrides on top of the run's own (e.g. data.root=/data/imagenet)"
    line = commands.add_parser(
        "interpolate",
        help="loss and accuracy along alpha * A + (1 - alpha) * B, between two cycle-end solutions",
        description="Evaluate the weights alpha * A + (1 - alpha) * B for each alpha (Smith & Topin 2017): "
        "train loss on a fixed subset, validation loss, top-1 and top-5; CSV, JSON and PNG. "
        "Under torchrun: torchrun --nproc_per_node=N -m clr_dist.cli interpolate A B.",
    )
    line.add_argument("a", metavar="A", help="weights: RUN_DIR/checkpoints/step-N-cycle-K or RUN_DIR/snapshots/*.pt")
    line.add_argument("b", metavar="B", help="weights of the same model")
    line.add_argument("--alphas", default="-0.5:1.5:21", help="START:STOP:COUNT or a,b,c (default: -0.5:1.5:21)")
    line.add_argument("--train-images", type=int, default=2000, help="training images for the train loss (2000)")
    line.add_argument("--val-images", type=int, help="validation images (default: all)")
    line.add_argument(
        "--bn-images", type=int, default=2000, help="training images to recompute batch norm on (2000; 0: as saved)"
    )
    line.add_argument("--out", help="output folder (default: A's RUN_DIR/interpolate-<A>-<B>)")
    line.add_argument("overrides", nargs="*", help=overrides_help)
    line.set_defaults(run=_cycle_ends)
    ens = commands.add_parser(
        "ensemble",
        help="cycle-end snapshots alone, as a softmax ensemble and as averaged weights",
        description="Validate chosen cycle-end snapshots, the ensemble of their softmax (Huang et al. 2017) "
        "and their averaged weights (Izmailov et al. 2018, batch norm recomputed); a table and "
        "ensemble.json. Under torchrun: torchrun --nproc_per_node=N -m clr_dist.cli ensemble RUN_DIR.",
    )
    ens.add_argument("run_dir", metavar="RUN_DIR")
    choice = ens.add_mutually_exclusive_group()
    choice.add_argument("--last", type=int, metavar="K", help="the last K cycle ends (default: all)")
    choice.add_argument("--cycles", metavar="LIST", help="these cycles, e.g. 2,3,4")
    ens.add_argument(
        "--bn-images", type=int, default=2000, help="training images to recompute the average's batch norm on (2000)"
    )
    ens.add_argument("--out", help="folder for ensemble.json (default: RUN_DIR)")
    ens.add_argument("overrides", nargs="*", help=overrides_help)
    ens.set_defaults(run=_cycle_ends)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clr-dist", description="Distributed image-classifier training with cyclical learning rates."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "train",
        help="train a model; Hydra overrides follow (e.g. model=googlenet schedule.max_lr=0.026)",
        add_help=False,
    )
    commands.add_parser(
        "range-test",
        help="LR range test: sweep the LR upwards, suggest base_lr and max_lr; Hydra overrides follow",
        add_help=False,
    )
    schedule = commands.add_parser(
        "schedule",
        help="write the configured LR schedule, one row per step, and plot it",
        description="Tabulate (step,lr,momentum,cycle) and plot the schedule that `clr-dist train` "
        "would use with the same overrides, for trainer.max_steps steps.",
    )
    schedule.add_argument("--csv", metavar="FILE", help="write step,lr,momentum,cycle rows here")
    schedule.add_argument("--png", metavar="FILE", help="plot LR (and momentum) over steps, cycle ends marked")
    schedule.add_argument(
        "--steps-per-epoch",
        type=int,
        metavar="N",
        help="optimizer steps per epoch, for schedule.stepsize_epochs (default: counted from data.root)",
    )
    schedule.add_argument("overrides", nargs="*", help="Hydra overrides, as for `clr-dist train`")
    schedule.set_defaults(run=_schedule)
    nproc = commands.add_parser(
        "nproc",
        help="print how many processes to start on this node: one per visible GPU, or 2 on the CPU",
        description="The process count `make demo`, launch/*.sh and slurm/*.sbatch give torchrun: one per "
        "visible GPU, or --requested of them (more than the GPUs is an error naming both numbers); on a "
        "machine without GPUs, or with trainer.device=cpu among the overrides, --requested or 2.",
    )
    nproc.add_argument("--requested", type=int, metavar="N", help="this many (the launchers' NPROC)")
    nproc.add_argument("overrides", nargs="*", help="the run's Hydra overrides (only trainer.device is read)")
    nproc.set_defaults(run=_nproc)
    sbatch = commands.add_parser(
        "sbatch",
        help="submit slurm/train.sbatch asking for CPUs in proportion to the GPUs (8 per GPU; 2 without GPUs)",
        description="Submit slurm/train.sbatch: --nodes nodes, one task on each holding its --gpus-per-node GPUs "
        "and --cpus-per-gpu CPUs per GPU (or --cpus-per-task, or 2 on nodes without GPUs) for torchrun, its "
        "workers and their DALI threads. Other sbatch options go through as --option=value (--partition=gpu "
        "--time=24:00:00); the overrides go to the run. Prints the sbatch command it runs.",
    )
    sbatch.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    sbatch.add_argument("--gpus-per-node", type=int, default=0, metavar="G", help="GPUs per node (default 0)")
    sbatch.add_argument("--cpus-per-gpu", type=int, metavar="C", help="CPUs per GPU (default 8)")
    sbatch.add_argument(
        "--cpus-per-task", type=int, metavar="T", help="CPUs per node instead (default: G x C, or 2 without GPUs)"
    )
    sbatch.add_argument("--script", metavar="FILE", help="the sbatch script (default slurm/train.sbatch)")
    sbatch.add_argument("--print-only", action="store_true", help="print the sbatch command, do not run it")
    sbatch.add_argument("overrides", nargs="*", help="Hydra overrides for the run")
    sbatch.set_defaults(run=_sbatch, sbatch_options=[])
    run_dir = commands.add_parser(
        "run-dir",
        help="print the run directory `clr-dist train` would use with these overrides, here and now",
        description="The run directory of `clr-dist train` with the same overrides and environment "
        "(hydra.run.dir, by default $CLR_DIST_RUNS_DIR/<run id> with the id from CLR_DIST_RUN_ID, SLURM's job "
        "and array task ids, or torchrun's rendezvous id): where the launch scripts and slurm/train.sbatch "
        "look for the `stopped` marker of a run stopped by a signal.",
    )
    run_dir.add_argument("overrides", nargs="*", help="the run's Hydra overrides")
    run_dir.set_defaults(run=_run_dir)
    data = commands.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True, metavar="TOOL"
    )
    demo = data.add_parser("make-demo", help="write the embedded demo dataset (ImageNet folder layout)")
    demo.add_argument("out", help="output directory (reused if it already holds the same demo set)")
    demo.add_argument("--train-per-class", type=int, default=200, help="training images per class (default 200)")
    demo.add_argument("--val-per-class", type=int, default=50, help="validation images per class (default 50)")
    demo.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    demo.set_defaults(run=_make_demo)
    fmnist = data.add_parser(
        "fashion-mnist", help="convert Debian's Fashion-MNIST (60k/10k) to the ImageNet folder layout"
    )
    fmnist.add_argument("out", help="output directory (reused if it already holds the same conversion)")
    fmnist.add_argument(
        "--limit-per-class", type=int, metavar="N", help="first N images per class and split (default: all)"
    )
    fmnist.add_argument(
        "--source",
        default="/usr/share/datasets/fashion-mnist",
        metavar="DIR",
        help="folder with the IDX files (default: where apt-get install dataset-fashion-mnist puts them)",
    )
    fmnist.set_defaults(run=_fashion_mnist)
    cifar = data.add_parser(
        "cifar10",
        help="convert CIFAR-10's binary archive (50k/10k) to the ImageNet folder layout as 32x32 PNGs",
        description="Convert CIFAR-10 from its binary version, the file cifar-10-binary.tar.gz on the "
        "CIFAR-10 page of the University of Toronto (https://www.cs.toronto.edu/~kriz/cifar.html), "
        "into OUT/train/<class>/*.png and OUT/val/<class>/*.png (val: the test batch). Nothing is "
        "downloaded; the archive is read without extracting it, and the pickled Python version is refused.",
    )
    cifar.add_argument("out", help="output directory (reused if it already holds the same conversion)")
    cifar.add_argument(
        "--source",
        required=True,
        metavar="ARCHIVE",
        help="cifar-10-binary.tar.gz, the binary version from the CIFAR-10 page of the University of Toronto "
        "(https://www.cs.toronto.edu/~kriz/cifar.html)",
    )
    cifar.add_argument(
        "--limit-per-class", type=int, metavar="N", help="first N images per class and split (default: all)"
    )
    cifar.set_defaults(run=_cifar10)
    check = data.add_parser("check", help="decode every image; report problems and write clean file lists")
    check.add_argument("root", help="dataset root holding train/<class>/* and val/<class>/*")
    check.add_argument(
        "--out", metavar="DIR", help="where report.json, train.txt, val.txt go (default: ./<root name>-check)"
    )
    check.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: all usable cores)")
    check.set_defaults(run=_check)
    imagenet = data.add_parser(
        "imagenet",
        help="turn ImageNet's official archives into ROOT/train/<wnid>/ and ROOT/val/<wnid>/, then check it",
        description="Extract ILSVRC2012_img_train.tar (one tar per class) and ILSVRC2012_img_val.tar (flat; "
        "each image put in its class by the ground truth of ILSVRC2012_devkit_t12.tar.gz) into ROOT/train/<wnid>/ "
        "and ROOT/val/<wnid>/, then run `clr-dist data check` on ROOT. Resumable: a rerun skips the classes and "
        "images already in place. Nothing is downloaded.",
    )
    imagenet.add_argument("root", help="where train/ and val/ go; the archives are looked for here unless given")
    imagenet.add_argument(
        "--train", metavar="FILE", help="ILSVRC2012_img_train.tar (default: ROOT/ILSVRC2012_img_train.tar)"
    )
    imagenet.add_argument("--val", metavar="FILE", help="ILSVRC2012_img_val.tar (default: ROOT/ILSVRC2012_img_val.tar)")
    imagenet.add_argument(
        "--devkit", metavar="FILE", help="ILSVRC2012_devkit_t12.tar.gz (default: ROOT/ILSVRC2012_devkit_t12.tar.gz)"
    )
    imagenet.add_argument("--no-check", action="store_true", help="skip decoding every image afterwards")
    imagenet.add_argument(
        "--check-out",
        metavar="DIR",
        help="where the check writes report.json and file lists (default: ./<root name>-check)",
    )
    imagenet.add_argument(
        "--workers", type=int, metavar="N", help="decoding processes of the check (default: all cores)"
    )
    imagenet.set_defaults(run=_imagenet)
    compare = commands.add_parser(
        "compare",
        help="compare finished runs: top-1 against iteration (the paper's Figure 1) and a table in the shape "
        "of its Table 1",
        description="Read each run's metrics.jsonl, group seeds of one configuration (runs whose "
        ".hydra/config.yaml are equal except trainer.seed, logger.run_name and paths into the run's own "
        "directory), plot top-1 against iteration and tabulate, per group, the final and best top-1 and "
        "the iterations needed to first reach the baseline's final top-1. Writes compare.json, compare.csv, "
        "compare.md and compare.png and prints the table.",
    )
    compare.add_argument(
        "runs",
        nargs="*",
        metavar="RUN_DIR",
        help="a run directory (holding metrics.jsonl), or a folder of them such as a Hydra multirun folder "
        "runs/multirun-<id>",
    )
    compare.add_argument(
        "--baseline",
        metavar="RUN_DIR",
        help="the run (or folder of seeds of one configuration) whose final top-1 the others must reach; "
        "compared too, whether or not it is among RUN_DIR (default: the group of the first RUN_DIR)",
    )
    compare.add_argument(
        "--out", default="compare", metavar="DIR", help="folder for compare.json/.csv/.md/.png (default: ./compare)"
    )
    compare.add_argument("--md", metavar="FILE", help="write the Markdown table here instead of DIR/compare.md")
    compare.add_argument("--png", metavar="FILE", help="write the figure here instead of DIR/compare.png")
    compare.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and the figure to one W&B run (job_type compare, in DIR; mode from "
        "WANDB_MODE, default offline)",
    )
    compare.set_defaults(run=_compare)
    _add_cycle_end_parsers(commands)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The arguments of every command but train and range-test, whose arguments are Hydra's.

    Overrides may come before, between and after the flags: argparse fills the ``overrides``
    positional with the first run of them only (`schedule schedule=exp_range --csv F
    schedule.gamma=0.999` leaves the gamma over), so whatever it leaves over that is not a flag
    joins them, in the order given."""
    parser = build_parser()
    # argparse reads `--alphas -0.5:1.5:21` as a flag without its value: join the two.
    for i, arg in enumerate(argv[:-1]):
        if arg == "--alphas":
            argv = [*argv[:i], f"--alphas={argv[i + 1]}", *argv[i + 2 :]]
            break
    args, extra = parser.parse_known_args(argv)
    flags = [e for e in extra if e.startswith("-")]
    if args.command == "sbatch":  # the flags it does not know are sbatch's own
        from clr_dist.cluster import OWN_FLAGS

        if own := [f for f in flags if f.split("=", 1)[0] in OWN_FLAGS]:
            parser.error(
                f"{own[0]}: give it as clr-dist sbatch's own flag (--nodes, --gpus-per-node, --cpus-per-gpu, --cpus-per-task)"
            )
        args.sbatch_options, flags = flags, []
        extra = [e for e in extra if not e.startswith("-")]
        if bare := [e for e in extra + args.overrides if "=" not in e and not e.startswith("~")]:
            parser.error(
                f"{bare[0]!r} is neither an override nor an sbatch option: give sbatch options as --option=value"
            )
    if flags or (extra and not isinstance(getattr(args, "overrides", None), list)):
        parser.error(f"unrecognized arguments: {' '.join(flags or extra)}")
    if extra:
        args.overrides += extra
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command in SHELL_COMPLETION_FLAGS:
        _shell_completion(argv)  # what the installed completion script runs
        return
    if command in HYDRA_COMMANDS:
        # Everything after the command belongs to Hydra (including --help, --cfg job, -m, -sc).
        if any(arg in SHELL_COMPLETION_FLAGS for arg in rest):
            _shell_completion(rest)
            return
        with reported_as_one_line(command):
            _compose_first(rest)
        {"train": _train, "range-test": _range_test}[command](rest)
        return
    args = parse_args(argv)
    with reported_as_one_line(args.command):
        args.run(args)


if __name__ == "__main__":
    main()
