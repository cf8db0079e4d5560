"""What the cycles leave behind: the line between two solutions, and ensembles of cycle ends.

    clr-dist interpolate A B [--alphas -0.5:1.5:21] [--train-images N] [--bn-images N] [overrides]
    clr-dist ensemble RUN_DIR [--last K | --cycles 2,3,4] [--bn-images N] [overrides]
    torchrun --nproc_per_node=2 -m clr_dist.cli interpolate A B ...   (or ensemble ...)

``interpolate`` follows Smith & Topin (2017): the weights ``alpha * A + (1 - alpha) * B`` for each
alpha, and their training loss (on a fixed subset of the training images, read without
augmentation), validation loss, top-1 and top-5. A peak in loss between two cycle-end solutions
says they are distinct minima; a dip in validation loss between them says averaging helps.
``ensemble`` puts chosen cycle ends side by side with the ensemble of their softmax (Huang et al.
2017, snapshot ensembles) and with their averaged weights (Izmailov et al. 2018, SWA).

A and B are saved weights: a cycle-end snapshot (``RUN_DIR/checkpoints/step-N-cycle-K``, or
``RUN_DIR/snapshots/step-N-cycle-K.pt`` with ``trainer.snapshot_weights_only``) or any
checkpoint folder. The model and the data are those of the run that saved A (its
``.hydra/overrides.yaml``), with the overrides given here on top (``data.root=`` on another
machine, ``data.batch_size=`` for evaluation). Weights made by a model with batch norm get their
statistics recomputed on ``--bn-images`` training images, pooled over the ranks (0: keep them as
saved, interpolated or averaged like the weights). Each rank evaluates its share of the images;
the results are summed over the ranks once per evaluation.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import re
import sys
from pathlib import Path

import torch
import yaml

from clr_dist import checkpoint, config, dist
from clr_dist.errors import ConfigError, UsageError
from clr_dist.files import atomic_write_text
from clr_dist.redaction import argv_redacted, redact_data
from clr_dist.trainer import Trainer, summarise
from clr_dist.weights import Ensemble, average, check_same_shapes, has_batch_norm, interpolate, recompute_batch_norm

SNAPSHOT = re.compile(r"step-(\d+)-cycle-(\d+)")


def parse_alphas(text: str) -> list[float]:
    """``START:STOP:COUNT`` (COUNT evenly spaced values, both ends included) or ``a,b,c``."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            start, stop, n = float(start), float(stop), int(count)
            alphas = [start + (stop - start) * i / (n - 1) for i in range(n)] if n > 1 else [start] * n
        else:
            alphas = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise UsageError(
            f"--alphas {text!r} is not START:STOP:COUNT (e.g. -0.5:1.5:21) or a list like 0,0.5,1"
        ) from None
    if not alphas:
        raise UsageError(f"--alphas {text!r} is an empty range: give at least one alpha (e.g. -0.5:1.5:21)")
    return alphas


def label(path: Path) -> str:
    """``cycle-3`` for a cycle-end snapshot, else the file or folder name."""
    match = SNAPSHOT.fullmatch(path.name.removesuffix(".pt"))
    return f"cycle-{int(match.group(2))}" if match else path.name.removesuffix(".pt")


def run_dir_of(weights: Path) -> Path:
    """The run directory that saved ``weights`` (RUN_DIR/checkpoints/X or RUN_DIR/snapshots/X.pt)."""
    return weights.resolve().parent.parent


def evaluator(run_dir: Path, overrides: list[str], job: str, out: Path) -> Trainer:
    """A trainer with the model and data of the run in ``run_dir`` (and ``overrides``), used only
    to evaluate: nothing is trained and its reporter is never started. Every rank calls."""
    saved = run_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        run_overrides = yaml.safe_load(saved.read_text()) or []
    else:
        run_overrides = []
        if dist.local_info().is_main:
            print(f"clr-dist: {saved} not found; using the defaults and the overrides given", file=sys.stderr)
    cfg = config.compose([*run_overrides, *overrides])
    return Trainer(cfg, out, job=job)


def load_all(paths: dict[str, Path]) -> dict[str, dict]:
    """The named weights, read before anything expensive starts (one line on a bad path)."""
    return {name: checkpoint.load_weights(path) for name, path in paths.items()}


def check_against(trainer: Trainer, states: dict[str, dict]) -> None:
    """One line naming the first tensor that differs from the configured model's."""
    check_same_shapes({"the model of the run's config": trainer.model.state_dict(), **states})


def _fresh_statistics(trainer: Trainer, bn_images: int) -> None:
    if bn_images > 0 and has_batch_norm(trainer.model):
        recompute_batch_norm(trainer.model, trainer.data.train_subset_batches(bn_images), trainer.info.device)


