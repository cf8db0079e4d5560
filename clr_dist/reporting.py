"""What a run tells the outside world: W&B, ``metrics.jsonl``, ``cycle_peaks.csv``, the console.

Only rank 0 writes. Other ranks get a Reporter with no writers, so the training loop calls the
same methods everywhere and never asks which rank it is on (every rank still takes part in the
metric reductions, which happen before these calls).

Secrets stay on the machine: the config and the environment record (with the command line) are
redacted once, in ``Reporter.start``, before any writer sees them; W&B's own record of the
command line is given the redacted one, and Hydra's copy in ``.hydra/`` is redacted in place
(``clr_dist.redaction`` says what counts as a secret).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import timm
import torch
import torchvision
import yaml
from tqdm import tqdm

from clr_dist.bounds import format_suggestion
from clr_dist.config import LoggerConfig
from clr_dist.dist import DistInfo
from clr_dist.files import atomic_write_text
from clr_dist.plan import RunPlan
from clr_dist.redaction import argv_redacted, redact_argv, redact_data, redact_text


@dataclass(frozen=True)
class CyclePeak:
    """Validation at the end of a cycle, where the paper finds accuracy peaks."""

    cycle: int
    step: int
    lr: float
    top1: float
    top5: float
    val_loss: float
    # trainer.average_cycle_ends: the running average of the cycle ends so far, validated.
    avg_top1: float | None = None
    avg_top5: float | None = None
    avg_val_loss: float | None = None


PEAK_FIELDS = [f.name for f in dataclasses.fields(CyclePeak)]
AVERAGE_FIELDS = ("avg_top1", "avg_top5", "avg_val_loss")


def peak_fields(peaks: list[CyclePeak]) -> list[str]:
    """The columns of a table of ``peaks``: the average's only in a run that keeps one."""
    averaged = any(p.avg_top1 is not None for p in peaks)
    return [f for f in PEAK_FIELDS if averaged or f not in AVERAGE_FIELDS]


def peak_record(peak: CyclePeak) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(peak).items() if k not in AVERAGE_FIELDS or v is not None}


def environment(info: DistInfo) -> dict[str, Any]:
    """Where the run came from: versions, git revision, world size, hardware."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "hydra": hydra.__version__,
    }
    for name, module in (("wandb", "wandb"), ("dali", "nvidia.dali")):
        try:
            versions[name] = __import__(module, fromlist=["__version__"]).__version__
        except ImportError:
            versions[name] = None
    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        revision = head.stdout.strip() if head.returncode == 0 else None
        dirty = (
            bool(
                subprocess.run(
                    ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            )
            if revision
            else None
        )
    except (OSError, subprocess.SubprocessError):
        revision, dirty = None, None
    if info.device.type == "cuda":
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        devices = [platform.processor() or platform.machine()]
    return {
        "versions": versions,
        "git_revision": revision,
        "git_dirty": dirty,
        "world_size": info.world_size,
        "device_type": info.device.type,
        "devices": devices,
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "command": redact_argv(sys.argv),
    }


class Writer:
    """One destination. Every method is optional."""

    def start(self, config: dict[str, Any], env: dict[str, Any], plan: RunPlan, start_step: int) -> None: ...
    def train(self, step: int, metrics: dict[str, float]) -> None: ...
    def peak(self, peak: CyclePeak, peaks: list[CyclePeak]) -> None: ...
    def snapshot(self, peak: CyclePeak, path: Path) -> None: ...
    def evaluation(self, step: int, metrics: dict[str, float]) -> None: ...
    def range_test(self, result: dict[str, Any], png: Path) -> None: ...
    def close(self, peaks: list[CyclePeak]) -> None: ...


class Reporter:
    """Fans each call out to the writers; with no writers (ranks other than 0) it does nothing."""

    def __init__(self, writers: list[Writer]) -> None:
        self.writers = writers
        self.peaks: list[CyclePeak] = []

    def start(self, config: dict[str, Any], env: dict[str, Any], plan: RunPlan, start_step: int = 0) -> None:
        """Open every writer: ``config`` as composed, ``env`` from ``environment()``, the run's
        ``plan``, and the step it starts from (above 0 for a resumed run). ``config`` and
        ``env`` reach the writers with their secrets redacted."""
        if not self.writers:
            return
        config, env = redact_data(config), redact_data(env)
        for w in self.writers:
            w.start(config, env, plan, start_step)

    def train(self, step: int, metrics: dict[str, float]) -> None:
        for w in self.writers:
            w.train(step, metrics)

    def peak(self, peak: CyclePeak) -> None:
        self.peaks.append(peak)
        for w in self.writers:
            w.peak(peak, self.peaks)

    def snapshot(self, peak: CyclePeak, path: Path) -> None:
        """The file saved at ``peak``'s cycle end (weights, or a checkpoint's ``shared.pt``)."""
        for w in self.writers:
            w.snapshot(peak, path)

    def evaluation(self, step: int, metrics: dict[str, float]) -> None:
        for w in self.writers:
            w.evaluation(step, metrics)

    def range_test(self, result: dict[str, Any], png: Path) -> None:
        """The LR range test's curve, suggestion and plot (``clr-dist range-test``)."""
        for w in self.writers:
            w.range_test(result, png)

    def close(self) -> None:
        for w in self.writers:
            w.close(self.peaks)


