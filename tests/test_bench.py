"""Every script in bench/ runs in its smoke mode, started as a user starts it: a renamed attribute
or config key breaks one of these tests, not the next measurement. Each test reads what the script
printed or wrote (ratios that parse to positive numbers, result files with their rows), not only
its exit status.

The Python benchmarks take ``--smoke``; the studies get tiny data, a scratch runs folder and short
runs through their environment (DATA, EXTRA, N, ...), as their headers describe.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clr_dist.data.fashion_mnist import DEFAULT_SOURCE, SOURCE_FILES, convert_fashion_mnist
from tests.conftest import BIN, REPO, compose_train, quick_overrides, run_cli

pytestmark = pytest.mark.slow

BENCH = REPO / "bench"
PYTHON = str(BIN / "python")
SMOKE_LINE = "# smoke run (--smoke)"
# Cycles of 4 steps (stepsize 2) at batch 8 for the demo studies: experiment=demo's 3 cycles are
# 12 steps; the CIFAR-10 net keeps each cycle-end snapshot under a megabyte (AlexNet's is 228 MB).
SHORT_DEMO = "model=cifar10_full data.batch_size=8 schedule.stepsize_epochs=null schedule.stepsize=2"
HAVE_FASHION_MNIST = all(
    (DEFAULT_SOURCE / f"{name}.gz").is_file() or (DEFAULT_SOURCE / name).is_file()
    for names in SOURCE_FILES.values()
    for name in names
)


def run_script(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``bench/ARGS[0] ARGS[1:]`` (Python or bash) from ``cwd``; fails the test, with its output,
    unless it exits 0. The scripts find the package and conf/ from their own path."""
    script = BENCH / args[0]
    command = [shutil.which("bash") or "/bin/bash", str(script)] if script.suffix == ".sh" else [PYTHON, str(script)]
    result = run_cli([*command, *args[1:]], cwd=cwd, env={"VENV": str(BIN.parent), **(env or {})}, timeout=300)
    assert result.returncode == 0, f"{args[0]} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def numbers(line: str) -> list[float]:
    """The numbers in a report line, in order."""
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", line)]


def report_line(output: str, start: str) -> str:
    """The one line of ``output`` that starts with ``start`` (after leading spaces)."""
    lines = [line for line in output.splitlines() if line.lstrip().startswith(start)]
    assert len(lines) == 1, f"expected one line starting {start!r}, found {lines} in\n{output}"
    return lines[0]


def table_row(output: str, name: str) -> list[float]:
    """The numbers of the one table row of ``output`` whose first cell is ``name`` and whose other
    cells are all numbers."""
    rows = []
    for line in output.splitlines():
        first, *cells = line.split() or [""]
        if first == name and cells and all(re.fullmatch(r"-?\d+(\.\d+)?", cell) for cell in cells):
            rows.append([float(cell) for cell in cells])
    assert len(rows) == 1, f"expected one table row for {name!r}, found {rows} in\n{output}"
    return rows[0]


def positive(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(v) and v > 0 for v in values)


def test_schedule_cost_smoke(tmp_path: Path) -> None:
    out = run_script(["schedule_cost.py", "--smoke"], tmp_path).stdout
    assert out.startswith(SMOKE_LINE) and "1000 steps x 1 repeats" in out
    for policy in ("triangular", "triangular2", "exp_range_amplitude"):
        ours, theirs, ratio = table_row(out, policy)
        assert positive([ours, theirs, ratio])
        assert ratio == pytest.approx(ours / theirs, abs=0.01)


def test_loader_throughput_smoke(tmp_path: Path) -> None:
    out = run_script(["loader_throughput.py", "--smoke"], tmp_path).stdout
    assert SMOKE_LINE in out and "1 threads, batch 8, 64px JPEGs -> 224 crops" in out
    medians = {}
    for loader in ("torchvision", "dali"):
        assert len([line for line in out.splitlines() if line.startswith(f"  repeat 1 {loader:>11}:")]) == 1
        median, low, high = numbers(report_line(out, f"{loader}: median"))
        assert positive([median, low, high]) and low == median == high  # one repeat
        medians[loader] = median
    (ratio,) = numbers(report_line(out, "ratio dali/torchvision:").split(":")[1])
    assert ratio == pytest.approx(medians["dali"] / medians["torchvision"], abs=0.01)


