"""Issue 12's GPU check, run by bench/gpu_check.sh (its header says how): the ``gpu``-marked tests,
training images/s by data side, eager against compiled, and the DALI decoder's ceiling, written
as one Markdown report.

Standard library only: each measurement is a child process (a bench/ script) with its own time
limit inside one overall budget, so that whatever cannot run, because the machine lacks CUDA,
DALI, pytest or a compiler, or because the budget is spent, becomes a ``not run: <reason>`` cell,
and whatever breaks (a crash, a failing test, a part killed at its limit) a ``failed: <reason>``
cell: the report always has every section. The exit status is 1 when something failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SIDES = {  # data_efficiency.py's sides and their column titles
    "dali": "dali, GPU decoding",
    "dali_cpu": "dali_cpu",
    "torchvision": "torchvision",
}


@dataclass(frozen=True)
class Sizes:
    """How big each part is; full_sizes() fits issue 12's 8 minutes on one H100/H200."""

    batches: dict[str, int]  # model -> batch, for the data sides and the compile part
    image_size: int
    # Multiples of the DataLoader workers (data_efficiency.py says why).
    warmup_steps: int
    steps: int
    unique_images: int
    classes: int
    decode_batch: int
    decode_batches: int
    budget_s: float  # the whole run
    limits_s: dict[str, float] = field(default_factory=dict)  # per child process, by part


def full_sizes(workers: int) -> Sizes:
    return Sizes(
        batches={"alexnet": 256, "googlenet": 128, "resnet50": 256},
        image_size=224,
        warmup_steps=workers,
        steps=2 * workers,
        unique_images=256,
        classes=1000,
        decode_batch=256,
        decode_batches=20,
        budget_s=450,
        limits_s={"tests": 180, "folder": 60, "data": 120, "decode": 60, "compile": 200},
    )


SMOKE_SIZES = Sizes(
    batches={"alexnet": 8},
    image_size=64,
    warmup_steps=1,
    steps=2,
    unique_images=16,
    classes=10,
    decode_batch=8,
    decode_batches=2,
    # Generous: the test suite runs this on two busy cores.
    budget_s=1200,
    limits_s={"tests": 300, "folder": 120, "data": 300, "decode": 180, "compile": 300},
)

# What the environment probe prints: versions and what imports, without failing on anything.
PROBE = r"""
import importlib, json, os, platform, shutil
info = {"python": platform.python_version(), "cpus": os.cpu_count(), "errors": {}}
for name, module in (("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"), ("hydra", "hydra"),
                     ("dali", "nvidia.dali"), ("pytest", "pytest"), ("triton", "triton"), ("PIL", "PIL")):
    try:
        info[name] = getattr(importlib.import_module(module), "__version__", "?")
    except Exception as exc:
        info["errors"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
info["shm_gib"] = shutil.disk_usage("/dev/shm").free / 2**30 if os.path.isdir("/dev/shm") else None
info["cuda"] = False
if "torch" in info:
    import torch
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["gpu"], info["cuda_version"] = torch.cuda.get_device_name(), torch.version.cuda
        info["bf16"] = torch.cuda.is_bf16_supported()
info["c"] = [c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)]
info["cxx"] = [c for c in (os.environ.get("CXX"), "c++", "g++", "clang++") if c and shutil.which(c)]
print(json.dumps(info))
"""


