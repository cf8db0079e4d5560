"""clr_dist.weights and clr_dist.cycle_ends: interpolation, averages and ensembles of cycle ends."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from clr_dist.errors import ConfigError, UsageError
from clr_dist.weights import Ensemble, average, check_same_shapes, interpolate, recompute_batch_norm
from tests.conftest import offline_run, run_cli, wandb_history, wandb_summary

# --- the arithmetic ------------------------------------------------------------------------------


def small_net(classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(classes)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, classes)
    )


def test_interpolation_ends_are_the_two_solutions_exactly() -> None:
    a, b = small_net().state_dict(), small_net().state_dict()
    torch.manual_seed(1)
    b = {k: v + torch.randn_like(v) if v.is_floating_point() else v + 7 for k, v in b.items()}
    for key in a:
        assert torch.equal(interpolate(a, b, 1.0)[key], a[key])
        assert torch.equal(interpolate(a, b, 0.0)[key], b[key])
    middle = interpolate(a, b, 0.5)
    weight = "3.weight"
    assert torch.allclose(middle[weight], (a[weight] + b[weight]) / 2)
    assert torch.allclose(
        interpolate(a, b, 1.5)[weight], 1.5 * a[weight] - 0.5 * b[weight], atol=1e-6
    )  # outside [0, 1]
    tracked = "1.num_batches_tracked"
    assert interpolate(a, b, 0.6)[tracked] == a[tracked] and interpolate(a, b, 0.4)[tracked] == b[tracked]


def test_the_average_of_k_weights_is_their_mean_parameter_by_parameter() -> None:
    model = small_net()
    states = []
    for seed in range(4):
        torch.manual_seed(seed)
        states.append({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()})
    averaged = average(model, states).module.state_dict()
    floating = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point()]
    assert "1.running_mean" in floating  # the buffers too, until batch norm is recomputed
    for name in floating:
        mean = torch.stack([s[name].double() for s in states]).mean(0).float()
        assert torch.allclose(averaged[name], mean, atol=1e-6), name


def test_weights_of_another_model_are_named_in_one_line() -> None:
    ten, three = small_net(10).state_dict(), small_net(3).state_dict()
    with pytest.raises(
        ConfigError, match=r"^B and A hold different models: 3.weight is \[3, 144\] in one and \[10, 144\]"
    ):
        check_same_shapes({"A": ten, "B": three})
    fewer = {k: v for k, v in ten.items() if not k.startswith("1.")}
    with pytest.raises(
        ConfigError, match=r"^B and A hold different models \(5 tensors of A missing \(e.g. 1.bias\)\); give"
    ):
        check_same_shapes({"A": ten, "B": fewer})


def test_batch_norm_statistics_are_those_of_the_images_given() -> None:
    """One process, no process group: the mean over batches of each batch's statistics, as
    update_bn computes them (the ranks' pooling is tested under torchrun below)."""
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    torch.manual_seed(0)
    batches = [torch.randn(8, 3, 4, 4) * 3 + 1 for _ in range(5)]
    assert recompute_batch_norm(net, [(b, None) for b in batches], torch.device("cpu")) == 5
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.transpose(0, 1).reshape(3, -1).var(dim=1) for b in batches]).mean(0)
    assert torch.allclose(net[0].running_mean, means, atol=1e-5)
    assert torch.allclose(net[0].running_var, variances, atol=1e-4)
    assert net[0].num_batches_tracked == 5


def test_an_ensemble_of_one_or_of_copies_predicts_as_the_model() -> None:
    model = small_net().eval()
    torch.manual_seed(2)
    images = torch.randn(16, 3, 8, 8)
    alone = model(images).log_softmax(dim=1)
    for members in ([model], [model, model, model]):
        together = Ensemble(members).eval()(images)
        assert torch.allclose(together, alone, atol=1e-6)
        assert torch.equal(together.argmax(1), alone.argmax(1))


