"""What reaches W&B, read back from real offline runs: names, groups, job types and tags, one
growing cycle-peak table, cycle-end snapshots as artifacts, and no secret from the environment
or the command line anywhere in a run directory."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from clr_dist.config import LoggerConfig
from clr_dist.reporting import build_reporter
from tests.conftest import offline_run, run_cli, wandb_records, wandb_summary, wandb_table
from tests.test_reporting import PEAKS, PLAN, info

pytestmark = pytest.mark.slow

TORCHRUN = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "clr_dist.train"]

# Planted secrets, as a user would have them: API keys in the environment, a token handed to the
# job through Hydra's env_set, a password in a URL, and a git remote with a token in it.
ENV_TOKEN = "sk-plantedenvtoken0123456789"
ENV_WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits, as W&B's keys
COMMAND_TOKEN = "hf_plantedcommandlinetoken0123456789"
URL_PASSWORD = "plantedurlpassword"
GIT_PASSWORD = "plantedgitpassword"
SECRETS = [ENV_TOKEN, ENV_WANDB_KEY, COMMAND_TOKEN, URL_PASSWORD, GIT_PASSWORD]
WEIGHTS_URL = "https://alice:{}@models.example.com/resnet.pth"


def small_run(data: Path, *extra: str) -> list[str]:
    """Overrides of a run of seconds: test_resnet, 6-step cycles, W&B offline."""
    return [
        "model.name=test_resnet",
        f"data.root={data}",
        "data.batch_size=16",
        "schedule.stepsize=3",
        "schedule.stepsize_epochs=null",
        "trainer.save_checkpoints=false",
        "logger.mode=offline",
        "logger.progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    """Three cycles on 2 ranks, tags, cycle-end weights as artifacts, every secret planted."""
    work = tmp_path_factory.mktemp("secrets")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    remote = f"https://bob:{GIT_PASSWORD}@git.example.com/lab/clr.git"
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", remote], check=True)
    overrides = small_run(
        small_demo,
        "trainer.stop_after_cycles=3",
        "trainer.snapshot_cycle_ends=true",
        "trainer.snapshot_weights_only=true",
        "logger.log_cycle_end_artifacts=true",
        "logger.tags=[smoke,resnet]",
        f"+hydra.job.env_set.HF_TOKEN={COMMAND_TOKEN}",
        f"+model.kwargs.pretrained_cfg_overlay.url={WEIGHTS_URL.format(URL_PASSWORD)}",
    )
    env = {"CLR_DIST_RUN_ID": "job", "CLR_TEST_API_TOKEN": ENV_TOKEN, "WANDB_API_KEY": ENV_WANDB_KEY}
    result = run_cli([*TORCHRUN, *overrides], cwd=work, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "runs" / "job"


def test_no_planted_secret_is_in_any_file_of_the_run(secret_run: Path) -> None:
    """Every file: metrics.jsonl, .hydra/, wandb/ (the .wandb file's bytes, the debug logs, the
    core log they link to), the snapshots."""
    files = [p for p in sorted(secret_run.rglob("*")) if p.is_file()]
    assert any(p.name.endswith(".wandb") for p in files) and any(p.name == "debug-core.log" for p in files)
    leaks = {
        secret: [str(p.relative_to(secret_run)) for p in files if secret.encode() in p.read_bytes()]
        for secret in SECRETS
    }
    assert leaks == {secret: [] for secret in SECRETS}


def test_the_secrets_are_redacted_where_they_were_recorded(secret_run: Path) -> None:
    """Not merely absent: each record still holds the override or URL, with REDACTED in place of
    the secret (a record that lost the command line would also pass the test above)."""
    redacted_token = "+hydra.job.env_set.HF_TOKEN=REDACTED"
    redacted_url = WEIGHTS_URL.format("REDACTED")
    start = json.loads((secret_run / "metrics.jsonl").read_text().splitlines()[0])
    assert {redacted_token, f"+model.kwargs.pretrained_cfg_overlay.url={redacted_url}"} <= set(
        start["environment"]["command"]
    )
    wandb_run = offline_run(secret_run)
    (metadata,) = [e for e in wandb_records(wandb_run, "environment") if "args" in e]
    assert redacted_token in metadata["args"]  # W&B's own record of the command line
    assert metadata["git"]["remote_url"] == "https://bob:@git.example.com/lab/clr.git"  # W&B drops the password
    (run,) = wandb_records(wandb_run, "run")
    config = run["config"]["update"]
    assert config["model"]["kwargs"]["pretrained_cfg_overlay"]["url"] == redacted_url
    assert redacted_token in config["environment"]["command"]
    hydra_dir = secret_run / ".hydra"
    assert f"+model.kwargs.pretrained_cfg_overlay.url={redacted_url}" in yaml.safe_load(
        (hydra_dir / "overrides.yaml").read_text()
    )
    hydra_record = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]
    assert redacted_token in hydra_record["overrides"]["hydra"]  # Hydra's own overrides are kept here
    assert hydra_record["job"]["env_set"] == {"HF_TOKEN": "REDACTED"}
    assert yaml.safe_load((hydra_dir / "config.yaml").read_text())["model"]["kwargs"] == {
        "pretrained_cfg_overlay": {"url": redacted_url}
    }


def test_the_run_has_a_job_type_and_the_tags_of_the_command_line(secret_run: Path) -> None:
    (run,) = wandb_records(offline_run(secret_run), "run")
    assert (run["display_name"], run["job_type"], run["tags"]) == ("job", "train", ["smoke", "resnet"])
    assert "run_group" not in run  # a lone run is in no group


def test_the_cycle_peak_table_grows_by_one_row_a_cycle(secret_run: Path) -> None:
    wandb_run = offline_run(secret_run)
    columns, rows = wandb_table(wandb_run, "cycle_peaks")
    with (secret_run / "cycle_peaks.csv").open() as f:
        peaks = f.read().splitlines()
    assert ",".join(columns) == peaks[0]
    assert [",".join(str(v) for v in row) for row in rows] == peaks[1:]  # each peak once, in order
    assert len(rows) == 3
    table = wandb_summary(wandb_run)["cycle_peaks"]
    assert (table["_type"], table["increment_num"], table["nrows"]) == ("incremental-table-file", 2, 3)


def test_cycle_end_weights_are_recorded_as_model_artifacts(secret_run: Path) -> None:
    wandb_run = offline_run(secret_run)
    artifacts = [a for a in wandb_records(wandb_run, "artifact") if a["type"] == "model"]
    run_id = (secret_run / "wandb_run_id").read_text().strip()
    snapshots = sorted((secret_run / "snapshots").glob("*.pt"))
    assert [s.name for s in snapshots] == [f"step-{6 * c:08d}-cycle-{c:03d}.pt" for c in (1, 2, 3)]
    peaks = (secret_run / "cycle_peaks.csv").read_text().splitlines()[1:]
    assert len(artifacts) == len(snapshots) == len(peaks)
    for cycle, (artifact, snapshot, peak) in enumerate(zip(artifacts, snapshots, peaks), start=1):
        assert artifact["name"] == f"cycle-ends-{run_id}"
        assert {f"cycle-{cycle}", f"step-{6 * cycle}", "latest"} <= set(artifact["aliases"])
        (entry,) = artifact["manifest"]["contents"]
        assert (entry["path"], Path(entry["local_path"])) == (snapshot.name, snapshot.resolve())
        assert int(entry["size"]) == snapshot.stat().st_size
        assert entry["digest"] == base64.b64encode(hashlib.md5(snapshot.read_bytes()).digest()).decode()
        metadata = json.loads(artifact["metadata"])
        assert (metadata["cycle"], str(metadata["top1"])) == (cycle, peak.split(",")[3])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    """A two-job Hydra multirun (one cycle each), W&B told to record no host or git."""
    work = tmp_path_factory.mktemp("sweep")
    overrides = small_run(small_demo, "trainer.stop_after_cycles=1", "logger.record_host_and_git=false")
    result = run_cli(
        ["clr-dist", "train", "-m", "schedule.max_lr=0.02,0.04", *overrides], cwd=work, env={"CLR_DIST_RUN_ID": "x"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "runs" / "multirun-x"


def test_multirun_jobs_are_named_after_their_sweep_and_grouped_by_it(sweep: Path) -> None:
    for job in ("0", "1"):
        (run,) = wandb_records(offline_run(sweep / job), "run")
        assert (run["display_name"], run["run_group"], run["job_type"]) == (f"multirun-x/{job}", "multirun-x", "train")


def test_record_host_and_git_false_keeps_the_machine_and_the_repository_out(sweep: Path) -> None:
    wandb_run = offline_run(sweep / "0")
    assert wandb_records(wandb_run, "environment") == []  # W&B's metadata: host, user, args, hardware
    (run,) = wandb_records(wandb_run, "run")
    assert "host" not in run and "git" not in run
    config = run["config"]["update"]
    assert "hostname" not in config["environment"] and config["environment"]["world_size"] == 1


def test_a_resumed_offline_run_starts_its_table_with_the_earlier_peaks(tmp_path: Path) -> None:
    """Offline, W&B cannot see what an earlier segment of the run logged: each segment's table
    starts afresh. The resumed segment's first log holds the earlier peaks too, so that segment
    alone, the one whose summary W&B keeps after `wandb sync`, has every row once."""
    cfg = LoggerConfig(mode="offline", progress_bar=False)
    started = time.monotonic()
    first = build_reporter(cfg, tmp_path, info(0))
    first.start({}, {}, PLAN)
    for peak in PEAKS[:2]:
        first.peak(peak)
    first.close()
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))  # W&B names a run's folder by the second
    # Stopped after cycle 2 with its last checkpoint at step 40 (cycle 1): cycle 2 is validated
    # again (metrics.jsonl has it: not logged twice) before cycle 3.
    second = build_reporter(cfg, tmp_path, info(0))
    second.peaks[:] = PEAKS[:1]
    second.start({}, {}, PLAN, start_step=40)
    for peak in PEAKS[1:]:
        second.peak(peak)
    second.close()
    segments = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(segments) == 2
    first_rows, resumed_rows = (wandb_table(segment, "cycle_peaks")[1] for segment in segments)
    as_rows = [[p.cycle, p.step, p.lr, p.top1, p.top5, p.val_loss] for p in PEAKS]
    assert first_rows == as_rows[:2] and resumed_rows == as_rows
    assert wandb_summary(segments[1])["cycle_peaks"]["nrows"] == 3


def test_a_range_test_run_has_its_job_type(tmp_path: Path) -> None:
    reporter = build_reporter(LoggerConfig(mode="offline", progress_bar=False), tmp_path, info(0))
    reporter.start({}, {}, dataclasses.replace(PLAN, job="range_test"))
    reporter.close()
    (run,) = wandb_records(offline_run(tmp_path), "run")
    assert (run["job_type"], run["display_name"]) == ("range_test", tmp_path.name)
