"""``clr-dist compare``: finished runs side by side, as the paper's Table 1 and Figure 1 set them.

    clr-dist compare runs/fixed runs/tri2                  # two runs; the first is the baseline
    clr-dist compare runs/multirun-<id> --baseline runs/fixed-long --wandb

Each run's accuracy curve is top-1 against iteration from its ``eval`` and ``cycle_peak`` events
in ``metrics.jsonl``. Runs whose ``.hydra/config.yaml`` are equal apart from the seed, the run
name and paths into the run's own directory are seeds of one configuration and form one group:
a curve (the mean, with a min-max band) in the figure and a row in the table. The table's
question is the paper's: how many iterations does each group need to first reach the accuracy
the baseline ends with (Table 1: triangular2 reaches fixed's 81.4% in 25,000 iterations instead
of 70,000)?

Nothing here imports torch; matplotlib and wandb are imported where they are used.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clr_dist.errors import UsageError
from clr_dist.files import atomic_open, atomic_write_text
from clr_dist.redaction import argv_redacted

METRICS = "metrics.jsonl"
CONFIG = Path(".hydra") / "config.yaml"
# Keys that say nothing about the configuration: the seed, and the run's name. A ``hydra`` node
# (run and sweep directories) is left out as well, and a value that is a path into the run's own
# directory (trainer.resume=runs/<id>/checkpoints/..., say) counts as the same in every run.
IGNORED_KEYS = ("trainer.seed", "logger.run_name")
RUN_DIR_VALUE = "<run dir>"
# Top-1 is a share of a finite validation set (steps of 1/images, at least 1e-7); a mean over
# seeds may land an ulp away from an equal value, which must still count as reached.
TOLERANCE = 1e-9
BAND = "min-max"  # what the band around a group's mean curve spans (also in the legend)
LABEL_CHARS = 60  # a label holds settings until it is this long, then says how many it left out
CSV_COLUMNS = [
    "label",
    "baseline",
    "seeds",
    "iterations",
    "final_top1",
    "final_top1_std",
    "best_top1",
    "best_top1_std",
    "target_top1",
    "reach_iterations",
    "reached",
    "reach_ratio",
]


# --- finding and reading runs ------------------------------------------------------------------


def _folder_order(path: Path) -> tuple:
    """Hydra's job folders 0, 1, ..., 10 in number order; other names alphabetically after."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def find_runs(path: str | Path) -> list[Path]:
    """The run directories ``path`` names: itself if it holds a ``metrics.jsonl``, else its
    immediate subfolders that do (a Hydra multirun folder, a folder of runs)."""
    path = Path(path)
    if path.is_file() and path.name == METRICS:
        return [path.parent]
    if not path.is_dir():
        raise UsageError(f"{path}: no such directory; give run directories such as runs/<id>")
    if (path / METRICS).is_file():
        return [path]
    runs = sorted((sub for sub in path.iterdir() if (sub / METRICS).is_file()), key=_folder_order)
    if not runs:
        raise UsageError(
            f"{path} holds no runs (no {METRICS} in it or its subfolders); give run directories such as runs/<id>"
        )
    return runs


@dataclass
class Point:
    """One validation of a run: at ``step`` (completed updates); ``cycle`` at a cycle end."""

    step: int
    top1: float
    top5: float | None = None
    val_loss: float | None = None
    cycle: int | None = None


@dataclass
class Metrics:
    """What ``metrics.jsonl`` says about accuracy, and what reading it had to pass over."""

    points: list[Point]  # sorted by step, one per step (the last one logged)
    starts: int = 0  # start events: more than one for a resumed run
    last_step: int = 0  # the last step of any event (train or validation)
    skipped_lines: int = 0  # torn (no newline, not JSON) or not an event
    repeated_steps: int = 0  # validations logged again for a step, the later one kept