def test_data_efficiency_smoke(tmp_path: Path) -> None:
    out = run_script(["data_efficiency.py", "--smoke"], tmp_path).stdout
    assert SMOKE_LINE in out and "batch 8, 64px" in out
    for side in ("dali", "synthetic"):
        assert positive(numbers(report_line(out, f"alexnet repeat 1 {side:>9}:").split(":")[1]))
    dali, synthetic, ratio = table_row(out, "alexnet")
    assert positive([dali, synthetic, ratio])
    assert ratio == pytest.approx(dali / synthetic, rel=0.05)  # from rounded rates: a few % off


def test_decode_ceiling_smoke(tmp_path: Path) -> None:
    """The CPU decoder alone over generated ImageNet-sized JPEGs."""
    out = run_script(["decode_ceiling.py", "--smoke", "--json", str(tmp_path / "decode.json")], tmp_path).stdout
    assert SMOKE_LINE in out and "1 threads, batch 8, crop area 0.08-1 -> 224px, 1 + 2 batches" in out
    assert "16 generated JPEGs (500x375 and 375x500, quality 90" in out
    assert positive(numbers(report_line(out, "repeat 1   cpu:").split(":")[1]))
    median, low, high = numbers(report_line(out, "cpu: median"))
    assert positive([median, low, high]) and low == median == high  # one repeat
    record = json.loads((tmp_path / "decode.json").read_text())
    assert record["median"] == {"cpu": pytest.approx(median, abs=0.051)} and record["settings"]["devices"] == ["cpu"]


def test_trainer_overhead_smoke(tmp_path: Path) -> None:
    """Times Trainer.fit() through its probes (train_batches, evaluate) against the bare loop."""
    out = run_script(["trainer_overhead.py", "--smoke", "--json", str(tmp_path / "overhead.json")], tmp_path).stdout
    assert SMOKE_LINE in out and "model=alexnet batch=8 steps=3 (first 1 untimed) threads=1" in out
    rows = {side: table_row(out, side) for side in ("trainer", "bare")}
    for side, (median, low, high, quartile_step) in rows.items():
        assert positive([median, low, high, quartile_step]) and low == median == high, side
    ratio, step_ratio = numbers(report_line(out, "ratio trainer/bare").split("bare", 1)[1])
    assert positive([ratio, step_ratio])
    record = json.loads((tmp_path / "overhead.json").read_text())
    assert record["settings"]["smoke"] is True
    assert (record["settings"]["steps"], record["settings"]["timed_steps"], record["settings"]["repeats"]) == (3, 2, 1)
    for side in ("trainer", "bare"):
        assert len(record["step_seconds"][side]) == 2 and positive(record["step_seconds"][side])
        assert record["seconds"][side] == [pytest.approx(sum(record["step_seconds"][side]))]
    assert record["ratio_trainer_over_bare"] == pytest.approx(ratio, abs=0.0011)


@pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler"
)
def test_compile_speed_smoke(tmp_path: Path) -> None:
    """Eager and compiled sides of the real Trainer; the compiled side's first step (the
    compilation) is reported apart from its images/s."""
    out = run_script(["compile_speed.py", "--smoke"], tmp_path).stdout
    assert SMOKE_LINE in out and "batch 16, 32px, precision auto, trainer.compile=default" in out
    eager, compiled, ratio, compile_s = table_row(out, "cifar10_full")
    assert positive([eager, compiled, ratio, compile_s])
    assert ratio == pytest.approx(compiled / eager, rel=0.05)  # from rounded rates
    (compiled_line,) = [line for line in out.splitlines() if "repeat 1 compiled: first step" in line]
    assert numbers(compiled_line.split("first step")[1])[0] == pytest.approx(compile_s, abs=0.051)


def markdown_row(report: str, first: str) -> list[str]:
    """The cells of the one Markdown table row of ``report`` whose first cell is ``first``."""
    rows = [line.strip("|").split(" | ") for line in report.splitlines() if line.startswith(f"| {first} |")]
    assert len(rows) == 1, f"expected one row for {first!r}, found {rows} in\n{report}"
    return [cell.strip() for cell in rows[0]]