def best_peak(peaks: list[CyclePeak]) -> CyclePeak | None:
    return max(peaks, key=lambda p: (p.top1, -p.val_loss)) if peaks else None


def plan_record(plan: RunPlan, start_step: int) -> dict[str, Any]:
    """The plan as the start record of ``metrics.jsonl`` and the W&B config hold it, under the key
    ``resolved`` (the name runs logged before the plan had its own type use)."""
    return {**dataclasses.asdict(plan), "start_step": start_step}


def logged_through(path: Path) -> int:
    """The last step recorded in a ``metrics.jsonl`` (0: none)."""
    if not path.exists():
        return 0
    steps = [
        json.loads(line).get("step", 0) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")
    ]
    return max(steps, default=0)


class JsonlWriter(Writer):
    """``metrics.jsonl``: one JSON object per event, appended and flushed as it happens."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def _write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")

    def start(self, config, env, plan, start_step) -> None:
        if start_step and self.path.exists():
            # A resumed run: what was logged after its checkpoint is logged again from here on.
            keep = [
                line
                for line in self.path.read_text().splitlines(keepends=True)
                if line.endswith("\n") and json.loads(line).get("step", 0) <= start_step
            ]
            atomic_write_text(self.path, "".join(keep))
        self.file = self.path.open("a", buffering=1)
        self._write({"event": "start", "resolved": plan_record(plan, start_step), "environment": env})

    def train(self, step, metrics) -> None:
        self._write({"event": "train", "step": step, **metrics})

    def peak(self, peak, peaks) -> None:
        self._write({"event": "cycle_peak", **peak_record(peak)})

    def evaluation(self, step, metrics) -> None:
        self._write({"event": "eval", "step": step, **metrics})

    def range_test(self, result, png) -> None:
        self._write(
            {
                "event": "range_test",
                "suggestion": result["suggestion"],
                "readings": result["readings"],
                "stopped": result["stopped"],
            }
        )

    def close(self, peaks) -> None:
        if self.file is not None:
            self.file.close()


class PeaksCsvWriter(Writer):
    """``cycle_peaks.csv``: the table of cycle-end peaks so far, rewritten atomically each cycle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self, config, env, plan, start_step) -> None:
        if start_step and self.path.exists():  # a resumed run: drop later peaks
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if int(r["step"]) <= start_step]
            self._write(rows, reader.fieldnames or PEAK_FIELDS)

    def peak(self, peak, peaks) -> None:
        fields = peak_fields(peaks)
        self._write([{f: getattr(p, f) for f in fields} for p in peaks], fields)

    def _write(self, rows: list[dict], fields: list[str]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())


