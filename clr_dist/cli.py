"""``clr-dist``: one command, with subcommands; Hydra overrides follow each subcommand's flags.

    clr-dist train [overrides]                            train (what torchrun and sbatch run)
    clr-dist data make-demo OUT                           write the embedded demo dataset
"""

from __future__ import annotations

import argparse
import sys

from clr_dist.errors import UsageError


def _train(overrides: list[str]) -> None:
    from clr_dist import train

    # @hydra.main reads sys.argv: hand it the overrides as if train.py had been run directly.
    sys.argv = ["clr-dist train", *overrides]
    train.main()


def _make_demo(args: argparse.Namespace) -> None:
    from clr_dist.data.datasets import make_demo_dataset

    summary = make_demo_dataset(
        args.out, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
        image_size=args.image_size, seed=args.seed,
    )
    print(f"demo dataset at {args.out}: {len(summary.classes)} classes, "
          f"{summary.train_count} train and {summary.val_count} val images")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clr-dist", description="Distributed image-classifier training with cyclical learning rates."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "train", help="train a model; Hydra overrides follow (e.g. model=googlenet schedule.max_lr=0.026)",
        add_help=False,
    )
    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True, metavar="TOOL")
    demo = data.add_parser("make-demo", help="write the embedded demo dataset (ImageNet folder layout)")
    demo.add_argument("out", help="output directory (reused if it already holds the same demo set)")
    demo.add_argument("--train-per-class", type=int, default=200, help="training images per class (default 200)")
    demo.add_argument("--val-per-class", type=int, default=50, help="validation images per class (default 50)")
    demo.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    demo.set_defaults(run=_make_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        # Everything after `train` belongs to Hydra (including --help, --cfg job, -m).
        _train(argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UsageError as exc:
        print(f"clr-dist {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
