"""`clr-dist compare` on runs whose metrics the test writes itself (metrics.jsonl and
.hydra/config.yaml in tmp_path, no training): the first-reach iterations and ratios against
values worked out by hand, seeds grouped with their mean and std, folders of runs expanded,
torn and repeated lines, the one-line errors, and every output read back."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from clr_dist import compare as cmp
from clr_dist.errors import UsageError
from tests.conftest import offline_run, run_cli, wandb_history, wandb_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config(policy: str = "fixed", seed: int = 0, **extra: dict) -> dict:
    """A composed config as Hydra saves it, cut down to a few keys of each node."""
    nodes = {
        "model": {"name": "alexnet", "kwargs": {}},
        "schedule": {"policy": policy, "base_lr": 0.01, "max_lr": 0.06, "stepsize": None},
        "trainer": {"max_steps": 1000, "seed": seed, "resume": "auto"},
        "logger": {"mode": "offline", "run_name": None},
    }
    for node, values in extra.items():
        nodes[node].update(values)
    return nodes


def write_run(
    run_dir: Path,
    curve: list[tuple[int, float]],
    cfg: dict | None = None,
    peaks: tuple[int, ...] = (),
    tail: str = "",
) -> Path:
    """A run directory: metrics.jsonl with a start event, a train event before each validation and
    the validations of ``curve`` (``cycle_peak`` at the steps in ``peaks``, else ``eval``), then
    ``tail`` as it is; ``.hydra/config.yaml`` from ``cfg`` (none when None)."""
    run_dir.mkdir(parents=True)
    lines = [{"event": "start", "resolved": {"planned_steps": 1000, "world_size": 2}, "environment": {}}]
    for step, top1 in curve:
        lines.append({"event": "train", "step": step, "lr": 0.01, "loss": 1.0})
        record = {"step": step, "val_loss": 1.0 - top1, "top1": top1, "top5": min(1.0, top1 + 0.2)}
        if step in peaks:
            lines.append({"event": "cycle_peak", "cycle": peaks.index(step) + 1, "lr": 0.01, **record})
        else:
            lines.append({"event": "eval", **record})
    text = "".join(json.dumps(line) + "\n" for line in lines) + tail
    (run_dir / "metrics.jsonl").write_text(text)
    if cfg is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run_dir


BASELINE_CURVE = [(100, 0.40), (500, 0.60), (1000, 0.70)]
CLR_CURVE = [(100, 0.50), (200, 0.69), (300, 0.70), (400, 0.72)]


def test_first_reach_is_the_first_evaluated_step_at_the_baseline_final(tmp_path: Path) -> None:
    base = write_run(tmp_path / "fixed", BASELINE_CURVE, config("fixed"))
    clr = write_run(tmp_path / "tri2", CLR_CURVE, config("triangular2"), peaks=(200, 400))
    result = cmp.compare([base, clr])
    assert [g.label for g in result.groups] == ["schedule.policy=fixed", "schedule.policy=triangular2"]
    assert result.baseline is result.groups[0]
    assert result.target == 0.70
    base_row, clr_row = result.rows()
    # 0.69 at 200 is short of 0.70; 0.70 at 300 is the first that reaches it.
    assert clr_row["reach_iterations"] == 300
    assert clr_row["reach_ratio"] == 300 / 1000
    assert clr_row["reached"] == "1/1"
    assert (clr_row["iterations"], clr_row["final_top1"], clr_row["best_top1"]) == (400, 0.72, 0.72)
    assert clr_row["final_top1_std"] is None  # one seed: no spread
    # The baseline reaches its own final at its last step: ratio 1.
    assert (base_row["reach_iterations"], base_row["reach_ratio"], base_row["iterations"]) == (1000, 1.0, 1000)
    assert [p.step for p in result.groups[1].runs[0].points] == [100, 200, 300, 400]
    assert [p.cycle for p in result.groups[1].runs[0].points] == [None, 1, None, 2]


def test_seeds_of_one_configuration_are_one_group(tmp_path: Path) -> None:
    # Seeds differ in trainer.seed, the run name and a path into their own directory; all three
    # are left out, so the two fixed runs are one configuration, the three triangular2 another.
    runs = [
        write_run(
            tmp_path / "runs" / "f0",
            [(500, 0.60), (1000, 0.68)],
            config("fixed", 0, trainer={"resume": str(tmp_path / "runs" / "f0" / "checkpoints" / "step-500")}),
        ),
        write_run(
            tmp_path / "runs" / "f1",
            [(500, 0.62), (1000, 0.72)],
            config("fixed", 1, logger={"run_name": "fixed-seed1"}, trainer={"resume": "runs/f1/checkpoints/step-500"}),
        ),
    ]
    for seed, curve in enumerate(
        [
            [(100, 0.55), (200, 0.70), (300, 0.73)],
            [(100, 0.60), (200, 0.69), (300, 0.75)],
            [(100, 0.71), (200, 0.72), (300, 0.74)],
        ]
    ):
        runs.append(write_run(tmp_path / "runs" / f"t{seed}", curve, config("triangular2", seed)))
    result = cmp.compare(runs)
    fixed, tri = result.groups
    assert [len(fixed.runs), len(tri.runs)] == [2, 3]
    assert [r.seed for r in tri.runs] == [0, 1, 2]
    assert result.target == pytest.approx(0.70, abs=1e-15)  # (0.68 + 0.72) / 2
    base_row, tri_row = result.rows()
    assert base_row["final_top1"] == result.target
    assert base_row["final_top1_std"] == pytest.approx(math.sqrt(2 * 0.02**2), rel=1e-12)  # sample std
    assert tri_row["final_top1"] == pytest.approx((0.73 + 0.75 + 0.74) / 3, rel=1e-12)
    assert tri_row["final_top1_std"] == pytest.approx(0.01, rel=1e-12)
    assert tri_row["best_top1"] == pytest.approx((0.73 + 0.75 + 0.74) / 3, rel=1e-12)
    # Per seed: 200, 300 (0.69 at 200 is short), 100; the group's is their mean.
    assert result.reach(tri)["per_run"] == [200, 300, 100]
    assert tri_row["reach_iterations"] == 200
    assert tri_row["reach_ratio"] == 200 / 1000
    # The mean curve with its band, at the steps every seed evaluated.
    curve = tri.curve()
    assert curve["step"] == [100, 200, 300]
    assert curve["min"] == [0.55, 0.69, 0.73] and curve["max"] == [0.71, 0.72, 0.75]
    assert curve["mean"][0] == pytest.approx((0.55 + 0.60 + 0.71) / 3, rel=1e-12)


def test_a_group_where_a_seed_never_reaches_the_target_says_not_reached(tmp_path: Path) -> None:
    base = write_run(tmp_path / "fixed", BASELINE_CURVE, config("fixed"))
    good = write_run(tmp_path / "t0", CLR_CURVE, config("triangular", 0))
    short = write_run(tmp_path / "t1", [(100, 0.5), (200, 0.69), (400, 0.699)], config("triangular", 1))
    result = cmp.compare([base, good, short])
    row = result.rows()[1]
    assert (row["reach_iterations"], row["reach_ratio"], row["reached"]) == (None, None, "1/2")
    assert result.reach(result.groups[1])["per_run"] == [300, None]
    header, cells = cmp.table_cells(result)
    assert cells[1][5] == "not reached (1 of 2)"
    assert cells[1][6] == ""
    assert "not reached (1 of 2)" in cmp.format_table(result)


def test_a_multirun_folder_is_expanded_in_job_order(tmp_path: Path) -> None:
    sweep = tmp_path / "runs" / "multirun-abc"
    # schedule=fixed,triangular trainer.seed=0,1,2 -> jobs 0-2 fixed, 3-5 triangular; then 6-11
    # more triangular seeds, so that job 10 must come after job 2 (numbers, not strings).
    for job in range(12):
        policy = "fixed" if job < 3 else "triangular"
        curve = [(100, 0.5), (200, 0.6 + 0.01 * job)]
        write_run(sweep / str(job), curve, config(policy, job))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "not-a-run").mkdir()
    assert [p.name for p in cmp.find_runs(sweep)] == [str(job) for job in range(12)]
    result = cmp.compare([sweep])
    assert [g.label for g in result.groups] == ["schedule.policy=fixed", "schedule.policy=triangular"]
    assert [r.name for r in result.groups[0].runs] == ["multirun-abc/0", "multirun-abc/1", "multirun-abc/2"]
    assert len(result.groups[1].runs) == 9
    assert result.target == pytest.approx((0.60 + 0.61 + 0.62) / 3, rel=1e-12)
    # A run directory given as well as its folder is compared once.
    assert len(cmp.expand([sweep / "0", sweep])) == 12


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    other = json.dumps({"event": "range_test", "suggestion": None}) + "\n"  # an event without a step
    run = write_run(tmp_path / "run", CLR_CURVE, config(), tail=other + '{"event": "eval", "step": 500, "top1": 0.9')
    metrics = cmp.read_metrics(run / "metrics.jsonl")
    assert [p.step for p in metrics.points] == [100, 200, 300, 400]
    assert metrics.skipped_lines == 1
    assert cmp.compare([run]).rows()[0]["final_top1"] == 0.72


def test_a_resumed_run_keeps_the_last_record_of_a_repeated_step(tmp_path: Path) -> None:
    # Logged to step 300, resumed from a checkpoint at 200: a second start, 300 again, then 400.
    resumed = [
        {"event": "start", "resolved": {"planned_steps": 400, "start_step": 200}, "environment": {}},
        {"event": "train", "step": 300, "lr": 0.01, "loss": 0.9},
        {"event": "eval", "step": 300, "top1": 0.66, "top5": 0.9, "val_loss": 0.8},
        {"event": "cycle_peak", "cycle": 2, "step": 400, "lr": 0.01, "top1": 0.75, "top5": 0.95, "val_loss": 0.7},
    ]
    run = write_run(
        tmp_path / "run",
        [(100, 0.5), (200, 0.6), (300, 0.65)],
        config(),
        tail="".join(json.dumps(r) + "\n" for r in resumed),
    )
    metrics = cmp.read_metrics(run / "metrics.jsonl")
    assert [(p.step, p.top1, p.cycle) for p in metrics.points] == [
        (100, 0.5, None),
        (200, 0.6, None),
        (300, 0.66, None),
        (400, 0.75, 2),
    ]
    assert (metrics.starts, metrics.repeated_steps, metrics.skipped_lines, metrics.last_step) == (2, 1, 0, 400)


def test_the_baseline_may_be_any_run_and_is_compared_too(tmp_path: Path) -> None:
    clr = write_run(tmp_path / "tri2", CLR_CURVE, config("triangular2"))
    base = write_run(tmp_path / "fixed", BASELINE_CURVE, config("fixed"))
    result = cmp.compare([clr], baseline=base)
    assert [g.label for g in result.groups] == ["schedule.policy=fixed", "schedule.policy=triangular2"]
    assert result.baseline.runs[0].path == base and result.target == 0.70
    # Named among the runs as well: still once, and still the baseline.
    again = cmp.compare([clr, base], baseline=base)
    assert [len(g.runs) for g in again.groups] == [1, 1] and again.baseline.runs[0].path == base
    assert again.rows()[1]["reach_iterations"] == 300


def test_runs_without_a_config_are_groups_of_their_own_named_by_folder(tmp_path: Path) -> None:
    a = write_run(tmp_path / "run-a", BASELINE_CURVE)
    b = write_run(tmp_path / "run-b", BASELINE_CURVE)
    result = cmp.compare([a, b])
    assert [g.label for g in result.groups] == ["run-a", "run-b"]
    # One configuration only: nothing differs, so the folder name is the label.
    one = cmp.compare(
        [write_run(tmp_path / "c0", CLR_CURVE, config()), write_run(tmp_path / "c1", CLR_CURVE, config())]
    )
    assert [g.label for g in one.groups] == ["c0"]


def test_a_label_names_the_settings_that_differ_and_stays_short(tmp_path: Path) -> None:
    fixed = config("fixed", schedule={"base_lr": 0.01, "max_lr": 0.06, "stepsize": None})
    tri = config("triangular", schedule={"base_lr": 0.005, "max_lr": 0.05, "stepsize": 20})
    result = cmp.compare([write_run(tmp_path / "f", BASELINE_CURVE, fixed), write_run(tmp_path / "t", CLR_CURVE, tri)])
    # The policy first, then the config's order, until the label is about LABEL_CHARS long.
    assert [g.label for g in result.groups] == [
        "schedule.policy=fixed, schedule.base_lr=0.01 (+2 more)",
        "schedule.policy=triangular, schedule.base_lr=0.005 (+2 more)",
    ]
    assert result.groups[1].settings == {
        "schedule.policy": "triangular",
        "schedule.base_lr": 0.005,
        "schedule.max_lr": 0.05,
        "schedule.stepsize": 20,
    }


def test_a_folder_without_runs_is_one_line_error_before_any_reading(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    good = write_run(tmp_path / "good", CLR_CURVE, config())
    with pytest.raises(UsageError) as error:
        cmp.compare([good, tmp_path / "empty"])
    assert str(error.value) == (
        f"{tmp_path / 'empty'} holds no runs (no metrics.jsonl in it or its subfolders); "
        "give run directories such as runs/<id>"
    )
    with pytest.raises(UsageError, match="no such directory"):
        cmp.compare([tmp_path / "missing"])
    with pytest.raises(UsageError, match="holds no runs"):
        cmp.compare([good], baseline=tmp_path / "empty")
    with pytest.raises(UsageError, match="nothing to compare"):
        cmp.compare([])


def test_a_run_that_never_validated_is_named(tmp_path: Path) -> None:
    never = tmp_path / "never"
    never.mkdir()
    (never / "metrics.jsonl").write_text(
        json.dumps({"event": "start", "resolved": {}}) + "\n" + json.dumps({"event": "train", "step": 50}) + "\n"
    )
    good = write_run(tmp_path / "good", CLR_CURVE, config())
    with pytest.raises(UsageError) as error:
        cmp.compare([good, never])
    message = str(error.value)
    assert message.startswith(f"{never} never validated: its metrics.jsonl has no eval or cycle_peak event")
    assert "last logged step is 50" in message and "\n" not in message


def test_a_baseline_folder_of_several_configurations_is_refused(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "0", BASELINE_CURVE, config("fixed"))
    write_run(tmp_path / "sweep" / "1", CLR_CURVE, config("triangular"))
    with pytest.raises(UsageError, match="holds runs of 2 configurations"):
        cmp.compare([tmp_path / "sweep"], baseline=tmp_path / "sweep")
    # A folder of seeds of one configuration is a fine baseline.
    write_run(tmp_path / "seeds" / "0", BASELINE_CURVE, config("fixed", 0))
    write_run(tmp_path / "seeds" / "1", BASELINE_CURVE, config("fixed", 1))
    result = cmp.compare([tmp_path / "sweep" / "1"], baseline=tmp_path / "seeds")
    assert [len(g.runs) for g in result.groups] == [2, 1]


def test_outputs_are_written_and_read_back(tmp_path: Path) -> None:
    base = write_run(tmp_path / "fixed", BASELINE_CURVE, config("fixed"))
    clr = write_run(tmp_path / "tri2", CLR_CURVE, config("triangular2"), peaks=(200, 400))
    result = cmp.compare([base, clr])
    out = tmp_path / "out"
    written = cmp.write_outputs(result, out)
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.json", "compare.md", "compare.png"]
    assert written["png"].read_bytes()[:8] == PNG_MAGIC
    data = json.loads((out / "compare.json").read_text())
    assert data["baseline"] == {
        "label": "schedule.policy=fixed",
        "runs": [str(base)],
        "final_top1": 0.7,
        "iterations": 1000,
    }
    assert data["band"] == "min-max"
    assert [g["reach_iterations"] for g in data["groups"]] == [1000, 300]
    assert data["groups"][1]["reach_ratio"] == 0.3
    assert data["groups"][1]["settings"] == {"schedule.policy": "triangular2"}
    assert data["groups"][1]["curve"]["peak"] == [False, True, False, True]
    assert [r["path"] for r in data["runs"]] == [str(base), str(clr)]
    assert data["runs"][1]["curve"][1] == {
        "step": 200,
        "top1": 0.69,
        "top5": 0.69 + 0.2,
        "val_loss": 1.0 - 0.69,
        "cycle": 1,
    }
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert list(rows[0]) == cmp.CSV_COLUMNS
    assert [(r["label"], r["baseline"], r["reach_iterations"], r["reach_ratio"]) for r in rows] == [
        ("schedule.policy=fixed", "True", "1000.0", "1.0"),
        ("schedule.policy=triangular2", "False", "300.0", "0.3"),
    ]
    assert rows[1]["final_top1_std"] == ""  # one seed
    md = (out / "compare.md").read_text().splitlines()
    assert md[0] == "| group | seeds | iterations | final top-1 | best top-1 | iterations to 70.00% | ratio |"
    assert md[2] == "| schedule.policy=fixed (baseline) | 1 | 1000 | 70.00% | 70.00% | 1000 | 1.00 |"
    assert md[3] == "| schedule.policy=triangular2 | 1 | 400 | 72.00% | 72.00% | 300 | 0.30 |"
    # --md and --png elsewhere: those two go there, the rest stays in the out folder.
    other = cmp.write_outputs(result, tmp_path / "out2", md=tmp_path / "doc" / "t.md", png=tmp_path / "doc" / "f.png")
    assert other["md"].read_text() == (out / "compare.md").read_text()
    assert other["png"].read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["compare.csv", "compare.json"]


# --- the command, as a user runs it ------------------------------------------------------------


@pytest.mark.slow
def test_the_command_prints_the_table_and_writes_the_outputs(tmp_path: Path) -> None:
    sweep = tmp_path / "runs" / "multirun-x"
    for job, (policy, curve) in enumerate([("fixed", BASELINE_CURVE), ("triangular2", CLR_CURVE)]):
        write_run(sweep / str(job), curve, config(policy))
    result = run_cli(["clr-dist", "compare", "runs/multirun-x", "--out", "cmp", "--md", "table.md"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["group", "seeds", "iterations", "final", "top-1", "best", "top-1"] + [
        "iterations",
        "to",
        "70.00%",
        "ratio",
    ]
    assert lines[2].split() == ["schedule.policy=triangular2", "1", "400", "72.00%", "72.00%", "300", "0.30"]
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["compare.csv", "compare.json", "compare.png"]
    assert (tmp_path / "table.md").read_text().startswith("| group |")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("empty", "clr-dist compare: error: empty holds no runs (no metrics.jsonl in it or its subfolders); "),
        ("never", "clr-dist compare: error: never never validated: "),
        ("none", "clr-dist compare: error: nothing to compare: "),
    ],
)
def test_the_command_errors_are_one_line(tmp_path: Path, setup: str, expected: str) -> None:
    args = []
    if setup == "empty":
        (tmp_path / "empty").mkdir()
        args = ["empty"]
    elif setup == "never":
        (tmp_path / "never").mkdir()
        (tmp_path / "never" / "metrics.jsonl").write_text(json.dumps({"event": "start", "resolved": {}}) + "\n")
        args = ["never"]
    result = run_cli(["clr-dist", "compare", *args], cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "compare").exists()


@pytest.mark.slow
def test_wandb_gets_the_table_and_the_figure(tmp_path: Path) -> None:
    write_run(tmp_path / "fixed", BASELINE_CURVE, config("fixed"))
    write_run(tmp_path / "tri2", CLR_CURVE, config("triangular2"))
    result = run_cli(
        ["clr-dist", "compare", "tri2", "--baseline", "fixed", "--out", "cmp", "--wandb"],
        cwd=tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr
    run = offline_run(tmp_path / "cmp")
    summary = wandb_summary(run)
    assert summary["baseline"] == "schedule.policy=fixed"
    assert summary["target_top1"] == 0.7
    assert summary["groups"] == ["schedule.policy=fixed", "schedule.policy=triangular2"]
    (row,) = wandb_history(run)
    assert row["compare/table._type"] == "table-file"
    assert row["compare/figure._type"] == "image-file"
    # The table and the image as W&B stored them in the offline run.
    table = json.loads((run / "files" / row["compare/table.path"]).read_text())
    assert table["columns"] == cmp.CSV_COLUMNS
    assert [r[0] for r in table["data"]] == ["schedule.policy=fixed", "schedule.policy=triangular2"]
    assert [r[cmp.CSV_COLUMNS.index("reach_iterations")] for r in table["data"]] == [1000, 300]
    assert table["data"][1][cmp.CSV_COLUMNS.index("reach_ratio")] == 0.3
    assert (run / "files" / row["compare/figure.path"]).read_bytes()[:8] == PNG_MAGIC