def section(report: str, number: int) -> str:
    """The body of the report's section ``## <number>. <title>``, up to the next one."""
    return report.split(f"\n## {number}. ", 1)[1].split("\n## ", 1)[0].split("\n", 1)[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="reads a CPU machine's report; on a GPU run bench/gpu_check.sh")
def test_gpu_check_smoke(tmp_path: Path) -> None:
    """bench/gpu_check.sh end to end without CUDA: the report lands under $OUT and is printed,
    every GPU part says it did not run for want of CUDA, and the CPU parts' figures parse, each
    with its ratio to the synthetic figure of the same run."""
    out = run_script(["gpu_check.sh", "--smoke"], tmp_path, {"OUT": str(tmp_path / "out")}).stdout
    report = (tmp_path / "out" / "gpu_report.md").read_text()
    assert out == report
    assert "- mode: smoke (tiny sizes" in report and "verdict: nothing failed" in report
    assert "failed:" not in report

    assert section(report, 1).strip().splitlines()[0] == "not run: no CUDA device (torch.cuda.is_available() is False)"

    model, batch, synthetic, dali, dali_cpu, torchvision, seconds = markdown_row(report, "alexnet")
    assert batch == "8" and positive(numbers(synthetic)) and numbers(seconds)
    assert dali == "not run: no CUDA device"
    for cell in (dali_cpu, torchvision):
        value, ratio = numbers(cell)
        assert positive([value, ratio]) and cell.endswith("x)")
        assert ratio == pytest.approx(value / float(synthetic), rel=0.03, abs=0.011)  # from rounded rates

    if shutil.which("c++") or shutil.which("g++"):
        model, batch, eager, compiled, ratio, compile_s, seconds = markdown_row(report, "cifar10_full")
        assert positive(numbers(eager) + numbers(compiled) + numbers(ratio) + numbers(compile_s))
        assert numbers(ratio)[0] == pytest.approx(float(compiled) / float(eager), rel=0.05)
    else:
        assert "not run: no C++ compiler" in section(report, 3)

    mixed = markdown_row(report, "mixed (nvJPEG on the GPU)")
    assert mixed[1] == "not run: no CUDA device"
    decoder, ceiling, per_alexnet, seconds = markdown_row(report, "cpu (libjpeg-turbo)")
    assert positive(numbers(ceiling) + numbers(per_alexnet))
    assert numbers(per_alexnet)[0] == pytest.approx(float(ceiling) / float(synthetic), rel=0.03, abs=0.011)

    for part in ("1. GPU tests", "2. Training images/s", "3. Eager against compiled", "4. DALI decoder ceiling"):
        (row,) = [line for line in report.splitlines() if line.startswith(f"| {part}")]
        assert len(numbers(row.split("|")[-2])) == 1
    assert report.count("<details>") == 4  # the folder, the data sides, the decoder, the compile


def test_gpu_check_says_why_a_part_cannot_run(tmp_path: Path) -> None:
    """Without CUDA, DALI, pytest, triton or a compiler, or with the budget spent, a part is one
    "not run: <reason>" line and nothing is started."""
    import dataclasses

    from bench import gpu_check

    check = gpu_check.Check(sys.executable, gpu_check.SMOKE_SIZES, tmp_path)
    no_dali = "ModuleNotFoundError: No module named 'nvidia'"
    cpu = {"cuda": False, "errors": {"dali": no_dali}, "c": [], "cxx": []}
    assert gpu_check.gpu_tests(check, cpu)[0] == ["not run: no CUDA device (torch.cuda.is_available() is False)"]
    assert gpu_check.compile_speed(check, cpu, smoke=True)[0][0].startswith("not run: no C++ compiler")
    lines, _ = gpu_check.decode_ceiling(check, cpu, tmp_path, "a folder", 1, {})
    assert [line.split(" | ")[1] for line in lines if line.startswith("| mixed") or line.startswith("| cpu")] == [
        f"not run: DALI does not import ({no_dali})"
    ] * 2

    gpu = {"cuda": True, "errors": {"pytest": "ModuleNotFoundError: No module named 'pytest'"}, "c": [], "cxx": []}
    assert gpu_check.gpu_tests(check, gpu)[0][0].startswith("not run: pytest does not import (ModuleNotFoundError")
    assert gpu_check.compile_speed(check, gpu, smoke=False)[0][0].startswith("not run: no C compiler")
    gpu["errors"]["triton"] = "ModuleNotFoundError: No module named 'triton'"
    assert gpu_check.compile_speed(check, gpu, smoke=False)[0][0].startswith("not run: triton does not import")
    assert check.runs == [] and not check.failed

    spent = gpu_check.Check(sys.executable, dataclasses.replace(gpu_check.SMOKE_SIZES, budget_s=0), tmp_path)
    assert spent.run("anything", "data", ["-c", "pass"]).status == "not run: the 0 s budget was spent"
    assert not spent.failed