@dataclass
class Ran:
    """A child process's end: ``status`` is ``ok``, ``failed: ...`` or ``not run: ...``."""

    status: str
    output: str
    seconds: float
    command: list[str]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Check:
    """Runs the children within the budget and keeps what the report shows of each."""

    def __init__(self, python: str, sizes: Sizes, work: Path) -> None:
        self.python, self.sizes, self.work = python, sizes, work
        self.start = time.monotonic()
        self.runs: list[tuple[str, Ran]] = []  # (what, run), for the report's log
        self.failed = False
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }

    def left_s(self) -> float:
        return self.sizes.budget_s - (time.monotonic() - self.start)

    def run(self, what: str, part: str, args: list[str]) -> Ran:
        """``python ARGS`` from the repository, killed (with its children) at the part's limit or
        when the budget runs out, whichever comes first."""
        command = [self.python, *args]
        limit = min(self.sizes.limits_s[part], self.left_s())
        if limit < 10:
            ran = Ran(f"not run: the {self.sizes.budget_s:.0f} s budget was spent", "", 0.0, command)
            self.runs.append((what, ran))
            return ran
        print(f"gpu_check: {what} (limit {limit:.0f} s) ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        # A session of its own: on time-out the whole group goes (DataLoader workers, compilers).
        with subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as child:
            try:
                output, _ = child.communicate(timeout=limit)
                status = "ok" if child.returncode == 0 else f"failed: exited {child.returncode}: {last_error(output)}"
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                output, _ = child.communicate()
                if limit < self.sizes.limits_s[part]:
                    status = f"not run: the {self.sizes.budget_s:.0f} s budget ran out ({limit:.0f} s into it)"
                else:
                    status = f"failed: killed at its {limit:.0f} s limit"
        ran = Ran(status, output, time.monotonic() - start, command)
        print(f"gpu_check: {what}: {status} in {ran.seconds:.0f} s", file=sys.stderr, flush=True)
        self.runs.append((what, ran))
        self.failed |= status.startswith("failed")
        return ran


def last_error(output: str) -> str:
    """The line of a child's output that says why it failed: the last exception line, else the
    last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line)]
    return (errors or lines or ["no output"])[-1][:300]


def cell_text(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell_text(cell) for cell in row) + " |" for row in rows]


def rate(value: float | None, reference: float | None) -> str:
    """``images/s (ratio x)``, the ratio against ``reference`` when there is one."""
    if value is None:
        return "-"
    return f"{value:.1f} ({value / reference:.2f}x)" if reference else f"{value:.1f} (no synthetic figure)"


# -- the parts ------------------------------------------------------------------------------------


def gpu_tests(check: Check, probe: dict) -> tuple[list[str], float]:
    if "torch" in probe["errors"]:
        return [f"not run: torch does not import ({probe['errors']['torch']})"], 0.0
    if not probe["cuda"]:
        return ["not run: no CUDA device (torch.cuda.is_available() is False)"], 0.0
    for needed in ("pytest", "hydra"):
        if needed in probe["errors"]:
            return [f"not run: {needed} does not import ({probe['errors'][needed]}); see bench/gpu_check.sh"], 0.0
    ran = check.run("1. pytest -m gpu", "tests", ["-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"])
    found = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b", summary_line(ran.output))
    counts = {{"errors": "error"}.get(word, word): int(n) for n, word in found}
    if not counts:
        return [ran.status if not ran.ok else "failed: pytest printed no summary"], ran.seconds
    verdict = "passed" if not counts.get("failed") and not counts.get("error") else "FAILED"
    if verdict == "FAILED":
        check.failed = True
    lines = [f"**{verdict}**: " + ", ".join(f"{n} {word}" for word, n in counts.items()) + f" ({ran.seconds:.0f} s)"]
    lines += [f"- `{line}`" for line in ran.output.splitlines() if re.match(r"(FAILED|ERROR|SKIPPED) ", line)]
    return lines, ran.seconds


def summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|errors?|skipped)\b", line)]
    return lines[-1] if lines else ""


def make_folder(check: Check) -> tuple[Path | None, str]:
    """bench/imagenet_like.py's folder, with a name for every step of a run and a batch more."""
    sizes, root = check.sizes, check.work / "imagenet-like"
    images = (sizes.warmup_steps + sizes.steps + 1) * max(sizes.batches.values())
    ran = check.run(
        "2. image folder",
        "folder",
        [str(BENCH / "imagenet_like.py"), str(root)]
        + ["--unique", str(sizes.unique_images), "--train-images", str(images), "--classes", str(sizes.classes)],
    )
    return (root, ran.output.strip().splitlines()[-1]) if ran.ok else (None, ran.status)


def data_sides(
    check: Check, probe: dict, root: Path | None, folder: str, workers: int
) -> tuple[list[str], float, dict[str, float]]:
    """Section 2, and each model's synthetic images/s (for the decoder's ratios)."""
    sizes = check.sizes
    precision = "bf16" if probe["cuda"] else "auto"
    unavailable = {}
    if "dali" in probe["errors"]:
        unavailable["dali"] = unavailable["dali_cpu"] = f"not run: DALI does not import ({probe['errors']['dali']})"
    elif not probe["cuda"]:
        unavailable["dali"] = "not run: no CUDA device"
    sides = ["synthetic", *(side for side in SIDES if side not in unavailable)]
    lines = [
        f"Training images/s of the Trainer (SGD step, trainer.precision={precision}, channels-last on CUDA) at "
        f"{sizes.image_size} px, {sizes.warmup_steps} warm-up + {sizes.steps} timed steps, 1 repeat, "
        f"DALI threads = DataLoader workers = {workers}; each side's ratio is against synthetic data measured "
        f"in the same process. Data: {folder}.",
        "",
    ]
    header = ["model", "batch", "synthetic img/s", *SIDES.values(), "seconds"]
    rows, synthetic, seconds = [], {}, 0.0
    for model, batch in sizes.batches.items():
        if root is None:
            rows.append([model, str(batch), *[f"not run: no image folder ({folder})"] * (1 + len(SIDES)), "0"])
            continue
        out = check.work / f"data-{model}.json"
        ran = check.run(
            f"2. data sides, {model}",
            "data",
            [str(BENCH / "data_efficiency.py"), "--root", str(root), "--models", model]
            + ["--batch-size", str(batch), "--image-size", str(sizes.image_size), "--precision", precision]
            + ["--steps", str(sizes.steps), "--warmup-steps", str(sizes.warmup_steps), "--repeats", "1"]
            + ["--workers", str(workers), "--sides", ",".join(sides), "--keep-going", "--json", str(out)],
        )
        seconds += ran.seconds
        if not ran.ok:
            rows.append([model, str(batch), *[ran.status] * (1 + len(SIDES)), f"{ran.seconds:.0f}"])
            continue
        record = json.loads(out.read_text())
        medians, failed = record["median"][model], record["failed"][model]
        check.failed |= bool(failed)
        reference = medians.get("synthetic")
        if reference is not None:
            synthetic[model] = reference
        cells = [f"{reference:.1f}" if reference is not None else f"failed: {failed.get('synthetic')}"]
        for side in SIDES:
            if side in unavailable:
                cells.append(unavailable[side])
            elif side in failed:
                cells.append(f"failed: {failed[side]}")
            else:
                cells.append(rate(medians[side], reference))
        rows.append([model, str(batch), *cells, f"{ran.seconds:.0f}"])
    return lines + table(header, rows), seconds, synthetic


def compile_speed(check: Check, probe: dict, smoke: bool) -> tuple[list[str], float]:
    sizes = check.sizes
    if "torch" in probe["errors"]:
        return [f"not run: torch does not import ({probe['errors']['torch']})"], 0.0
    if probe["cuda"]:
        if "triton" in probe["errors"]:
            return [f"not run: triton does not import ({probe['errors']['triton']}); inductor needs it on CUDA"], 0.0
        if not probe["c"]:
            return ["not run: no C compiler (CC, cc, gcc or clang) for triton's kernel launchers"], 0.0
    elif not probe["cxx"]:
        return ["not run: no C++ compiler (CXX, c++, g++ or clang++) for inductor's CPU kernels"], 0.0
    header = ["model", "batch", "eager img/s", "compiled img/s", "compiled/eager", "compile s", "seconds"]
    if smoke:
        # The shapes the test suite compiles anyway (tests/test_compile.py): read from the cache.
        lines = [
            "Smoke mode: bench/compile_speed.py --smoke (cifar10_full, 32 px, batch 16, the compile "
            "cache's shapes) instead of the three models at 224 px.",
            "",
        ]
        runs = {"cifar10_full": (16, ["--smoke"])}
    else:
        lines = [
            f"bench/compile_speed.py: synthetic data, {sizes.image_size} px, bf16, 3 warm-up steps (the "
            'first compiles: "compile s") + 10 timed, 1 repeat, trainer.compile=default against off.',
            "",
        ]
        runs = {
            model: (batch, ["--models", model, "--batch-size", str(batch), "--image-size", str(sizes.image_size)])
            for model, batch in sizes.batches.items()
        }
        common = ["--precision", "bf16", "--steps", "10", "--warmup-steps", "3", "--repeats", "1"]
        runs = {model: (batch, args + common) for model, (batch, args) in runs.items()}
    rows, seconds = [], 0.0
    for model, (batch, args) in runs.items():
        ran = check.run(f"3. compile, {model}", "compile", [str(BENCH / "compile_speed.py"), *args])
        seconds += ran.seconds
        row = table_row(ran.output, model) if ran.ok else None
        if row is None:
            status = ran.status if not ran.ok else "failed: no table row in compile_speed.py's output"
            check.failed |= ran.ok
            rows.append([model, str(batch), *[status] * 4, f"{ran.seconds:.0f}"])
            continue
        eager, compiled, ratio, compile_s = row
        rows.append(
            [model, str(batch), f"{eager:.1f}", f"{compiled:.1f}", f"{ratio:.2f}x", f"{compile_s:.1f}"]
            + [f"{ran.seconds:.0f}"]
        )
    return lines + table(header, rows), seconds


def table_row(output: str, first: str) -> list[float] | None:
    """The numbers of the table row of ``output`` that starts with ``first``."""
    for line in output.splitlines():
        name, *cells = line.split() or [""]
        if name == first and cells and all(re.fullmatch(r"-?\d+(\.\d+)?", cell) for cell in cells):
            return [float(cell) for cell in cells]
    return None


def decode_ceiling(
    check: Check, probe: dict, root: Path | None, folder: str, workers: int, synthetic: dict[str, float]
) -> tuple[list[str], float]:
    sizes = check.sizes
    names = {"mixed": "mixed (nvJPEG on the GPU)", "cpu": "cpu (libjpeg-turbo)"}
    unavailable = {}
    if "dali" in probe["errors"]:
        unavailable = dict.fromkeys(names, f"not run: DALI does not import ({probe['errors']['dali']})")
    elif not probe["cuda"]:
        unavailable["mixed"] = "not run: no CUDA device"
    if root is None:
        unavailable = dict.fromkeys(names, f"not run: no image folder ({folder})")
    devices = [device for device in names if device not in unavailable]
    lines = [
        f"bench/decode_ceiling.py: DALI's reader, decoder with the random-resized crop and the resize to "
        f"{sizes.image_size} px alone (no flip, normalisation or model), batch {sizes.decode_batch}, "
        f'{sizes.decode_batches} timed batches, threads: {workers}. "÷ model" is the ceiling over that model\'s '
        "synthetic-data images/s of section 2: below 1, the decoder alone cannot feed the model.",
        "",
    ]
    header = ["decoder", "images/s", *(f"÷ {model}" for model in sizes.batches), "seconds"]
    results, seconds, status = {}, 0.0, {}
    if devices:
        out = check.work / "decode.json"
        ran = check.run(
            "4. decode ceiling",
            "decode",
            [str(BENCH / "decode_ceiling.py"), "--root", str(root), "--devices", ",".join(devices)]
            + ["--batch-size", str(sizes.decode_batch), "--batches", str(sizes.decode_batches)]
            + ["--warmup-batches", "5" if sizes.decode_batches > 5 else "1", "--repeats", "1"]
            + ["--threads", str(workers), "--image-size", str(sizes.image_size), "--json", str(out)],
        )
        seconds = ran.seconds
        if ran.ok:
            results = json.loads(out.read_text())["median"]
        else:
            status = dict.fromkeys(devices, ran.status)
    rows = []
    for device, name in names.items():
        if device in results:
            ceiling = results[device]
            ratios = [f"{ceiling / synthetic[m]:.2f}x" if m in synthetic else "-" for m in sizes.batches]
            rows.append([name, f"{ceiling:.1f}", *ratios, f"{seconds:.0f}"])
        else:
            reason = unavailable.get(device) or status.get(device, "failed: no result")
            rows.append([name, reason, *["-"] * len(sizes.batches), f"{seconds if device in status else 0:.0f}"])
    return lines + table(header, rows), seconds


# -- the report -----------------------------------------------------------------------------------


def revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def describe_machine(probe: dict) -> str:
    gpu = f"{probe['gpu']} (CUDA {probe['cuda_version']})" if probe["cuda"] else "no CUDA device"
    versions = ", ".join(f"{name} {probe[name]}" for name in ("torch", "torchvision", "timm", "dali") if name in probe)
    # DataLoader workers hand batches over in shared memory: a small /dev/shm breaks torchvision.
    shm = f"; /dev/shm {probe['shm_gib']:.1f} GiB free" if probe.get("shm_gib") is not None else ""
    return f"{gpu}; {probe['cpus']} CPUs{shm}; Python {probe['python']}; {versions}"


def log_lines(check: Check) -> list[str]:
    """Every child's command line, status and output tail, folded."""
    lines = []
    for what, ran in check.runs:
        tail = "\n".join(ran.output.rstrip().splitlines()[-40:])
        command = " ".join(str(arg).replace(str(REPO) + "/", "") for arg in ran.command)
        lines += [
            f"<details><summary>{what}: {ran.status} ({ran.seconds:.0f} s)</summary>",
            "",
            f"`{command}`",
            "",
            "```",
            tail,
            "```",
            "</details>",
            "",
        ]
    return lines


def probe_environment() -> dict:
    """Versions, CUDA, compilers; a probe that cannot even start reads as torch not importing."""
    probe_run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO)
    try:
        return json.loads(probe_run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        reason = f"the probe failed: {last_error(probe_run.stdout + probe_run.stderr)}"
        return {"python": "?", "cpus": os.cpu_count(), "cuda": False, "c": [], "cxx": [], "errors": {"torch": reason}}


def run_parts(check: Check, probe: dict, smoke: bool, workers: int) -> dict[str, tuple[list[str], float]]:
    """Each section's lines and elapsed seconds, by its number. The cheapest and most telling
    parts run first and the compiles, the longest, last, so a spent budget costs the least."""
    sections = {"1": guarded(check, lambda: gpu_tests(check, probe))}
    missing = [name for name in ("torch", "hydra") if name in probe["errors"]]
    if missing:
        reason = f"not run: {missing[0]} does not import ({probe['errors'][missing[0]]})"
        return sections | dict.fromkeys("234", ([reason], 0.0))
    start = time.monotonic()
    root, folder = make_folder(check)
    folder_s = time.monotonic() - start
    synthetic: dict[str, float] = {}

    def sides() -> tuple[list[str], float]:
        lines, seconds, rates = data_sides(check, probe, root, folder, workers)
        synthetic.update(rates)
        return lines, folder_s + seconds

    sections["2"] = guarded(check, sides)
    sections["4"] = guarded(check, lambda: decode_ceiling(check, probe, root, folder, workers, synthetic))
    sections["3"] = guarded(check, lambda: compile_speed(check, probe, smoke))
    return sections


TITLES = {
    "1": "1. GPU tests (`python -m pytest -m gpu`)",
    "2": "2. Training images/s by data side",
    "3": "3. Eager against compiled (`trainer.compile=default`)",
    "4": "4. DALI decoder ceiling (decode + random-resized crop, no model)",
}


def render(check: Check, probe: dict, sections: dict, mode: str, started: datetime.datetime, total: float) -> str:
    lines = [
        f"# GPU check, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {describe_machine(probe)}",
        f"- revision: {revision()}",
        f"- mode: {mode}",
        f"- total: {total:.0f} s; verdict: {'FAILED (see below)' if check.failed else 'nothing failed'}",
        "",
    ]
    for key, title in TITLES.items():
        body, seconds = sections[key]
        lines += [f"## {title}", "", *body, "", f"Elapsed: {seconds:.0f} s", ""]
    lines += ["## Elapsed per part", ""]
    lines += table(["part", "seconds"], [[title, f"{sections[key][1]:.0f}"] for key, title in TITLES.items()])
    lines += [f"| total (with the probe and the report) | {total:.0f} |", "", "## Log", "", *log_lines(check)]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="gpu_report.md", help="the Markdown file to write")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (without CUDA, always these)")
    parser.add_argument("--budget-s", type=float, help="seconds for all the parts (default: 450, smoke 1200)")
    args = parser.parse_args()
    started, start = datetime.datetime.now(datetime.UTC), time.monotonic()
    probe = probe_environment()
    smoke = args.smoke or not probe["cuda"]
    workers = 1 if smoke else min(16, probe["cpus"] or 1)
    sizes = SMOKE_SIZES if smoke else full_sizes(workers)
    if args.budget_s:
        sizes = replace(sizes, budget_s=args.budget_s)
    if not smoke:
        mode = f"full (budget {sizes.budget_s:.0f} s)"
    else:
        why = "" if args.smoke else ", because there is no CUDA device"
        mode = f"smoke (tiny sizes{why}: checks that every part runs; the numbers mean nothing)"
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        check = Check(sys.executable, sizes, Path(tmp))
        sections = run_parts(check, probe, smoke, workers)
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(check, probe, sections, mode, started, time.monotonic() - start))
    sys.exit(1 if check.failed else 0)


def guarded(check: Check, part: Callable[[], tuple[list[str], float]]) -> tuple[list[str], float]:
    """A part's section, or one line saying how this script broke in it: a bug here must not cost
    the other parts their report."""
    try:
        return part()
    except Exception as exc:
        check.failed = True
        return [f"failed: bench/gpu_check.py broke here ({type(exc).__name__}: {exc})"], 0.0


if __name__ == "__main__":
    main()