def read_metrics(path: Path) -> Metrics:
    """Every validation in ``path`` (``eval`` and ``cycle_peak`` events), the whole file: a run
    that was resumed may hold several ``start`` events and log a step again, and the last record
    of a step wins. A torn line (the last one of a run that was killed while writing, or one
    that a later start appended to) is skipped and counted."""
    by_step: dict[int, Point] = {}
    metrics = Metrics(points=[])
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            if not line.endswith("\n"):
                raise ValueError("torn")
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an event")
            event = record.get("event")
            if event == "start":
                metrics.starts += 1
                continue
            if event not in ("eval", "cycle_peak"):  # train, range_test, ...: only how far it got
                metrics.last_step = max(metrics.last_step, int(record.get("step", 0)))
                continue
            step = int(record["step"])
            metrics.last_step = max(metrics.last_step, step)
            point = Point(
                step=step,
                top1=float(record["top1"]),
                top5=_float_or_none(record.get("top5")),
                val_loss=_float_or_none(record.get("val_loss")),
                cycle=int(record["cycle"]) if event == "cycle_peak" else None,
            )
        except (ValueError, KeyError, TypeError):
            metrics.skipped_lines += 1
            continue
        metrics.repeated_steps += step in by_step
        by_step[step] = point
    metrics.points = [by_step[step] for step in sorted(by_step)]
    return metrics


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _points_into(value: Any, run_dir: Path) -> bool:
    """Whether ``value`` is a path into the run's own directory (``runs/<id>/...``, absolute or
    relative to wherever the run was started): that differs from seed to seed by nature."""
    if not isinstance(value, str) or "/" not in value:
        return False
    parts = Path(value).parts
    own = (run_dir.parent.name, run_dir.name)
    return any(parts[i : i + 2] == own for i in range(len(parts) - 1))


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's composed config (``.hydra/config.yaml``) as dotted keys, all of them; None when
    the run has no config file."""
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    try:
        container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OmegaConfBaseException, YAMLError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({str(exc).splitlines()[0]}); fix or remove it") from exc
    if not isinstance(container, dict):
        raise UsageError(f"{path} is not a mapping of settings; fix or remove it")
    return _flatten(container)


def configuration(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What makes a configuration: ``config`` (dotted keys) less IGNORED_KEYS and a ``hydra``
    node, a path into the run's own directory replaced by ``<run dir>``."""
    return {
        key: RUN_DIR_VALUE if _points_into(value, run_dir) else value
        for key, value in config.items()
        if key not in IGNORED_KEYS and key.split(".")[0] != "hydra"
    }


@dataclass
class Run:
    """One run directory: its accuracy curve and its configuration."""

    path: Path
    name: str  # the folder's name, with its parent's for a numbered multirun job ("multirun-x/3")
    metrics: Metrics
    config: dict[str, Any] | None  # dotted keys, ignored ones left out; None without a config file
    seed: Any = None

    @property
    def points(self) -> list[Point]:
        return self.metrics.points

    @property
    def iterations(self) -> int:
        return self.points[-1].step

    @property
    def final(self) -> float:
        return self.points[-1].top1

    @property
    def best(self) -> Point:
        return max(self.points, key=lambda p: p.top1)  # the first of equal ones

    def reach(self, target: float) -> int | None:
        """The first evaluated step whose top-1 is at least ``target`` (None: never)."""
        return next((p.step for p in self.points if p.top1 >= target - TOLERANCE), None)


def read_run(run_dir: Path) -> Run:
    metrics = read_metrics(run_dir / METRICS)
    if not metrics.points:
        logged = f"its last logged step is {metrics.last_step}" if metrics.last_step else "it logged no step"
        raise UsageError(
            f"{run_dir} never validated: its {METRICS} has no eval or cycle_peak event ({logged}), so it has "
            f"no accuracy to compare; let it reach a cycle end or set trainer.eval_every, or leave it out"
        )
    config = read_config(run_dir)
    name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
    return Run(
        path=run_dir,
        name=name,
        metrics=metrics,
        config=None if config is None else configuration(config, run_dir),
        seed=None if config is None else config.get("trainer.seed"),
    )


# --- groups and the table ----------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """The mean, and the sample standard deviation (n - 1) when there are several values."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Group:
    """Seeds of one configuration."""

    runs: list[Run]
    label: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # the keys that differ between groups

    @property
    def iterations(self) -> int:
        return max(run.iterations for run in self.runs)

    @property
    def final(self) -> tuple[float, float | None]:
        return _mean_std([run.final for run in self.runs])

    @property
    def best(self) -> tuple[float, float | None]:
        return _mean_std([run.best.top1 for run in self.runs])

    def curve(self) -> dict[str, list]:
        """The mean curve over the seeds at the steps every seed evaluated (if they share none,
        at every step any of them evaluated, over those that did), with its min-max band and
        whether any seed's validation there was a cycle end."""
        maps = [{p.step: p for p in run.points} for run in self.runs]
        steps = set.intersection(*(set(m) for m in maps)) or set().union(*(set(m) for m in maps))
        curve: dict[str, list] = {"step": [], "mean": [], "min": [], "max": [], "n": [], "peak": []}
        for step in sorted(steps):
            here = [m[step] for m in maps if step in m]
            values = [p.top1 for p in here]
            curve["step"].append(step)
            curve["mean"].append(statistics.fmean(values))
            curve["min"].append(min(values))
            curve["max"].append(max(values))
            curve["n"].append(len(values))
            curve["peak"].append(any(p.cycle is not None for p in here))
        return curve