def test_reading_study_reads_a_range_test_as_the_range_test_did(tmp_path: Path, small_demo: Path) -> None:
    from clr_dist.range_test import range_test

    overrides = [
        "model=cifar10_full",
        "data.batch_size=8",
        "range_test.steps=12",
        "range_test.epochs=null",
        "range_test.eval_every=2",
        "range_test.eval_images=30",
    ]
    result = range_test(compose_train(quick_overrides(small_demo, *overrides)), tmp_path / "rt")
    out = run_script(["reading_study.py", str(tmp_path / "rt" / "range_test.json")], tmp_path).stdout
    assert "cifar10_full, 12 steps, LR 0.0001 -> 0.1, 6 evaluations of 30 images" in out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "curve" not in line]
    rows = [[cell.strip() for cell in row] for row in rows]
    curves = ["accuracy, ragged 0.2"] * 3 + ["accuracy"] * 3 + ["loss"] * 3
    assert [row[0] for row in rows] == curves
    # The range test read its curves with the same defaults (ragged 0.2 for accuracy): the
    # study's rows for those readings give its max_lr, and base_lr by each rule.
    assert result["readings"]["loss"] is not None  # a 12-step sweep to LR 0.1 lowers the loss somewhere
    for curve, first in (("accuracy", 0), ("loss", 6)):
        reading = result["readings"][curve]
        for row, rule in zip(rows[first : first + 3], ("range", "third", "quarter")):
            # "range" falls back to "quarter" when the curve's base_lr is not below its max_lr.
            assert row[1] == rule or (rule, row[1]) == ("range", "quarter"), row
            if reading is None:
                assert row[2:] == ["-", "-"], row
                continue
            base, top = float(row[2]), float(row[3])
            assert positive([base, top]) and base < top
            assert top == pytest.approx(reading["max_lr"], rel=1e-3)
            expected = {"range": reading["base_lr"], "third": top / 3, "quarter": top / 4}[row[1]]
            assert base == pytest.approx(expected, rel=1e-3)


def test_bounds_grid_smoke(tmp_path: Path, small_demo: Path) -> None:
    runs = tmp_path / "runs"
    env = {"DATA": str(small_demo), "BASES": "0.005", "MAXES": "0.02 0.004", "SEEDS": "0", "EXTRA": SHORT_DEMO}
    out = run_script(["bounds_grid.sh"], tmp_path, env).stdout
    # 0.005 >= 0.004 is skipped: one cell, its 3 cycle-end top-1 values and its time.
    (line,) = (runs / "grid-results.tsv").read_text().splitlines()
    assert line in out.splitlines()
    base, top, seed, top1, seconds = line.split("\t")
    assert (base, top, seed) == ("0.005", "0.02", "0")
    assert len(top1.split()) == 3 and all(0 <= float(t) <= 1 for t in top1.split()) and seconds.endswith("s")
    with open(runs / "grid-b0.005-m0.02-s0" / "cycle_peaks.csv") as f:
        peaks = list(csv.DictReader(f))
    assert [int(p["step"]) for p in peaks] == [4, 8, 12]
    assert [p["top1"] for p in peaks] == top1.split()
    # Resumable: the finished cell is not trained again.
    again = run_script(["bounds_grid.sh"], tmp_path, env).stdout
    assert again.splitlines() == ["skip grid-b0.005-m0.02-s0 (done)"]