@pytest.mark.parametrize(
    ("text", "alphas"),
    [("-0.5:1.5:5", [-0.5, 0.0, 0.5, 1.0, 1.5]), ("0,0.5,1", [0.0, 0.5, 1.0]), ("0.3:0.3:1", [0.3])],
)
def test_alphas_from_the_command_line(text: str, alphas: list[float]) -> None:
    from clr_dist.cycle_ends import parse_alphas

    assert parse_alphas(text) == pytest.approx(alphas)


def test_a_negative_alpha_range_is_read_as_the_flags_value(tmp_path: Path, capsys) -> None:
    from clr_dist import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["interpolate", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--alphas", "-0.5:1.5:5"])
    assert exit_info.value.code == 2
    # past argparse: the error is about the missing weights, not about --alphas
    assert "a.pt is neither a checkpoint folder" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0:1:0", "", ",", "a:b:c"])
def test_an_empty_or_unreadable_alpha_range_is_one_line(text: str) -> None:
    from clr_dist.cycle_ends import parse_alphas

    with pytest.raises(UsageError, match="--alphas"):
        parse_alphas(text)


def test_the_loss_axis_goes_logarithmic_only_for_a_steep_wall() -> None:
    from clr_dist.cycle_ends import loss_scale

    def rows(*losses: float) -> list[dict]:
        return [{"train_loss": loss, "val_loss": loss * 1.01} for loss in losses]

    assert loss_scale(rows(30.2, 3.5, 1.15, 1.68, 1.23)) == "log"  # the demo's line: a wall of 30 at alpha -0.5
    assert loss_scale(rows(0.55, 0.47, 0.46, 0.54, 0.68)) == "linear"  # Fashion-MNIST's: one basin


class _OneProcessTrainer:
    """What ``interpolate_line`` uses of a Trainer, on 8 fixed images in one process."""

    def __init__(self, model: torch.nn.Module) -> None:
        from types import SimpleNamespace

        torch.manual_seed(0)
        self.model, self.images, self.targets = model, torch.randn(8, 3, 8, 8), torch.arange(8) % 3
        self.info = SimpleNamespace(device=torch.device("cpu"), is_main=False)
        self.data = SimpleNamespace(train_subset_batches=lambda limit: [self.images])

    @torch.no_grad()
    def evaluation_sums(self, limit=None, split="val", model=None):
        from clr_dist.trainer import metric_sums

        return metric_sums(self.model.eval()(self.images), self.targets), 8


@pytest.mark.parametrize("batch_norm", [False, True])
def test_interpolation_reduces_once_per_alpha(monkeypatch: pytest.MonkeyPatch, batch_norm: bool) -> None:
    """One reduction for train and validation metrics together, and one more to pool the
    recomputed batch-norm statistics when the model has them."""
    from clr_dist import dist
    from clr_dist.cycle_ends import interpolate_line

    net = small_net() if batch_norm else torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    reductions = []
    monkeypatch.setattr(dist, "all_reduce_sum", lambda tensor: reductions.append(tensor.numel()) or tensor)
    trainer = _OneProcessTrainer(net)
    state = net.state_dict()
    rows = interpolate_line(trainer, state, state, [0.0, 0.5, 1.0], 8, 8 if batch_norm else 0, None)
    per_alpha = ["bn", "metrics"] if batch_norm else ["metrics"]
    assert len(reductions) == 3 * len(per_alpha)
    assert reductions[per_alpha.index("metrics") :: len(per_alpha)] == [8, 8, 8]  # train and val sums, once
    assert rows[1]["train_loss"] == rows[1]["val_loss"]  # both halves read back from the one tensor


# --- the commands on a real run --------------------------------------------------------------------


def peaks(run_dir: Path) -> dict[int, dict]:
    with (run_dir / "cycle_peaks.csv").open() as f:
        return {int(row["cycle"]): row for row in csv.DictReader(f)}


def train_with_snapshots(work: Path, data: Path, run_id: str, model: str = "model=cifar10_full") -> Path:
    """cifar10_full (no batch norm) at 32 px, or ``model``, 3 cycles of 4 steps, weights-only snapshots."""
    result = run_cli(
        [
            "clr-dist",
            "train",
            f"data.root={data}",
            "logger.mode=disabled",
            "logger.progress_bar=false",
            "data.batch_size=16",
            *model.split(),
            "data.image_size=32",
            "data.val_resize=32",
            "schedule=triangular",
            "schedule.base_lr=0.001",
            "schedule.max_lr=0.01",
            "schedule.stepsize=2",
            "schedule.stepsize_epochs=null",
            "trainer.max_steps=12",
            "trainer.save_checkpoints=false",
            "trainer.snapshot_weights_only=true",
        ],
        cwd=work,
        env={"CLR_DIST_RUN_ID": run_id},
    )
    assert result.returncode == 0, result.stderr
    return work / "runs" / run_id


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    return train_with_snapshots(tmp_path_factory.mktemp("cycle_ends"), small_demo, "snap")


@pytest.mark.slow
def test_weights_only_snapshots_hold_the_model_and_nothing_else(snapshot_run: Path) -> None:
    files = sorted(p.name for p in (snapshot_run / "snapshots").iterdir())
    assert files == [f"step-{4 * c:08d}-cycle-{c:03d}.pt" for c in (1, 2, 3)]
    saved = torch.load(snapshot_run / "snapshots" / files[0], weights_only=True)
    assert set(saved) == {"model", "meta"} and saved["meta"] == {"step": 4, "cycle": 1, "model": "cifar10_full"}
    assert not (snapshot_run / "checkpoints").exists()  # save_checkpoints=false: no optimizer state anywhere


@pytest.mark.slow
def test_interpolation_at_0_and_1_gives_the_two_cycle_ends_validation_exactly(snapshot_run: Path) -> None:
    a, b = (snapshot_run / "snapshots" / f"step-{4 * c:08d}-cycle-{c:03d}.pt" for c in (3, 2))
    result = run_cli(
        [
            "clr-dist",
            "interpolate",
            str(a),
            str(b),
            "--alphas",
            "0,0.5,1",
            "--train-images",
            "40",
            "logger.mode=offline",
        ],
        cwd=snapshot_run.parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert "the model has no batch norm" in result.stdout
    out = snapshot_run / "interpolate-cycle-3-cycle-2"
    rows = json.loads((out / "interpolation.json").read_text())["rows"]
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    saved = peaks(snapshot_run)
    for row, cycle in ((rows[0], 2), (rows[2], 3)):  # B at alpha 0, A at alpha 1, as validated in training
        assert row["val_loss"] == float(saved[cycle]["val_loss"])
        assert (row["val_top1"], row["val_top5"]) == (float(saved[cycle]["top1"]), float(saved[cycle]["top5"]))
    assert (out / "interpolation.png").stat().st_size > 10_000
    assert (out / "interpolation.csv").read_text().splitlines()[0] == (
        "alpha,train_loss,train_top1,val_loss,val_top1,val_top5"
    )
    wandb_run = offline_run(out)
    (logged,) = wandb_history(wandb_run)
    assert (logged["interpolate/table._type"], logged["interpolate/figure._type"]) == ("table-file", "image-file")
    table = json.loads((wandb_run / "files" / logged["interpolate/table.path"]).read_text())
    assert [r[0] for r in table["data"]] == [0.0, 0.5, 1.0] and table["data"][2][3] == rows[2]["val_loss"]


@pytest.mark.slow
def test_ensemble_of_one_snapshot_is_that_snapshot(snapshot_run: Path, tmp_path: Path) -> None:
    result = run_cli(
        ["clr-dist", "ensemble", str(snapshot_run), "--cycles", "2", "--out", str(tmp_path), "logger.mode=offline"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {r["what"]: r for r in json.loads((tmp_path / "ensemble.json").read_text())["rows"]}
    single, ensemble, averaged = rows["cycle 2"], rows["ensemble of 1 (mean softmax)"], rows["average of 1 (weights)"]
    saved = peaks(snapshot_run)[2]
    assert (single["top1"], single["val_loss"]) == (float(saved["top1"]), float(saved["val_loss"]))
    for other in (ensemble, averaged):
        assert (other["top1"], other["top5"]) == (single["top1"], single["top5"])
        assert other["val_loss"] == pytest.approx(single["val_loss"], abs=1e-6)
    summary = wandb_summary(offline_run(tmp_path))
    assert summary["cycle 2"]["top1"] == single["top1"]
    assert "ensemble of 1 (mean softmax)" in result.stdout  # the table on the console


@pytest.mark.slow
def test_ensemble_bad_input_is_one_line(snapshot_run: Path, tmp_path: Path) -> None:
    cases = [
        (["--last", "4"], "--last 4 asks for more snapshots than"),
        (["--cycles", "5"], "has no snapshot of cycle 5; it holds cycles 1, 2, 3"),
    ]
    for flags, message in cases:
        result = run_cli(["clr-dist", "ensemble", str(snapshot_run), *flags, "--out", str(tmp_path)], cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    result = run_cli(["clr-dist", "ensemble", str(tmp_path / "empty")], cwd=tmp_path)
    assert result.returncode == 2 and "holds no cycle-end snapshots" in result.stderr


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    """The same, with a small ResNet (batch norm)."""
    return train_with_snapshots(
        tmp_path_factory.mktemp("bn"), small_demo, "bn", "model=resnet50 model.name=test_resnet"
    )


@pytest.mark.slow
def test_weights_of_two_models_are_refused_in_one_line(snapshot_run: Path, bn_run: Path, tmp_path: Path) -> None:
    a = snapshot_run / "snapshots" / "step-00000012-cycle-003.pt"
    b = bn_run / "snapshots" / "step-00000012-cycle-003.pt"
    result = run_cli(["clr-dist", "interpolate", str(a), str(b), "--out", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(f"clr-dist interpolate: error: B ({b}) and the model of the run's config hold")
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli(["clr-dist", "interpolate", str(a), str(tmp_path / "nothing.pt")], cwd=tmp_path)
    assert result.returncode == 2 and "is neither a checkpoint folder" in result.stderr


@pytest.mark.slow
def test_batch_norm_recomputed_on_2_torchrun_ranks_matches_one_process(tmp_path: Path, bn_run: Path) -> None:
    """A model with batch norm, halfway between two cycle ends. 2 ranks of 16 images a batch read
    the first and second half of the fixed 64-image subset; one process of 16 a batch reads the
    same 4 batches. The statistics pooled over the ranks must then be those of the one process,
    so every metric along the line agrees."""
    run = bn_run
    a, b = (run / "snapshots" / f"step-{4 * c:08d}-cycle-{c:03d}.pt" for c in (3, 2))
    flags = ["--alphas", "0.5,1.3", "--bn-images", "64", "--train-images", "64"]
    results = {}
    for name, launcher, batch in (
        ("one", ["clr-dist"], 16),
        ("two", ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "clr_dist.cli"], 32),
    ):
        out = tmp_path / name
        result = run_cli(
            [*launcher, "interpolate", str(a), str(b), *flags, "--out", str(out), f"data.batch_size={batch}"],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results[name] = json.loads((out / "interpolation.json").read_text())["rows"]
    assert "batch norm recomputed on 64 training images" in result.stdout
    for one, two in zip(results["one"], results["two"]):
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # and the recomputation mattered: at alpha 1.3 the saved statistics would give other numbers
    kept = run_cli(
        [
            "clr-dist",
            "interpolate",
            str(a),
            str(b),
            "--alphas",
            "1.3",
            "--bn-images",
            "0",
            "--out",
            str(tmp_path / "k"),
        ],
        cwd=tmp_path,
    )
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert json.loads((tmp_path / "k" / "interpolation.json").read_text())["rows"][0]["val_loss"] != pytest.approx(
        results["one"][1]["val_loss"], rel=1e-3
    )