def _format_value(value: Any) -> str:
    return "null" if value is None else str(value)


def _label(group: Group, differing: list[str]) -> str:
    pairs = [f"{key}={_format_value(group.settings[key])}" for key in differing]
    label = pairs[0]
    for count, pair in enumerate(pairs[1:], start=1):
        if len(label) + 2 + len(pair) > LABEL_CHARS:
            return f"{label} (+{len(pairs) - count} more)"
        label += f", {pair}"
    return label


def _key_order(key: str, keys: list[str]) -> tuple:
    """Names first (schedule.policy, model.name), then the order of the config file."""
    return (key.rsplit(".", 1)[-1] not in ("policy", "name"), keys.index(key))


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with equal configs (see read_config) in one group, in order of first appearance; a run
    without a config file is a group of its own. Labels: the settings that differ between the
    groups, else the first run's folder name."""
    groups: list[Group] = []
    for run in runs:
        home = next((g for g in groups if run.config is not None and g.runs[0].config == run.config), None)
        if home is None:
            groups.append(Group(runs=[run]))
        else:
            home.runs.append(run)
    configured = [g for g in groups if g.runs[0].config is not None]
    keys: list[str] = []
    for group in configured:
        keys += [key for key in group.runs[0].config if key not in keys]
    missing = object()
    differing = [
        key
        for key in keys
        if len({json.dumps(g.runs[0].config.get(key, missing), default=repr) for g in configured}) > 1
    ]
    differing.sort(key=lambda key: _key_order(key, keys))
    for group in groups:
        if group.runs[0].config is not None and differing:
            group.settings = {key: group.runs[0].config.get(key) for key in differing}
            group.label = _label(group, differing)
        else:
            group.label = group.runs[0].name
    labels = [g.label for g in groups]
    for group in groups:
        if labels.count(group.label) > 1:  # shortened labels that came out equal
            group.label += f" [{group.runs[0].name}]"
    return groups