def test_cycle_ends_study_smoke(tmp_path: Path, small_demo: Path) -> None:
    runs = tmp_path / "runs"
    env = {"DATA": str(small_demo), "SEEDS": "0", "ALPHAS": "0,1", "TRAIN_IMAGES": "16", "EXTRA": SHORT_DEMO}
    out = run_script(["cycle_ends_study.sh"], tmp_path, env).stdout
    run_dir = runs / "ce-demo-s0"
    interpolated = run_dir / "interpolate-cycle-3-cycle-2"
    assert "trained ce-demo-s0" in out and f"interpolated {interpolated}" in out and "failed" not in out
    assert sorted(p.name for p in (run_dir / "snapshots").glob("*.pt")) == [
        "step-00000004-cycle-001.pt",
        "step-00000008-cycle-002.pt",
        "step-00000012-cycle-003.pt",
    ]
    ensemble = json.loads((run_dir / "ensemble.json").read_text())
    assert ensemble["cycles"] == [1, 2, 3]
    assert [row["what"] for row in ensemble["rows"]] == [
        "cycle 1",
        "cycle 2",
        "cycle 3",
        "ensemble of 3 (mean softmax)",
        "average of 3 (weights)",
    ]
    assert all(0 <= row["top1"] <= 1 and row["val_loss"] > 0 for row in ensemble["rows"])
    with open(interpolated / "interpolation.csv") as f:
        line = list(csv.DictReader(f))
    assert [float(row["alpha"]) for row in line] == [0.0, 1.0]
    assert all(positive([float(row["train_loss"]), float(row["val_loss"])]) for row in line)
    # alpha 1 is A (cycle 3) alone: its validation loss is the ensemble table's cycle 3.
    assert float(line[1]["val_loss"]) == pytest.approx(ensemble["rows"][2]["val_loss"], rel=1e-4)


@pytest.mark.skipif(
    not HAVE_FASHION_MNIST,
    reason=f"no Fashion-MNIST under {DEFAULT_SOURCE}: run tools/install-debian-deps.sh as root "
    f"(apt-get install dataset-fashion-mnist)",
)
def test_fashion_study_smoke(tmp_path: Path) -> None:
    data, runs = tmp_path / "fashion-mnist", tmp_path / "runs"
    convert_fashion_mnist(data, limit_per_class=10)  # 100 training and 100 validation images
    env = {"N": "14", "RUNS": str(runs), "DATA": str(data), "PY": PYTHON, "EXTRA": "data.batch_size=20"}

    out = run_script(["fashion_study.py", "fixed"], tmp_path, env).stdout
    assert re.fullmatch(r"fm-fixed-n14-s0: done in \d+ s\n", out)
    events = [json.loads(line) for line in (runs / "fm-fixed-n14-s0" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "eval"] == list(range(1, 15))  # N // 20 is 0: every step
    # cifar10_fixed's drops at 60/70 and 65/70 of N (steps 12 and 13): 0.001 -> 1e-4 -> 1e-5.
    assert [e["lr"] for e in events if e["event"] == "train"][-1] == pytest.approx(1e-5)
    assert run_script(["fashion_study.py", "fixed"], tmp_path, env).stdout == "skip fm-fixed-n14-s0 (done)\n"

    out = run_script(["fashion_study.py", "clr", "--bounds", "0.002", "0.006"], tmp_path, env).stdout
    assert re.fullmatch(r"fm-clr-n14-b0\.002-m0\.006-s0: done in \d+ s\n", out)
    with open(runs / "fm-clr-n14-b0.002-m0.006-s0" / "cycle_peaks.csv") as f:
        peaks = list(csv.DictReader(f))
    # Table 2's three stages scaled to N=14: 4, 3 and 3 cycles of 1-step stepsizes.
    assert [int(p["step"]) for p in peaks] == list(range(2, 21, 2))

    out = run_script(["fashion_study.py", "range-test", "--epochs", "1"], tmp_path, env).stdout
    assert re.fullmatch(r"fm-rt-e1-0\.0001-0\.02: done in \d+ s\n", out)
    result = json.loads((runs / "fm-rt-e1-0.0001-0.02" / "range_test.json").read_text())
    assert result["settings"]["model"] == "cifar10_full" and result["settings"]["steps"] == 5  # 100 images / 20
    assert result["curve"]["lr"][0] == pytest.approx(1e-4) and result["curve"]["lr"][-1] == pytest.approx(0.02)
