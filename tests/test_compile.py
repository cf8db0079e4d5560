"""``trainer.compile`` on the CPU: torch.compile's inductor, which builds C++ kernels here.

Compiled and eager training agree to float32 rounding, not to the bit: inductor fuses operations
and orders sums its own way (the first step's gradients differ by about 1e-6 of their size).
Over steps the difference grows with the network's conditioning; cifar10_full (conv1 starts at
std 1e-4, inputs of about +-128) turns it into about 0.5% of what 6 steps change in a weight
(measured). Hence the two tolerances: ``LOSS_RTOL`` on the logged losses, ``UPDATE_RTOL`` on each
parameter's change over the run. A compiled run resumed from its checkpoint runs the same
generated kernels as the run it continues, so that comparison is bit-exact.

The first compilation of a graph is slow (about two minutes on 2 busy cores); inductor caches
what it built, so every later test that compiles the same model at the same shapes takes
seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import BIN
from tests.test_resume_torchrun import finish, launch, wait_for_step

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler"
    ),
]

LOSS_RTOL = 1e-5  # measured: 3e-7
UPDATE_RTOL = 0.02  # of the norm of a parameter's change over 6 steps; measured: 0.005
# cifar10_full at 32 px (small, quick to compile), at the Caffe input scale its init is made
# for, with LRs that move it visibly within a few steps; cycles of 6 steps.
COMMON = (
    "model.name=cifar10_full",
    "data.image_size=32",
    "data.val_resize=32",
    "data.std=[0.00392156862745098,0.00392156862745098,0.00392156862745098]",
    "schedule=triangular",
    "schedule.base_lr=0.001",
    "schedule.max_lr=0.004",
    "schedule.stepsize=3",
    "schedule.stepsize_epochs=null",
    "logger.log_every=1",
)


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_compiled_training_follows_eager_step_by_step(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    runs = {}
    for mode in ("off", "default"):
        trainer = make_trainer(
            small_demo, *COMMON, "trainer.max_steps=6", f"trainer.compile={mode}", run_dir=tmp_path / mode
        )
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        peaks = trainer.fit()
        runs[mode] = (events(tmp_path / mode, "train"), trainer.model.state_dict(), peaks)
    (eager, eager_weights, eager_peaks), (compiled, compiled_weights, compiled_peaks) = runs["off"], runs["default"]
    assert [e["step"] for e in compiled] == [e["step"] for e in eager] == [1, 2, 3, 4, 5, 6]
    for c, e in zip(compiled, eager):
        assert c["loss"] == pytest.approx(e["loss"], rel=LOSS_RTOL), c["step"]
    assert compiled_weights.keys() == eager_weights.keys()  # the plain model: no _orig_mod. prefixes
    for name, tensor in eager_weights.items():
        update = tensor - initial[name]
        assert update.norm() > 0, name  # against a vacuous pass: every parameter trained
        assert (compiled_weights[name] - tensor).norm() <= UPDATE_RTOL * update.norm(), name
    assert compiled_peaks[0].val_loss == pytest.approx(eager_peaks[0].val_loss, rel=LOSS_RTOL)
    # Compilation is timed apart, reported once, and not in the first interval's images/s.
    assert [("compile_seconds" in e) for e in compiled] == [True] + [False] * 5
    assert not any("compile_seconds" in e for e in eager)
    assert compiled[0]["compile_seconds"] > 0.5 and "images_per_sec" not in compiled[0]  # its one step compiled
    assert all(e["images_per_sec"] > 0 for e in compiled[1:])


def test_the_range_test_sweeps_compiled_as_eager(tmp_path: Path, small_demo: Path) -> None:
    from clr_dist.range_test import range_test
    from tests.conftest import compose_train, quick_overrides

    curves = {}
    for mode in ("off", "default"):
        overrides = [*COMMON, "range_test.steps=6", "range_test.epochs=null", "range_test.eval_every=3"]
        overrides.append("range_test.end_lr=0.004")  # the LRs of the training test, not the default 0.1
        cfg = compose_train(quick_overrides(small_demo, *overrides, f"trainer.compile={mode}"))
        curves[mode] = range_test(cfg, tmp_path / mode)
    compiled, eager = curves["default"], curves["off"]
    assert len(compiled["curve"]["loss"]) == len(eager["curve"]["loss"]) == 6
    assert compiled["curve"]["lr"] == eager["curve"]["lr"]
    assert compiled["curve"]["loss"] == pytest.approx(eager["curve"]["loss"], rel=LOSS_RTOL)
    assert (
        [e["step"] for e in compiled["evaluations"]] == [e["step"] for e in eager["evaluations"]] == [2, 5]
    )  # after steps 3 and 6 (0-based)
    for c, e in zip(compiled["evaluations"], eager["evaluations"]):
        assert c["val_loss"] == pytest.approx(e["val_loss"], rel=LOSS_RTOL)


@pytest.mark.parametrize(("saved_by", "loaded_by"), [("default", "off"), ("off", "default")])
def test_a_checkpoint_loads_whether_compiled_or_not(
    tmp_path: Path, small_demo: Path, saved_by: str, loaded_by: str, make_trainer
) -> None:
    first = make_trainer(
        small_demo,
        *COMMON,
        "trainer.max_steps=3",
        "trainer.save_checkpoints=true",
        f"trainer.compile={saved_by}",
        run_dir=tmp_path / "first",
    )
    first.fit()
    (saved,) = (tmp_path / "first" / "checkpoints").iterdir()
    model_state = torch.load(saved / "shared.pt", weights_only=True)["model"]
    assert not [k for k in model_state if "_orig_mod" in k]
    second = make_trainer(
        small_demo,
        *COMMON,
        "trainer.max_steps=6",
        f"trainer.resume={saved}",
        f"trainer.compile={loaded_by}",
        run_dir=tmp_path / "second",
    )
    second.resume()
    assert second.step == 3
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], tensor), name
    assert [p.step for p in second.fit()] == [6]


def test_compiled_run_killed_and_resumed_ends_bit_exact_and_never_recompiles_for_the_lr(
    tmp_path: Path, small_demo: Path
) -> None:
    """Two cycles of changing LR with validation at each cycle end, under the compiler's own
    recompilation log: the model's forward is compiled again twice, for validation (no grad) and
    for the validation set's last, smaller batch (70 images in batches of 16), and never for a
    step or an LR. Then the same run, killed
    after step 4 and resumed from its checkpoint in a new process (a new compilation), ends with
    the same weights, bit for bit."""
    cmd = [
        str(BIN / "clr-dist"),
        "train",
        f"data.root={small_demo}",
        "data.batch_size=16",
        "data.workers=0",
        *COMMON,
        "trainer.max_steps=12",
        "trainer.compile=default",
        "trainer.checkpoint_every=2",
        "trainer.record_lr=true",
        "logger.mode=disabled",
        "logger.progress_bar=false",
    ]
    os.environ["TORCH_LOGS"] = "recompiles"
    try:
        code, err = finish(launch(tmp_path, "whole", cmd), timeout=600)
    finally:
        del os.environ["TORCH_LOGS"]
    assert code == 0, err[-3000:]
    recompiles = err.split("Recompiling function")[1:]
    assert len(recompiles) == 2, err[-3000:]
    assert "GLOBAL_STATE changed: grad_mode" in recompiles[0]
    assert "size mismatch at index 0. expected 16, actual 6" in recompiles[1]

    killed = launch(tmp_path, "resumed", cmd)
    wait_for_step(killed, tmp_path / "runs" / "resumed", 5)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    code, err = finish(launch(tmp_path, "resumed", cmd))
    assert code == 0, err[-3000:]
    assert "clr-dist: resuming from" in err

    def final(run_id: str) -> dict:
        (last,) = (tmp_path / "runs" / run_id / "checkpoints").glob("step-00000012*")
        return torch.load(last / "shared.pt", weights_only=True)["model"]

    whole, resumed = final("whole"), final("resumed")
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        assert torch.equal(resumed[name], tensor), name


def test_compiled_ddp_on_2_torchrun_ranks_follows_eager(tmp_path: Path, small_demo: Path) -> None:
    """DDP wrapped first, then compiled: gradients still all-reduced, the same losses as eager."""
    losses = {}
    for mode in ("off", "default"):
        cmd = [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "clr_dist.train",
            f"data.root={small_demo}",
            "data.batch_size=32",
            "data.workers=0",
            *COMMON,
            "trainer.max_steps=6",
            f"trainer.compile={mode}",
            "trainer.save_checkpoints=false",
            "logger.mode=disabled",
            "logger.progress_bar=false",
        ]
        code, err = finish(launch(tmp_path, mode, cmd), timeout=600)
        assert code == 0, err[-3000:]
        losses[mode] = [e["loss"] for e in events(tmp_path / "runs" / mode, "train")]
    assert len(losses["default"]) == 6 and losses["default"] == pytest.approx(losses["off"], rel=LOSS_RTOL)
