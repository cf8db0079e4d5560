"""Bad configuration stops before any work, with a message that names the key and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from clr_dist import config
from clr_dist.checks import validate
from clr_dist.config import Precision, run_id
from clr_dist.errors import ConfigError
from clr_dist.schedules import POLICY_NAMES
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
    with pytest.raises(ConfigError) as info:
        config.compose(["schedule=bogus"])  # one line, the options on it
    assert str(info.value) == (
        "In 'train': Could not find 'schedule/bogus'; available options: cosine_restarts, decay, exp, exp_range, "
        "exp_range_amplitude, fixed, multistage, multistep, one_cycle, step, triangular, triangular2"
    )


CHOICES = [
    # (overrides, the key, the bad value, the valid values in the schema's order)
    (["trainer.precision=fp8"], "trainer.precision", "fp8", "auto, fp32, bf16, fp16"),
    (["trainer.device=tpu"], "trainer.device", "tpu", "auto, cuda, cpu"),
    (
        ["trainer.compile=fast"],
        "trainer.compile",
        "fast",
        "off, default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs",
    ),
    (["logger.mode=onlin"], "logger.mode", "onlin", "online, offline, disabled"),
    (["data.loader=magic"], "data.loader", "magic", "torchvision, dali"),
    (["data.dali_device=tpu"], "data.dali_device", "tpu", "auto, gpu, cpu"),
    (["data.output_dtype=int8"], "data.output_dtype", "int8", "float32, float16, bfloat16"),
    (["optimizer.name=lamb"], "optimizer.name", "lamb", "sgd, nesterov, adam, rmsprop, adagrad, adadelta"),
    (["optimizer.momentum_style=keras"], "optimizer.momentum_style", "keras", "pytorch, caffe"),
    (
        ["optimizer.implementation=vectorised"],
        "optimizer.implementation",
        "vectorised",
        "auto, fused, foreach, for_loop",
    ),
    (["range_test.mode=cosine"], "range_test.mode", "cosine", "linear, exp"),
    (["range_test.method=vibes"], "range_test.method", "vibes", "auto, accuracy, loss"),
    (["range_test.rule=half"], "range_test.rule", "half", "range, third, quarter"),
    (["schedule.policy=triangel"], "schedule.policy", "triangel", ", ".join(POLICY_NAMES)),
    (["schedule.shape=square"], "schedule.shape", "square", "triangular, welch, hann"),
    (
        ["schedule=multistage", "schedule.stages.0.policy=tri"],
        "schedule.stages[0].policy",
        "tri",
        ", ".join(POLICY_NAMES),
    ),
]


@pytest.mark.parametrize(("overrides", "key", "value", "valid"), CHOICES, ids=[case[1] for case in CHOICES])
def test_a_value_outside_its_choices_fails_at_compose(overrides: list[str], key: str, value: str, valid: str) -> None:
    """Keys with a fixed set of values are enums in the schema: Hydra refuses any other value
    while composing, before a Trainer (or the process group) exists, and the one line names the
    key, the value and the valid values."""
    with pytest.raises(ConfigCompositionException):
        compose_train(overrides)
    with pytest.raises(ConfigError) as info:
        config.compose(overrides)
    assert str(info.value) == f"{key}: Invalid value '{value}', expected one of [{valid}]"


def test_choices_are_their_strings_everywhere() -> None:
    """A choice is a StrEnum member: equal to its string, formatted as it, JSON as it, written to
    .hydra/config.yaml as it, and read back from there into the same config."""
    cfg = compose_train(["trainer.precision=bf16", "trainer.compile=reduce-overhead", "schedule=multistage"])
    precision = cfg.trainer.precision
    assert precision is Precision.bf16 and precision == "bf16" and f"{precision}" == "bf16" and str(precision) == "bf16"
    assert cfg.trainer.compile == "reduce-overhead" and cfg.schedule.stages[0].policy == "triangular2"
    assert json.loads(json.dumps({"precision": precision})) == {"precision": "bf16"}
    written = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    assert "precision: bf16" in written and "compile: reduce-overhead" in written and "policy: multistage" in written
    plain = OmegaConf.create(written)  # as compare.py reads a run's .hydra/config.yaml
    assert plain.trainer.precision == "bf16" and type(plain.trainer.precision) is str
    assert OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config.TrainConfig), plain)) == cfg


@pytest.mark.slow
def test_a_checkpoint_holds_the_choices_as_plain_strings(tmp_path: Path, small_demo: Path, make_trainer) -> None:
    """Every resume reads checkpoints with torch.load(weights_only=True), which refuses Enum members."""
    from clr_dist.checkpoint import SHARED_FILE

    trainer = make_trainer(small_demo, "schedule=multistage", "trainer.save_checkpoints=true")
    trainer.save_checkpoint("plain")
    shared = torch.load(tmp_path / "run" / "checkpoints" / "plain" / SHARED_FILE, weights_only=True)
    settings = shared["meta"]["settings"]
    assert type(settings["schedule.policy"]) is str and settings["schedule.policy"] == "multistage"
    assert type(settings["schedule.shape"]) is str and type(settings["schedule.stages"][0]["policy"]) is str


def test_the_enums_list_what_the_code_dispatches_on() -> None:
    """The choices kept as a table elsewhere match their enum (a new optimizer or policy needs
    both); the shapes and the range-test readings are made from their module's own tuples."""
    from clr_dist.optim import OPTIMIZERS
    from clr_dist.schedules import POLICIES, PolicyName
    from clr_dist.schedules.factory import MULTISTAGE

    assert tuple(config.OptimizerName) == tuple(OPTIMIZERS)
    assert set(PolicyName) == {*POLICIES, MULTISTAGE} == set(POLICY_NAMES)