# --- interpolate -------------------------------------------------------------------------------

COLUMNS = ("alpha", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")


def interpolate_line(
    trainer: Trainer, a: dict, b: dict, alphas: list[float], train_images: int, bn_images: int, val_images: int | None
) -> list[dict]:
    """One row per alpha, the same on every rank. Every rank calls; one reduction per alpha for
    the metrics, and one before it to pool the batch-norm statistics when they are recomputed."""
    rows = []
    for alpha in alphas:
        trainer.model.load_state_dict(interpolate(a, b, alpha))
        _fresh_statistics(trainer, bn_images)
        train_sums, train_count = trainer.evaluation_sums(train_images, split="train")
        val_sums, val_count = trainer.evaluation_sums(val_images)
        sums = dist.all_reduce_sum(torch.cat([train_sums, val_sums]))  # the train half, then val
        train, val = summarise(sums[:4], train_count), summarise(sums[4:], val_count)
        row = {
            "alpha": alpha,
            "train_loss": train["val_loss"],
            "train_top1": train["top1"],
            "val_loss": val["val_loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
        }
        rows.append(row)
        if trainer.info.is_main:
            print(
                f"alpha {alpha:+.3f}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                f"top-1 {row['val_top1']:.2%}",
                flush=True,
            )
    return rows


def loss_scale(rows: list[dict]) -> str:
    """``log`` when the losses span more than 10x (a steep wall outside [0, 1] would flatten the
    rest of the curve on a linear axis), else ``linear``."""
    losses = [r[key] for r in rows for key in ("train_loss", "val_loss")]
    return "log" if min(losses) > 0 and max(losses) > 10 * min(losses) else "linear"


def plot_line(rows: list[dict], names: tuple[str, str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(alphas, [r["train_loss"] for r in rows], "o-", label="train loss (fixed subset)")
    loss_ax.plot(alphas, [r["val_loss"] for r in rows], "s-", label="validation loss")
    acc_ax.plot(alphas, [100 * r["train_top1"] for r in rows], "o-", label="train top-1 (fixed subset)")
    acc_ax.plot(alphas, [100 * r["val_top1"] for r in rows], "s-", label="validation top-1")
    for ax, ylabel in ((loss_ax, "loss"), (acc_ax, "top-1 (%)")):
        for x, name in ((0.0, names[1]), (1.0, names[0])):
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            ax.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8)
        ax.set_xlabel("alpha  (weights = alpha * A + (1 - alpha) * B)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    if loss_scale(rows) == "log":
        loss_ax.set_yscale("log")
        loss_ax.set_ylabel("loss (log scale)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def interpolate_command(args: argparse.Namespace) -> list[dict]:
    a_path, b_path = Path(args.a), Path(args.b)
    alphas = parse_alphas(args.alphas)
    for flag, value in (("--train-images", args.train_images), ("--bn-images", args.bn_images)):
        if value < 0:
            raise UsageError(f"{flag}={value} is negative; give a number of images (0 for none)")
    names = (label(a_path), label(b_path))
    out = Path(args.out) if args.out else run_dir_of(a_path) / f"interpolate-{names[0]}-{names[1]}"
    states = load_all({f"A ({a_path})": a_path, f"B ({b_path})": b_path})
    trainer = evaluator(run_dir_of(a_path), args.overrides, "interpolate", out)
    check_against(trainer, states)
    a, b = states.values()
    if trainer.info.is_main:
        bn = has_batch_norm(trainer.model)
        print(
            f"clr-dist interpolate: {len(alphas)} alphas between A={a_path} and B={b_path}; "
            + (
                f"batch norm recomputed on {args.bn_images} training images"
                if bn and args.bn_images
                else ("batch norm statistics interpolated as saved" if bn else "the model has no batch norm")
            ),
            flush=True,
        )
    rows = interpolate_line(trainer, a, b, alphas, args.train_images, args.bn_images, args.val_images)
    if trainer.info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        meta = {"a": str(a_path), "b": str(b_path), "train_images": args.train_images, "bn_images": args.bn_images}
        atomic_write_text(out / "interpolation.json", json.dumps({**meta, "rows": rows}, indent=1) + "\n")
        atomic_write_text(out / "interpolation.csv", csv_text(rows))
        plot_line(rows, names, out / "interpolation.png")
        if trainer.cfg.logger.mode != "disabled":
            log_to_wandb(trainer, "interpolate", out, meta, rows=rows, png=out / "interpolation.png")
        print(f"wrote {out / 'interpolation.csv'}, .json, .png", flush=True)
    return rows


# --- ensemble ----------------------------------------------------------------------------------


def choose_cycles(run_dir: Path, last: int | None, cycles: list[int] | None) -> dict[int, Path]:
    found = checkpoint.cycle_snapshots(run_dir)
    if not found:
        raise ConfigError(
            f"{run_dir} holds no cycle-end snapshots (checkpoints/step-N-cycle-K or snapshots/*.pt); train "
            f"with trainer.snapshot_cycle_ends=true (and trainer.snapshot_weights_only=true to keep the weights only)"
        )
    have = ", ".join(map(str, found))
    if cycles:
        missing = [c for c in cycles if c not in found]
        if missing:
            raise ConfigError(f"{run_dir} has no snapshot of cycle {missing[0]}; it holds cycles {have}")
        return {c: found[c] for c in cycles}
    k = last if last is not None else len(found)
    if k < 1:
        raise UsageError(f"--last {k}: give at least 1")
    if k > len(found):
        raise ConfigError(f"--last {k} asks for more snapshots than {run_dir} holds: {len(found)} (cycles {have})")
    return dict(list(found.items())[-k:])


def ensemble_rows(trainer: Trainer, states: dict[int, dict], bn_images: int) -> list[dict]:
    """Each snapshot, the ensemble of their softmax, their averaged weights. Every rank calls."""
    rows = []
    members = []
    for cycle, state in states.items():
        trainer.model.load_state_dict(state)
        rows.append({"what": f"cycle {cycle}", **trainer.evaluate()})
        members.append(copy.deepcopy(trainer.model))
    rows.append({"what": f"ensemble of {len(states)} (mean softmax)", **trainer.evaluate(model=Ensemble(members))})
    del members
    averaged = average(trainer.model, list(states.values()))
    trainer.model.load_state_dict(averaged.module.state_dict())
    _fresh_statistics(trainer, bn_images)
    rows.append({"what": f"average of {len(states)} (weights)", **trainer.evaluate()})
    return rows


def format_rows(rows: list[dict]) -> str:
    width = max(len(r["what"]) for r in rows)
    lines = [f"{'':{width}}  {'top-1':>7}  {'top-5':>7}  {'val loss':>8}"]
    lines += [f"{r['what']:{width}}  {r['top1']:7.2%}  {r['top5']:7.2%}  {r['val_loss']:8.4f}" for r in rows]
    return "\n".join(lines)


def ensemble_command(args: argparse.Namespace) -> list[dict]:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder; give a run directory (RUN_DIR with checkpoints/ or snapshots/)")
    cycles = None
    if args.cycles:
        try:
            cycles = [int(c) for c in args.cycles.split(",")]
        except ValueError:
            raise UsageError(f"--cycles {args.cycles!r} is not a list of cycle numbers like 2,3,4") from None
    chosen = choose_cycles(run_dir, args.last, cycles)
    out = Path(args.out) if args.out else run_dir
    states = load_all({f"cycle {c} ({p})": p for c, p in chosen.items()})
    trainer = evaluator(run_dir, args.overrides, "ensemble", out)
    check_against(trainer, states)
    rows = ensemble_rows(trainer, dict(zip(chosen, states.values())), args.bn_images)
    if trainer.info.is_main:
        print(format_rows(rows), flush=True)
        result = {"run_dir": str(run_dir), "cycles": list(chosen), "bn_images": args.bn_images, "rows": rows}
        atomic_write_text(out / "ensemble.json", json.dumps(result, indent=1) + "\n")
        if trainer.cfg.logger.mode != "disabled":
            log_to_wandb(trainer, "ensemble", out, {"cycles": list(chosen)}, rows=rows)
        print(f"wrote {out / 'ensemble.json'}", flush=True)
    return rows


# --- W&B ----------------------------------------------------------------------------------------


def log_to_wandb(trainer: Trainer, job: str, out: Path, meta: dict, rows: list[dict], png: Path | None = None) -> None:
    """One W&B run (job_type ``job``, in ``out``, the run's logger mode) with the rows as a
    table, the figure, and the rows in the summary."""
    import wandb

    cfg = trainer.cfg.logger
    with argv_redacted():  # W&B records the command line
        run = wandb.init(
            project=cfg.project, entity=cfg.entity, job_type=job, mode=cfg.mode, dir=str(out), config=redact_data(meta)
        )
    try:
        columns = list(rows[0])
        logged = {f"{job}/table": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])}
        if png is not None:
            logged[f"{job}/figure"] = wandb.Image(str(png))
        run.log(logged)
        if job == "ensemble":
            run.summary.update({r["what"]: {k: v for k, v in r.items() if k != "what"} for r in rows})
    finally:
        run.finish()
