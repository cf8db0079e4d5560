"""Bad configuration stops before any work, with a message that names the key and the fix."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from clr_dist.checks import validate
from clr_dist.config import run_id
from clr_dist.errors import ConfigError
from tests.conftest import compose_train


def test_defaults_compose_to_the_typed_schema() -> None:
    cfg = compose_train([])
    assert (cfg.model.name, cfg.data.name, cfg.schedule.policy, cfg.optimizer.name) == (
        "alexnet",
        "demo",
        "triangular",
        "sgd",
    )
    demo = compose_train(["experiment=demo"])
    assert (demo.schedule.base_lr, demo.schedule.max_lr, demo.trainer.stop_after_cycles) == (0.005, 0.02, 3)


def test_data_workers_is_auto_or_a_number() -> None:
    """data.workers takes a number, as every preset and script always gave it, or auto (the
    default, and imagenet's); the DALI tuning knobs default to DALI's ImageNet example."""
    assert compose_train([]).data.workers == 1  # data=demo's own
    assert compose_train(["data=imagenet", "data.root=/x"]).data.workers == "auto"
    for override, value in (("data.workers=0", 0), ("data.workers=12", 12), ("data.workers=auto", "auto")):
        cfg = compose_train([override])
        validate(cfg, 1)
        assert cfg.data.workers == value
    data = compose_train(["data=imagenet", "data.root=/x"]).data
    assert (data.hw_decoder_load, data.device_memory_padding, data.host_memory_padding) == (0.65, 211025920, 140544512)
    assert (data.preallocate_width_hint, data.preallocate_height_hint, data.prefetch_queue_depth) == (5980, 6430, 2)


def test_mistyped_key_fails_at_compose() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["trainer.max_step=10"])
    assert "Key 'max_step' not in 'TrainerConfig'" in str(info.value.__cause__)


def test_forced_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key trainer.typo: TrainerConfig has no such setting; remove it"):
        compose_train(["+trainer.typo=1"])
    with pytest.raises(ConfigError, match=r"unknown key schedule.stages.0.bogus: StageConfig"):
        compose_train(["schedule=multistage", "+schedule.stages.0.bogus=1"])
    assert compose_train(["+model.kwargs.drop_rate=0.3"]).model.kwargs == {"drop_rate": 0.3}  # a free dict


def test_wrong_type_fails_at_compose() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["trainer.max_steps=ten"])
    assert isinstance(info.value.__cause__, ValidationError)
    assert "Value 'ten' of type 'str' could not be converted to Integer" in str(info.value.__cause__)


def test_unknown_group_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigCompositionException, match=r"Could not find 'schedule/bogus'"):
        compose_train(["schedule=bogus"])


@pytest.mark.parametrize(
    ("overrides", "world_size", "message"),
    [
        (
            ["data.batch_size=64"],
            3,
            "data.batch_size=64 (the global batch) does not divide evenly over 3 ranks; use a multiple of 3",
        ),
        (["trainer.precision=fp8"], 1, "trainer.precision='fp8' is not one of: auto, fp32, bf16, fp16"),
        (["data.loader=magic"], 1, "data.loader='magic' is not one of: torchvision, dali"),
        (["trainer.max_steps=0"], 1, "trainer.max_steps=0 must be a positive integer"),
        (["data.image_size=224", "data.val_resize=128"], 1, "data.val_resize=128 is smaller than data.image_size=224"),
        (["logger.mode=loud"], 1, "logger.mode='loud' is not one of: online, offline, disabled"),
        (
            ["data.loader=torchvision", "data.file_lists=/x"],
            1,
            "data.file_lists needs data.loader=dali (not torchvision)",
        ),
        (
            ["data.loader=dali", "data.file_lists=/nowhere"],
            1,
            "data.file_lists='/nowhere' has no train.txt; make the lists with `clr-dist data check data/demo --out DIR`",
        ),
        (["trainer.checkpoint_every=0"], 1, "trainer.checkpoint_every=0 must be a positive number of steps, or null"),
        (["trainer.keep_checkpoints=0"], 1, "trainer.keep_checkpoints=0 must be a positive integer"),
        (["data.dali_device=tpu"], 1, "data.dali_device='tpu' is not one of: auto, gpu, cpu"),
        (["data.output_dtype=int8"], 1, "data.output_dtype='int8' is not one of: float32, float16, bfloat16"),
        (
            ["data.loader=torchvision", "data.output_dtype=float16"],
            1,
            "data.output_dtype=float16 needs data.loader=dali; the torchvision loader gives float32",
        ),
        (["data.crop_scale=[0.5,0.2]"], 1, "data.crop_scale=[0.5, 0.2] must satisfy 0 < low <= high <= 1"),
        (["data.crop_ratio=[0,1.5]"], 1, "data.crop_ratio=[0.0, 1.5] must satisfy 0 < low <= high (width/height)"),
        (["data.workers=many"], 1, "data.workers='many' must be auto or a whole number >= 0"),
        (["data.workers=-1"], 1, "data.workers=-1 must be auto or a whole number >= 0"),
        (["data.workers=2.5"], 1, "data.workers=2.5 must be auto or a whole number >= 0"),
        (["data.hw_decoder_load=1.5"], 1, "data.hw_decoder_load=1.5 must be in [0, 1]"),
        (["data.hw_decoder_load=-0.1"], 1, "data.hw_decoder_load=-0.1 must be in [0, 1]"),
        (["data.device_memory_padding=-1"], 1, "data.device_memory_padding=-1 must be >= 0 (0: no preallocation)"),
        (["data.host_memory_padding=-1"], 1, "data.host_memory_padding=-1 must be >= 0 (0: no preallocation)"),
        (["data.preallocate_width_hint=-5"], 1, "data.preallocate_width_hint=-5 must be >= 0 (0: no preallocation)"),
        (["data.preallocate_height_hint=-5"], 1, "data.preallocate_height_hint=-5 must be >= 0"),
        (["data.prefetch_queue_depth=0"], 1, "data.prefetch_queue_depth=0 must be a positive integer"),
        (["trainer.compile=fast"], 1, "trainer.compile='fast' is not one of: off, default, reduce-overhead"),
        (
            ["optimizer.implementation=vectorised"],
            1,
            "optimizer.implementation='vectorised' is not one of: auto, fused",
        ),
        (
            ["optimizer=rmsprop", "optimizer.implementation=fused"],
            1,
            "optimizer.implementation=fused: RMSprop has no fused step; use auto, foreach, or for_loop",
        ),
    ],
)
def test_cross_key_checks(overrides: list[str], world_size: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_train(overrides), world_size)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=resnet5O"], "unknown model.name='resnet5O': not in timm's registry; did you mean: "),
        (
            ["optimizer.name=lamb"],
            "unknown optimizer.name='lamb'; valid optimizers: sgd, nesterov, adam, rmsprop, adagrad, adadelta",
        ),
        (
            ["optimizer=adam", "optimizer.momentum_style=caffe"],
            "optimizer.momentum_style=caffe applies to optimizer.name=sgd only, not adam",
        ),
        (["optimizer.momentum_style=keras"], "optimizer.momentum_style='keras' is not one of: pytorch, caffe"),
        (["optimizer.momentum=1.0"], "optimizer.momentum=1.0 must be in [0, 1)"),
        (["trainer.precision=fp16"], "trainer.precision=fp16 needs CUDA; on the CPU use bf16 or fp32"),
        (
            ["data.output_dtype=float16"],
            "data.output_dtype=float16 needs mixed precision, and this run is fp32 "
            "(trainer.precision=auto on cpu); set trainer.precision=bf16",
        ),
        (
            ["schedule=fixed", "trainer.stop_after_cycles=2"],
            "trainer.stop_after_cycles=2 needs a cyclical schedule; schedule.policy=fixed has no cycles",
        ),
        (["optimizer=adagrad", "schedule.momentum_cycle=true"], "has no momentum to cycle"),
        (["optimizer.momentum=0", "schedule.momentum_cycle=true"], "has no momentum to cycle"),
        (["schedule.max_lr=0.001"], "schedule.max_lr=0.001 is below schedule.base_lr=0.01"),
        # A stepsize in epochs is checked without the data (only its length needs the data).
        (["schedule.stepsize=null", "schedule.stepsize_epochs=-2"], "schedule.stepsize_epochs=-2.0 must be positive"),
    ],
)
def test_checks_that_once_waited_for_the_data_and_the_model(overrides: list[str], message: str) -> None:
    """What Trainer.__init__, the optimizer and the model builder used to check after the process
    group formed and the data was read is now checked from the config alone, on the CPU."""
    with pytest.raises(ConfigError) as info:
        validate(compose_train(overrides), 1, torch.device("cpu"))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_range_test_settings_are_checked_for_the_range_test_only() -> None:
    cfg = compose_train(["range_test.start_lr=0.1", "range_test.end_lr=0.01"])
    validate(cfg, 1)  # a training run does not read them
    with pytest.raises(ConfigError, match=r"^range_test.start_lr=0.1 and end_lr=0.01: need 0 < start_lr < end_lr"):
        validate(cfg, 1, job="range_test")
    with pytest.raises(ConfigError, match=r"^job='sweep' is not one of: train, range_test, interpolate, ensemble$"):
        validate(compose_train([]), 1, job="sweep")


@pytest.mark.timeout(60)
def test_bad_input_fails_before_the_rendezvous(monkeypatch, tmp_path) -> None:
    """Rank 0 of 2, its peer never started: joining the process group would wait for it (30
    minutes). A bad setting must fail first, in this process, at once."""
    from clr_dist.trainer import Trainer

    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29599",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="data.batch_size=15 .* does not divide evenly over 2 ranks"):
        Trainer(compose_train(["data.batch_size=15", "logger.mode=disabled"]), tmp_path / "run")
    assert not torch.distributed.is_initialized()


def test_run_id_is_shared_by_the_ranks_of_one_job(monkeypatch) -> None:
    for var in ("CLR_DIST_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert run_id() == "torchrun-abc"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert run_id() == "slurm-42"  # a requeued job keeps its id, so its directory
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert run_id() == "slurm-40_2"
    monkeypatch.setenv("CLR_DIST_RUN_ID", "mine")
    assert run_id() == "mine"


def test_compile_on_the_cpu_without_a_cxx_compiler_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile's CPU kernels are C++: without a compiler, say so before anything is built."""
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)  # a machine without c++ or g++
    validate(compose_train(["trainer.compile=off"]), 1)  # off needs none
    with pytest.raises(ConfigError) as info:
        validate(compose_train(["trainer.compile=default"]), 1)
    assert str(info.value) == (
        "trainer.compile=default on the CPU needs a C++ compiler and none is on PATH; "
        "install one (apt-get install g++) or set trainer.compile=off"
    )