@dataclass
class Comparison:
    groups: list[Group]  # the baseline's first
    baseline: Group
    target: float  # the baseline's final top-1, mean over its seeds

    def reach(self, group: Group) -> dict[str, Any]:
        """Iterations to first reach the baseline's final top-1: per run, and the mean when every
        seed reached it; the ratio to the baseline's iterations."""
        steps = [run.reach(self.target) for run in group.runs]
        reached = sum(step is not None for step in steps)
        mean = statistics.fmean(steps) if reached == len(steps) else None
        return {
            "per_run": steps,
            "reached": reached,
            "of": len(steps),
            "iterations": mean,
            "ratio": None if mean is None else mean / self.baseline.iterations,
        }

    def rows(self) -> list[dict[str, Any]]:
        """The table: one row per group, numbers as fractions (CSV, JSON, W&B)."""
        rows = []
        for group in self.groups:
            final, final_std = group.final
            best, best_std = group.best
            reach = self.reach(group)
            rows.append(
                {
                    "label": group.label,
                    "baseline": group is self.baseline,
                    "seeds": len(group.runs),
                    "iterations": group.iterations,
                    "final_top1": final,
                    "final_top1_std": final_std,
                    "best_top1": best,
                    "best_top1_std": best_std,
                    "target_top1": self.target,
                    "reach_iterations": reach["iterations"],
                    "reached": f"{reach['reached']}/{reach['of']}",
                    "reach_ratio": reach["ratio"],
                }
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        """Everything: the baseline, each group (its row, settings, runs, mean curve) and each run
        (its curve, final, best, first reach, what reading its log passed over)."""
        rows = {row["label"]: row for row in self.rows()}
        return {
            "baseline": {
                "label": self.baseline.label,
                "runs": [str(run.path) for run in self.baseline.runs],
                "final_top1": self.target,
                "iterations": self.baseline.iterations,
            },
            "reach_rule": "per run, the first evaluated step whose top-1 >= the baseline's final top-1 "
            f"(mean over its seeds; {TOLERANCE:g} tolerance); a group's is the mean over its seeds when "
            "every seed reached it; ratio = that / the baseline's iterations (its last evaluated step)",
            "std": "sample standard deviation over seeds (n - 1)",
            "band": BAND,
            "groups": [
                {
                    **rows[group.label],
                    "settings": group.settings,
                    "runs": [str(run.path) for run in group.runs],
                    "seed_values": [run.seed for run in group.runs],
                    "reach_per_run": self.reach(group)["per_run"],
                    "curve": group.curve(),
                }
                for group in self.groups
            ],
            "runs": [
                {
                    "path": str(run.path),
                    "name": run.name,
                    "group": group.label,
                    "seed": run.seed,
                    "iterations": run.iterations,
                    "final_top1": run.final,
                    "best_top1": run.best.top1,
                    "best_step": run.best.step,
                    "reach_iterations": run.reach(self.target),
                    "starts": run.metrics.starts,
                    "skipped_lines": run.metrics.skipped_lines,
                    "repeated_steps": run.metrics.repeated_steps,
                    "curve": [vars(p) for p in run.points],
                }
                for group in self.groups
                for run in group.runs
            ],
        }


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory the arguments name, each once, in order."""
    found: list[Path] = []
    for path in paths:
        for run in find_runs(path):
            if run.resolve() not in {f.resolve() for f in found}:
                found.append(run)
    return found


def compare(paths: list[str | Path], baseline: str | Path | None = None) -> Comparison:
    """Read and group the runs ``paths`` name (run directories or folders of runs). The baseline
    is the group of ``baseline`` (any run directory, or a folder of seeds of one configuration,
    compared too), else the group of the first run. Every path is checked before any is read."""
    run_dirs = expand(paths)
    baseline_dirs = expand([baseline]) if baseline is not None else run_dirs[:1]
    if not run_dirs and not baseline_dirs:
        raise UsageError("nothing to compare: give at least one run directory, such as runs/<id>")
    ordered = baseline_dirs + [d for d in run_dirs if d.resolve() not in {b.resolve() for b in baseline_dirs}]
    runs = [read_run(run_dir) for run_dir in ordered]
    groups = group_runs(runs)
    baseline_runs = runs[: len(baseline_dirs)]
    homes = [g for g in groups if any(r in g.runs for r in baseline_runs)]
    if len(homes) > 1:
        raise UsageError(
            f"--baseline {baseline} holds runs of {len(homes)} configurations "
            f"({', '.join(g.label for g in homes)}); give one run directory or a folder of seeds of one configuration"
        )
    base = homes[0]
    groups.remove(base)
    return Comparison(groups=[base, *groups], baseline=base, target=base.final[0])


# --- output ------------------------------------------------------------------------------------


def _percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return ""
    return f"{value:.2%}" + ("" if std is None else f" ± {100 * std:.2f}")


def _steps(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def table_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The table as text: Table 1's columns, one row per group."""
    header = [
        "group",
        "seeds",
        "iterations",
        "final top-1",
        "best top-1",
        f"iterations to {comparison.target:.2%}",
        "ratio",
    ]
    cells = []
    for group, row in zip(comparison.groups, comparison.rows()):
        reach = comparison.reach(group)
        if reach["iterations"] is None:
            reached = f"not reached ({reach['reached']} of {reach['of']})"
            ratio = ""
        else:
            reached, ratio = _steps(reach["iterations"]), f"{reach['ratio']:.2f}"
        cells.append(
            [
                group.label + (" (baseline)" if row["baseline"] else ""),
                str(row["seeds"]),
                str(row["iterations"]),
                _percent(row["final_top1"], row["final_top1_std"]),
                _percent(row["best_top1"], row["best_top1_std"]),
                reached,
                ratio,
            ]
        )
    return header, cells


def notes(comparison: Comparison) -> str:
    seeds = len(comparison.baseline.runs)
    return (
        f"Baseline: {comparison.baseline.label}, final top-1 {comparison.target:.2%} (mean over {seeds} "
        f"seed{'s' if seeds > 1 else ''}). Iterations to reach it: the first evaluated step with top-1 at "
        f"least that, mean over a group's seeds when every seed reached it; ratio: to the baseline's "
        f"{comparison.baseline.iterations} iterations. ±: sample std over seeds, in points."
    )


def format_table(comparison: Comparison) -> str:
    header, cells = table_cells(comparison)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), *(line(row) for row in cells), "", notes(comparison)])


def markdown_table(comparison: Comparison) -> str:
    header, cells = table_cells(comparison)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
    lines += ["", notes(comparison), ""]
    for group in comparison.groups:
        settings = ", ".join(f"`{key}={_format_value(value)}`" for key, value in group.settings.items())
        runs = ", ".join(
            f"`{run.path}` ({'not reached' if step is None else f'reached at {step}'})"
            for run, step in zip(group.runs, comparison.reach(group)["per_run"])
        )
        lines.append(f"- {group.label}: " + (f"{settings}; " if settings else "") + f"runs {runs}")
    return "\n".join(lines) + "\n"