def sweep_job() -> tuple[str, int] | None:
    """(the sweep folder's name, the job number) in a job of a Hydra multirun; else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.sweep.dir).name, hydra_cfg.job.num


def run_identity(cfg: LoggerConfig, run_dir: Path, job: str, sweep: tuple[str, int] | None) -> dict[str, Any]:
    """W&B's name, group, job type and tags of a run in ``run_dir`` doing ``job`` (a RunPlan's),
    ``sweep`` from ``sweep_job()``. A multirun's jobs sit in folders 0, 1, ... of every sweep,
    so their names carry the sweep's: ``multirun-<id>/3``, in the group ``multirun-<id>``."""
    name = cfg.run_name or (f"{sweep[0]}/{sweep[1]}" if sweep else run_dir.name)
    group = cfg.group or (sweep[0] if sweep else None)
    return {
        "name": redact_text(name),
        "group": None if group is None else redact_text(group),
        "job_type": job,
        "tags": [redact_text(tag) for tag in cfg.tags],
    }


def wandb_settings(cfg: LoggerConfig) -> Any:
    """``wandb.Settings`` for ``logger.record_host_and_git``: false turns off W&B's system
    metadata (host, user, args, hardware), its git capture (remote, commit, diff) and the
    hostname it puts on the run."""
    import wandb

    if cfg.record_host_and_git:
        return wandb.Settings()
    return wandb.Settings(disable_git=True, x_disable_meta=True, x_disable_machine_info=True, host="")


def wandb_continues_table(run: Any, key: str) -> bool:
    """Whether W&B will continue the incremental table ``key`` of a resumed ``run`` from its
    summary (wandb 0.31, ``Table._load_incremental_table_state_from_resumed_run``): online, where
    the server returns the summary. Offline it never does: each segment's table starts afresh."""
    held = run.summary.get(key)
    return bool(run.resumed) and isinstance(held, dict) and held.get("_type") == "incremental-table-file"