@pytest.mark.parametrize(
    ("overrides", "world_size", "message"),
    [
        (
            ["data.batch_size=64"],
            3,
            "data.batch_size=64 (the global batch) does not divide evenly over 3 ranks; use a multiple of 3",
        ),
        (["trainer.max_steps=0"], 1, "trainer.max_steps=0 must be a positive integer"),
        (["data.image_size=224", "data.val_resize=128"], 1, "data.val_resize=128 is smaller than data.image_size=224"),
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
        (["logger.tags=[ok,'']"], 1, "logger.tags: tag '' has 0 characters; W&B takes 1 to 64"),
        (["logger.tags=[" + "t" * 65 + "]"], 1, "has 65 characters; W&B takes 1 to 64"),
        (
            ["logger.log_cycle_end_artifacts=true", "trainer.snapshot_cycle_ends=false"],
            1,
            "logger.log_cycle_end_artifacts=true logs the cycle-end snapshots, but trainer.snapshot_cycle_ends=false",
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
            ["optimizer=adam", "optimizer.momentum_style=caffe"],
            "optimizer.momentum_style=caffe applies to optimizer.name=sgd only, not adam",
        ),
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


@pytest.mark.parametrize(
    ("env", "overrides", "expected"),
    [
        ({"CLR_DIST_RUN_ID": "mine", "SLURM_JOB_ID": "7"}, [], "RUNS/mine"),
        ({"SLURM_JOB_ID": "7"}, [], "RUNS/slurm-7"),
        # A job array: the task's own SLURM_JOB_ID differs from the array's; the run is named after both.
        ({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2"}, [], "RUNS/slurm-10_2"),
        ({"TORCHELASTIC_RUN_ID": "abc"}, [], "RUNS/torchrun-abc"),
        ({"SLURM_JOB_ID": "7"}, ["hydra.run.dir=/elsewhere/run", "model=googlenet"], "/elsewhere/run"),
    ],
)
def test_run_dir_is_where_the_workers_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict, overrides: list[str], expected: str
) -> None:
    """What the launch and sbatch scripts look in for `stopped`: the run id resolved from the
    same environment as the workers' ``hydra.run.dir``."""
    for name in ("CLR_DIST_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLR_DIST_RUNS_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert str(config.run_dir(overrides)) == expected.replace("RUNS", str(tmp_path))
