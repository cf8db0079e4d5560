"""Trainer vs a bare PyTorch loop: training-step throughput on the CPU, side by side in one process.

    .venv/bin/python bench/trainer_overhead.py --steps 30 --repeats 3 [--json out.json] [OVERRIDE ...]
    .venv/bin/python bench/trainer_overhead.py --smoke    # seconds: checks that it runs, numbers mean nothing
    .venv/bin/python bench/trainer_overhead.py trainer.compile=default   # both sides compiled

Both sides get the same composed config (``experiment=demo`` by default), the same model built by
``clr_dist.models.build_model`` from the same seed, the same data object (a Trainer's ``data``:
ImageFolder, transforms, sampler and DataLoader workers), the same batch, SGD settings, LR values
and number of steps, and the same ``torch.set_num_threads``.

What the trainer's number measures: ``Trainer.fit()`` itself, on a fresh Trainer, not a loop of
``train_step`` calls written here. The cost a user pays for the trainer is the whole body of
``fit()``'s loop -- the schedule lookup and ``set_lr``, the GradScaler and accumulation wrapping in
``train_step``, the step counters, the loss reduction and ``.item()`` every ``logger.log_every``
steps, the reporter (``metrics.jsonl`` line, console writer), the cycle-end check and the timers --
and a hand-written ``train_step`` loop would leave most of that out. Two probes read the clock
without changing the work: one in the batch stream, when the first timed step takes its batch,
and one when ``fit()`` first calls ``evaluate()``, which with no cycle end in the run and
``trainer.eval_every=null`` is the final validation after the loop. Nothing is subtracted.

Included in both timings: steps ``warmup+1 .. steps`` (data loading from the already-running
workers, forward, loss, backward, SGD step, LR setting, one ``.item()`` every ``log_every`` steps
and at the last step). Excluded from both: Trainer construction and model building, ``fit()``'s
start-up (reporter start, environment probe, DataLoader worker start), the warm-up steps, and
validation. The schedule's stepsize is set to ``steps`` so no cycle ends (and nothing validates)
inside the run.

Runs alternate in ABBA order (trainer, bare, bare, trainer, ...) so slow drift of a shared machine
hits both sides equally; the table shows the median over repeats with the min and max. The same
clock reads also give every step's duration; the last column is images/s at the lower-quartile
step of all runs of a side, a reading little moved by another job taking the CPU for part of the
runs (see the comment in ``main``). The
1-minute load average after each run is printed so that such runs can be seen.

``--smoke`` runs the same measurement with small numbers (batch 8, 3 steps of which 1 untimed,
1 repeat, one thread, a demo set of 8 training and 2 validation images a class), which
tests/test_bench.py runs so that a change in ``Trainer.fit()`` (an attribute the probes replace,
say) breaks a test rather than the next measurement; any flag given with it still wins. Its
report starts with a line saying it is a smoke run, and a ``--json`` record has ``"smoke": true``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clr_dist import config as clr_config  # noqa: E402
from clr_dist import dist  # noqa: E402
from clr_dist.config import TrainConfig  # noqa: E402
from clr_dist.data.datasets import make_demo_dataset  # noqa: E402
from clr_dist.models import build_model, training_loss  # noqa: E402
from clr_dist.trainer import Trainer  # noqa: E402

# --smoke: the defaults it replaces (see the module docstring).
SMOKE = {"batch_size": 8, "steps": 3, "warmup": 1, "threads": 1, "repeats": 1, "demo_per_class": 8}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="alexnet", help="any timm name (default: alexnet)")
    parser.add_argument("--batch-size", type=int, default=None, help="data.batch_size (default: the preset's, 64)")
    parser.add_argument("--steps", type=int, default=40, help="trainer.max_steps: steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=5, help="first steps of each run left out of the timing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (median reported)")
    parser.add_argument(
        "--data-root", default=None, help="an ImageNet-layout folder (default: a fresh demo set in a temp dir)"
    )
    parser.add_argument(
        "--demo-per-class",
        type=int,
        default=200,
        help="training images a class of the generated demo set (a quarter of that for validation)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, to check that the script runs")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. logger.log_every=10")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    if not 0 < args.warmup < args.steps:
        parser.error(f"--warmup={args.warmup} must be at least 1 and below --steps={args.steps}")
    return args


def compose_config(args: argparse.Namespace, data_root: str) -> TrainConfig:
    overrides = [
        "experiment=demo",
        "logger.mode=disabled",
        "logger.progress_bar=false",
        f"data.root={data_root}",
        "data.make_if_missing=false",
        f"model.name={args.model}",
        "trainer.device=cpu",
        "trainer.precision=fp32",
        f"trainer.max_steps={args.steps}",
        "trainer.stop_after_cycles=null",
        "trainer.eval_every=null",
        "trainer.save_checkpoints=false",  # fit() would save at its end, outside the timed loop
        # Half a cycle as long as the run: no cycle ends, so fit() validates only after its loop.
        "schedule.stepsize_epochs=null",
        f"schedule.stepsize={args.steps}",
    ]
    if args.batch_size is not None:
        overrides.append(f"data.batch_size={args.batch_size}")
    cfg = clr_config.compose(overrides + list(args.overrides))
    s = cfg.schedule
    if (s.policy, s.shape, s.step_ratio, s.warmup_steps, s.momentum_cycle) != (
        "triangular",
        "triangular",
        0.5,
        0,
        False,
    ):
        sys.exit(
            "trainer_overhead: the bare loop implements the plain triangular policy only "
            "(schedule.policy=triangular, default shape/step_ratio, no warmup or momentum cycling)"
        )
    if cfg.trainer.grad_accum_steps != 1:
        sys.exit("trainer_overhead: the bare loop takes one batch per step; use trainer.grad_accum_steps=1")
    return cfg


def triangular_lr(step: int, base_lr: float, max_lr: float, stepsize: int) -> float:
    """Smith (2015) §3.1 in closed form, as a user writing the loop by hand would."""
    cycle = 1 + step // (2 * stepsize)
    x = abs(step / stepsize - 2 * cycle + 1)
    return base_lr + (max_lr - base_lr) * max(0.0, 1.0 - x)


def step_seconds(stamps: list[float], warmup: int) -> list[float]:
    """Durations of the timed steps from the clock read as each batch arrived, plus the end."""
    timed = stamps[warmup:]
    return [b - a for a, b in zip(timed, timed[1:])]


def time_trainer(cfg: TrainConfig, run_dir: Path, warmup: int) -> list[float]:
    """Seconds of each of steps warmup+1..max_steps of ``Trainer.fit()`` (see the module docstring)."""
    trainer = Trainer(cfg, run_dir)
    stamps: list[float] = []
    batches_of = trainer.train_batches
    evaluate = trainer.evaluate

    def probed_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches_of():
            stamps.append(time.perf_counter())
            yield batch

    def probed_evaluate(*args, **kwargs) -> dict[str, float]:
        if len(stamps) == cfg.trainer.max_steps:  # the first call: the loop has just ended
            stamps.append(time.perf_counter())
        return evaluate(*args, **kwargs)

    trainer.train_batches = probed_batches  # instance attributes: fit() looks them up on self
    trainer.evaluate = probed_evaluate
    try:
        trainer.fit()
    finally:
        trainer.close()
    if trainer.step != cfg.trainer.max_steps:
        raise RuntimeError(f"fit() stopped at step {trainer.step}, expected {cfg.trainer.max_steps}")
    return step_seconds(stamps, warmup)


def time_bare(cfg: TrainConfig, run_dir: Path, warmup: int) -> list[float]:
    """Seconds of each of steps warmup+1..max_steps of a hand-written loop on a Trainer's data object."""
    # A Trainer is built only for its ``data`` (the identical data path); seeding and model
    # building then repeat what Trainer.__init__ does, so the weights match its model's.
    donor = Trainer(cfg, run_dir)
    data = donor.data
    dist.seed_everything(cfg.trainer.seed, 0)
    model = build_model(cfg.model.name, len(data.classes), dict(cfg.model.kwargs))
    if not all(torch.equal(a, b) for a, b in zip(model.parameters(), donor.model.parameters())):
        raise RuntimeError("the bare model's initial weights differ from the trainer's: seeding is not the same")
    lrs = [
        triangular_lr(step, cfg.schedule.base_lr, cfg.schedule.max_lr, cfg.schedule.stepsize)
        for step in range(cfg.trainer.max_steps)
    ]
    if any(abs(lr - donor.schedule.lr(step)) > 1e-12 for step, lr in enumerate(lrs)):
        raise RuntimeError("the bare loop's closed-form LRs differ from the trainer's schedule")
    s, o = cfg.schedule, cfg.optimizer
    optimizer = torch.optim.SGD(model.parameters(), lr=s.base_lr, momentum=o.momentum, weight_decay=o.weight_decay)
    # The trainer's groups carry each layer's LR multiplier (Caffe's lr_mult); all 1 here.
    settings = [
        {k: v for k, v in group.items() if k not in ("params", "lr", "lr_mult")}
        for group in (optimizer.param_groups[0], donor.optimizer.param_groups[0])
    ]
    plain = len(donor.optimizer.param_groups) == 1 and donor.optimizer.param_groups[0].get("lr_mult", 1.0) == 1.0
    if type(donor.optimizer) is not torch.optim.SGD or settings[0] != settings[1] or not plain:
        raise RuntimeError(
            f"the trainer's optimizer ({type(donor.optimizer).__name__} {settings[1]}) is not "
            f"the bare loop's SGD {settings[0]}; use optimizer=sgd with the default momentum style"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # its console writer's closing table
        donor.close()
    del donor
    gc.collect()

    model.train()
    # trainer.compile among the overrides compiles both sides (the warm-up steps absorb it).
    forward = model if cfg.trainer.compile == "off" else torch.compile(model, mode=cfg.trainer.compile)
    steps, log_every = cfg.trainer.max_steps, cfg.logger.log_every
    loss_sum = torch.zeros(())
    step, epoch, steps_since_log, stamps = 0, 0, 0, []
    while step < steps:
        for images, targets in data.train_epoch(epoch):
            stamps.append(time.perf_counter())
            lr = triangular_lr(step, s.base_lr, s.max_lr, s.stepsize)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, _ = training_loss(forward(images), targets, cfg.model.aux_loss_weight)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            step += 1
            steps_since_log += 1
            if step % log_every == 0 or step == steps:
                (loss_sum / steps_since_log).item()  # the one host sync, as in the trainer
                loss_sum.zero_()
                steps_since_log = 0
            if step == steps:
                break
        epoch += 1
    stamps.append(time.perf_counter())
    return step_seconds(stamps, warmup)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(rates: list[float]) -> dict[str, float]:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="clr_bench_") as tmp:
        tmp_dir = Path(tmp)
        if args.data_root is None:
            data_root = str(tmp_dir / "demo")
            print(f"making the demo set in {data_root} ...", flush=True)
            make_demo_dataset(
                data_root,
                train_per_class=args.demo_per_class,
                val_per_class=max(1, args.demo_per_class // 4),
                image_size=64,
            )
        else:
            data_root = args.data_root
        cfg = compose_config(args, data_root)
        s = cfg.schedule
        timed_steps = cfg.trainer.max_steps - args.warmup
        images = timed_steps * cfg.data.batch_size
        print(
            f"model={cfg.model.name} batch={cfg.data.batch_size} steps={cfg.trainer.max_steps} "
            f"(first {args.warmup} untimed) threads={torch.get_num_threads()} workers={cfg.data.workers} "
            f"log_every={cfg.logger.log_every} lr=triangular {s.base_lr}->{s.max_lr} stepsize={s.stepsize}",
            flush=True,
        )

        seconds: dict[str, list[float]] = {"trainer": [], "bare": []}
        loads: dict[str, list[float]] = {"trainer": [], "bare": []}
        step_times: dict[str, list[float]] = {"trainer": [], "bare": []}
        for repeat in range(args.repeats):
            order = ("trainer", "bare") if repeat % 2 == 0 else ("bare", "trainer")
            for side in order:
                run_dir = tmp_dir / f"run_{side}_{repeat}"
                timer = time_trainer if side == "trainer" else time_bare
                steps_taken = timer(cfg, run_dir, args.warmup)
                elapsed = sum(steps_taken)
                seconds[side].append(elapsed)
                step_times[side].extend(steps_taken)
                # The machine may be shared: the 1-minute load average after each run shows it.
                loads[side].append(round(os.getloadavg()[0], 2))
                print(
                    f"  repeat {repeat + 1}/{args.repeats} {side:>7}: {elapsed:7.2f} s  "
                    f"{images / elapsed:8.1f} images/s  (load average {loads[side][-1]:.2f})",
                    flush=True,
                )
                gc.collect()

    rates = {side: summary([images / t for t in ts]) for side, ts in seconds.items()}
    ratio = rates["trainer"]["median"] / rates["bare"]["median"]
    # A second reading, steadier when other jobs take the CPU for part of the runs (a step then
    # takes several times as long, so durations split in two groups): the lower quartile of every
    # timed step's duration over all runs of a side, as images/s. Like timeit's advice to read
    # the minimum, it estimates the cost without interference, for both sides alike.
    step_rates = {side: cfg.data.batch_size / statistics.quantiles(ts, n=4)[0] for side, ts in step_times.items()}
    step_ratio = step_rates["trainer"] / step_rates["bare"]
    print()
    if args.smoke:
        print("# smoke run (--smoke): tiny data and a few steps; the numbers mean nothing")
    print(f"{'loop':<10}{'images/s: median run':>22}{'min':>9}{'max':>9}{'quartile step':>15}")
    for side in ("trainer", "bare"):
        r = rates[side]
        print(f"{side:<10}{r['median']:>22.1f}{r['min']:>9.1f}{r['max']:>9.1f}{step_rates[side]:>15.1f}")
    print(f"{'ratio trainer/bare':<18}{ratio:>14.3f}{'':>18}{step_ratio:>15.3f}")
    print(
        f"timed: {timed_steps} steps x {cfg.data.batch_size} images per run, {args.repeats} runs per side; "
        "includes data loading, forward/backward/SGD step, LR setting, logging syncs; "
        "excludes construction, fit() start-up, warm-up steps, validation"
    )

    if args.json is not None:
        record = {
            "benchmark": "trainer_overhead",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": {
                "cpu_model": cpu_model(),
                "cores": os.cpu_count(),
                "arch": platform.machine(),
                "torch_threads": torch.get_num_threads(),
            },
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchvision": __import__("torchvision").__version__,
                "timm": __import__("timm").__version__,
            },
            "settings": {
                "model": cfg.model.name,
                "batch_size": cfg.data.batch_size,
                "steps": cfg.trainer.max_steps,
                "warmup_steps": args.warmup,
                "timed_steps": timed_steps,
                "repeats": args.repeats,
                "log_every": cfg.logger.log_every,
                "workers": cfg.data.workers,
                "data_root": args.data_root or "demo set (temp dir)",
                "overrides": args.overrides,
                "smoke": args.smoke,
            },
            "seconds": seconds,
            "load_average_after_run": loads,
            "step_seconds": step_times,
            "images_per_sec": rates,
            "ratio_trainer_over_bare": ratio,
            "images_per_sec_from_lower_quartile_step": step_rates,
            "ratio_trainer_over_bare_lower_quartile_step": step_ratio,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