class WandbWriter(Writer):
    """One W&B run per job. Its id is kept in the run directory so a restarted job continues it.

    ``wandb`` is imported by the methods that use it: it takes a second or more to import, and a
    run with ``logger.mode=disabled`` never needs it.
    """

    def __init__(self, cfg: LoggerConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir, self.run = cfg, run_dir, None
        self.peak_table = None

    def start(self, config, env, plan, start_step) -> None:
        import wandb

        id_file = self.run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        atomic_write_text(id_file, run_id + "\n")
        if not self.cfg.record_host_and_git:
            env = {k: v for k, v in env.items() if k != "hostname"}
        with argv_redacted():  # W&B records sys.argv[1:] as the run's args, here
            self.run = wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                mode=self.cfg.mode,
                dir=str(self.run_dir),
                id=run_id,
                resume="allow",
                config={**config, "environment": env, "resolved": plan_record(plan, start_step)},
                settings=wandb_settings(self.cfg),
                **run_identity(self.cfg, self.run_dir, plan.job, sweep_job()),
            )
        # A resumed run logs again from its checkpoint's step. What this W&B run already holds
        # (up to the last step in metrics.jsonl, or W&B's own step online) is not logged twice,
        # so the step axis only moves forward, across every restart.
        self.floor = max(self.run.step, logged_through(self.run_dir / "metrics.jsonl") + 1)
        # Validation is plotted against the cycle, the unit in which CLR runs are read.
        self.run.define_metric("cycle")
        self.run.define_metric("val/*", step_metric="cycle")
        self.run.define_metric("avg/*", step_metric="cycle")

    def train(self, step, metrics) -> None:
        if step >= self.floor:
            self.run.log({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def peak(self, peak, peaks) -> None:
        if peak.step < self.floor:
            return
        logged = {
            "cycle": peak.cycle,
            "val/top1": peak.top1,
            "val/top5": peak.top5,
            "val/loss": peak.val_loss,
            "val/lr": peak.lr,
            "cycle_peaks": self._peak_table(peak, peaks),
        }
        if peak.avg_top1 is not None:
            logged.update({"avg/top1": peak.avg_top1, "avg/top5": peak.avg_top5, "avg/loss": peak.avg_val_loss})
        self.run.log(logged, step=peak.step)
        best = best_peak(peaks)
        self.run.summary.update({f"best/{f}": getattr(best, f) for f in peak_fields(peaks)})

    def _peak_table(self, peak: CyclePeak, peaks: list[CyclePeak]) -> Any:
        """The one cycle-peak table of the run, ``peak`` added. INCREMENTAL: each log writes only
        the rows added since the last one, and W&B shows their union (up to 100 increments)."""
        import wandb

        if self.peak_table is None:
            fields = peak_fields(peaks)
            self.peak_table = wandb.Table(columns=fields, log_mode="INCREMENTAL")
            # The earlier peaks (a resumed run's, all below the floor) go in first unless W&B
            # holds them already; then this segment's table alone has every row, once.
            new: Sequence[CyclePeak] = [peak] if wandb_continues_table(self.run, "cycle_peaks") else peaks
        else:
            new = [peak]
        for p in new:
            self.peak_table.add_data(*[getattr(p, f) for f in self.peak_table.columns])
        return self.peak_table

    def snapshot(self, peak, path) -> None:
        """``logger.log_cycle_end_artifacts``: the saved file as a version of this run's model
        artifact ``cycle-ends-<run id>`` (aliases ``cycle-K``, ``step-N``). W&B hashes it here
        (one read of the file, on the training loop's time) and uploads it in the background,
        online, or at ``wandb sync`` offline, reading it in place: keep the run directory until
        then."""
        import wandb

        if not self.cfg.log_cycle_end_artifacts or peak.step < self.floor or not path.is_file():
            return
        artifact = wandb.Artifact(f"cycle-ends-{self.run.id}", type="model", metadata=peak_record(peak))
        artifact.add_file(str(path), name=path.name, policy="immutable")  # no copy of the file
        self.run.log_artifact(artifact, aliases=[f"cycle-{peak.cycle}", f"step-{peak.step}"])

    def evaluation(self, step, metrics) -> None:
        if step >= self.floor:
            self.run.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)

    def range_test(self, result, png) -> None:
        import wandb

        curve = result["curve"]
        accuracy = {e["step"]: e["top1"] for e in result["evaluations"]}
        rows = [[s, lr, loss, accuracy.get(s)] for s, lr, loss in zip(curve["step"], curve["lr"], curve["loss"])]
        self.run.log(
            {
                "range_test/curve": wandb.Table(columns=["step", "lr", "loss", "top1"], data=rows),
                "range_test/plot": wandb.Image(str(png)),
            }
        )
        if result["suggestion"]:
            self.run.summary.update({f"range_test/{k}": v for k, v in result["suggestion"].items()})
        self.run.summary["range_test/stopped"] = result["stopped"] or ""

    def close(self, peaks) -> None:
        if self.run is not None:
            self.run.finish()


class HydraRecordWriter(Writer):
    """``.hydra/``: Hydra's own copy of the command line (``overrides.yaml``, ``hydra.yaml``) and
    of the composed config (``config.yaml``), redacted in place where they hold a secret; the
    others are left as Hydra wrote them. Every rank's Hydra writes them before the task starts,
    so by ``start`` (after the process group formed) no rank writes them again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self, config, env, plan, start_step) -> None:
        for path in sorted(self.folder.glob("*.yaml")):
            saved = yaml.safe_load(path.read_text())
            redacted = redact_data(saved)
            if redacted != saved:
                atomic_write_text(path, yaml.safe_dump(redacted, sort_keys=False, allow_unicode=True))


class ConsoleWriter(Writer):
    """A progress bar (step, lr, loss, images/s) and the cycle-peak table at the end."""

    def __init__(self, progress_bar: bool) -> None:
        self.progress_bar, self.bar, self.job = progress_bar, None, "train"

    def start(self, config, env, plan, start_step) -> None:
        self.job = plan.job
        self.last_step = start_step
        self.bar = tqdm(
            total=plan.planned_steps,
            initial=self.last_step,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
            disable=not self.progress_bar,
            file=sys.stderr,
        )
        self.bar.write("clr_dist: " + ", ".join(f"{k}={v}" for k, v in plan_record(plan, start_step).items()))

    def train(self, step, metrics) -> None:
        if "compile_seconds" in metrics:
            self.bar.write(
                f"clr_dist: compiled the model in {metrics['compile_seconds']:.1f} s (the first step; not in img/s)"
            )
        self.bar.update(step - self.last_step)
        self.last_step = step
        self.bar.set_postfix(
            lr=f"{metrics['lr']:.4g}",
            loss=f"{metrics['loss']:.4f}",
            img_s=f"{metrics.get('images_per_sec', float('nan')):.0f}",
            refresh=False,
        )

    def peak(self, peak, peaks) -> None:
        self.bar.write(
            f"cycle {peak.cycle} ends at step {peak.step}: top-1 {peak.top1:.2%}, "
            f"top-5 {peak.top5:.2%}, val loss {peak.val_loss:.4f}"
            + (
                f"; average of {len(peaks)} cycle ends: top-1 {peak.avg_top1:.2%}, val loss {peak.avg_val_loss:.4f}"
                if peak.avg_top1 is not None
                else ""
            )
        )

    def evaluation(self, step, metrics) -> None:
        self.bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def range_test(self, result, png) -> None:
        self.bar.close()
        print(f"wrote {png.with_suffix('.json')} and {png}", flush=True)
        print(format_suggestion(result, png.with_suffix(".json")), flush=True)

    def close(self, peaks) -> None:
        if self.bar is None:  # never started
            return
        self.bar.close()
        if self.job == "train":
            print(format_peaks_table(peaks), flush=True)


def format_peaks_table(peaks: list[CyclePeak]) -> str:
    if not peaks:
        return "No cycle ended during this run, so there are no cycle-end peaks to show."
    best = best_peak(peaks)
    averaged = any(p.avg_top1 is not None for p in peaks)
    head = f"{'cycle':>5} {'step':>8} {'lr':>10} {'top-1':>8} {'top-5':>8} {'val loss':>9}"
    lines = ["Cycle-end peaks" + (" (avg: the average of the cycle ends so far)" if averaged else "")]
    lines.append(head + (f" {'avg top-1':>10} {'avg loss':>9}" if averaged else ""))
    for p in peaks:
        row = f"{p.cycle:>5} {p.step:>8} {p.lr:>10.4g} {p.top1:>8.2%} {p.top5:>8.2%} {p.val_loss:>9.4f}"
        if averaged:
            row += f" {p.avg_top1:>10.2%} {p.avg_val_loss:>9.4f}" if p.avg_top1 is not None else f" {'':>10} {'':>9}"
        lines.append(row + ("  <- best" if p is best else ""))
    return "\n".join(lines)


def build_reporter(cfg: LoggerConfig, run_dir: Path, info: DistInfo) -> Reporter:
    """All writers on rank 0; none elsewhere. Nothing is opened or printed before ``start``."""
    if not info.is_main:
        return Reporter([])
    run_dir.mkdir(parents=True, exist_ok=True)
    writers: list[Writer] = []
    if cfg.mode != "disabled":  # first: it reads how far metrics.jsonl got before that is rewound
        writers.append(WandbWriter(cfg, run_dir))
    writers += [
        JsonlWriter(run_dir / "metrics.jsonl"),
        PeaksCsvWriter(run_dir / "cycle_peaks.csv"),
        HydraRecordWriter(run_dir / ".hydra"),
    ]
    # Last, so that the peak table is the final thing printed, after W&B's own closing lines.
    writers.append(ConsoleWriter(cfg.progress_bar))
    return Reporter(writers)