def csv_text(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in comparison.rows():
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def plot(comparison: Comparison, png: Path) -> None:
    """The paper's Figure 1: top-1 (%) against iteration, one curve per group (a group of seeds as
    its mean with a min-max band), cycle-end peaks marked, the baseline's final top-1 dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axis = plt.subplots(figsize=(8, 5))
    any_peaks = False
    for index, group in enumerate(comparison.groups):
        color = f"C{index % 10}"
        curve = group.curve()
        mean = [100 * v for v in curve["mean"]]
        seeds = len(group.runs)
        legend = group.label + (f" ({seeds} seeds: mean, band {BAND})" if seeds > 1 else "")
        axis.plot(curve["step"], mean, "o-", color=color, markersize=3, linewidth=1.5, label=legend)
        if seeds > 1:
            low, high = [100 * v for v in curve["min"]], [100 * v for v in curve["max"]]
            axis.fill_between(curve["step"], low, high, color=color, alpha=0.2, linewidth=0)
        peaks = [(s, m) for s, m, p in zip(curve["step"], mean, curve["peak"]) if p]
        if peaks:
            any_peaks = True
            axis.plot(*zip(*peaks), "^", color=color, markersize=8, markeredgecolor="black", zorder=3)
    axis.axhline(100 * comparison.target, color="grey", linestyle=":", linewidth=1)
    handles, _ = axis.get_legend_handles_labels()
    handles.append(
        Line2D([], [], color="grey", linestyle=":", label=f"baseline's final top-1, {comparison.target:.2%}")
    )
    if any_peaks:
        handles.append(
            Line2D([], [], marker="^", color="grey", markeredgecolor="black", linestyle="none", label="cycle-end peak")
        )
    axis.legend(handles=handles, loc="lower right", fontsize="small")
    axis.set_xlabel("iteration")
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_title("Validation top-1 against iteration (Smith 2015, Figure 1)")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_outputs(
    comparison: Comparison, out: Path, md: Path | None = None, png: Path | None = None
) -> dict[str, Path]:
    """compare.json, compare.csv, compare.md and compare.png in ``out`` (the last two at ``md`` and
    ``png`` when given); every file written atomically. Returns what went where."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "compare.json",
        "csv": out / "compare.csv",
        "md": md or out / "compare.md",
        "png": png or out / "compare.png",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["json"], json.dumps(_json_safe(comparison.to_json()), indent=1, allow_nan=False) + "\n")
    atomic_write_text(paths["csv"], csv_text(comparison))
    atomic_write_text(paths["md"], markdown_table(comparison))
    plot(comparison, paths["png"])
    return paths


def log_to_wandb(comparison: Comparison, out: Path, png: Path) -> str:
    """One W&B run (job_type compare; mode from WANDB_MODE, offline by default; in ``out``) with
    the table and the figure. Returns the run's folder (``out/wandb/offline-run-*`` offline)."""
    import wandb

    rows = comparison.rows()
    with argv_redacted():  # W&B records the command line
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "clr_dist"),
            job_type="compare",
            mode=os.environ.get("WANDB_MODE", "offline"),
            dir=str(out),
            config={
                "baseline": comparison.baseline.label,
                "runs": [str(run.path) for group in comparison.groups for run in group.runs],
            },
        )
    try:
        table = wandb.Table(columns=CSV_COLUMNS, data=[[row[c] for c in CSV_COLUMNS] for row in rows])
        run.log({"compare/table": table, "compare/figure": wandb.Image(str(png))})
        run.summary.update(
            {
                "baseline": comparison.baseline.label,
                "target_top1": comparison.target,
                "groups": [row["label"] for row in rows],
            }
        )
        return str(Path(run.dir).parent)
    finally:
        run.finish()


def compare_command(
    paths: list[str],
    baseline: str | None = None,
    out: str | Path = "compare",
    md: str | Path | None = None,
    png: str | Path | None = None,
    use_wandb: bool = False,
) -> Comparison:
    """``clr-dist compare``: read, group, print the table, write the outputs (and the W&B run)."""
    comparison = compare(paths, baseline)
    for group in comparison.groups:
        for run in group.runs:
            if run.metrics.skipped_lines:
                print(f"note: {run.path / METRICS}: skipped {run.metrics.skipped_lines} torn or unreadable line(s)")
    print(format_table(comparison))
    written = write_outputs(comparison, Path(out), Path(md) if md else None, Path(png) if png else None)
    print("wrote " + ", ".join(str(path) for path in written.values()))
    if use_wandb:
        print(f"W&B run in {log_to_wandb(comparison, Path(out), written['png'])}")
    return comparison
