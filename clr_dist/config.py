"""Typed configuration: the schema every YAML file in ``conf/`` and every override is checked against.

The dataclasses are registered in Hydra's ConfigStore as the base of ``conf/train.yaml``, so a
mistyped key (``trainer.max_step=10``), a wrong type (``trainer.max_steps=ten``) or a value
outside a fixed set (``trainer.precision=fp8``) fails while the config is composed, before any
work starts. Checks of ranges and of keys that depend on each other live in ``clr_dist.checks``,
which runs them all before the process group forms.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from clr_dist.bounds import METHODS, RULES, read_bounds
from clr_dist.errors import ConfigError
from clr_dist.schedules import ScheduleConfig

# train.yaml and its groups (model/, data/, schedule/, ...). An installed wheel has them in
# clr_dist/conf (pyproject.toml ships the repository's conf/ there); a checkout or an editable
# install reads the repository's conf/ beside the package, live.
_PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = str(_PACKAGE_DIR / "conf" if (_PACKAGE_DIR / "conf").is_dir() else _PACKAGE_DIR.parent / "conf")

# Settings with a fixed set of values are StrEnums, so that Hydra refuses any other value while it
# composes the config, naming the key, the value and the valid ones. A member is its own string
# ("bf16" == Precision.bf16, f"{Precision.bf16}" == "bf16"): comparisons, messages, JSON and W&B
# see plain strings. Member names are the values themselves, since OmegaConf looks a value up by
# member name and writes the name back (.hydra/config.yaml). A checkpoint must not hold members:
# torch.load(weights_only=True) refuses them (``Trainer._settings`` stores plain strings).


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(StrEnum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


# torch.compile's mode names have hyphens: only the functional form takes them as member names.
CompileMode = StrEnum(
    "CompileMode",
    [(mode, mode) for mode in ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")],
    module=__name__,
)


class LoggerMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class Loader(StrEnum):
    torchvision = "torchvision"
    dali = "dali"


class DaliDevice(StrEnum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"


class OutputDtype(StrEnum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class OptimizerName(StrEnum):
    sgd = "sgd"
    nesterov = "nesterov"
    adam = "adam"
    rmsprop = "rmsprop"
    adagrad = "adagrad"
    adadelta = "adadelta"


class MomentumStyle(StrEnum):
    pytorch = "pytorch"
    caffe = "caffe"


class Implementation(StrEnum):
    auto = "auto"
    fused = "fused"
    foreach = "foreach"
    for_loop = "for_loop"


class SweepMode(StrEnum):
    linear = "linear"
    exp = "exp"


# How a range-test curve is read: the values clr_dist.bounds handles.
ReadingMethod = StrEnum("ReadingMethod", [(method, method) for method in METHODS], module=__name__)
ReadingRule = StrEnum("ReadingRule", [(rule, rule) for rule in RULES], module=__name__)


@dataclass
class ModelConfig:
    # Any timm model name; ``alexnet`` and ``googlenet`` are registered by clr_dist.models.
    name: str = "alexnet"
    # Extra keyword arguments for timm.create_model (e.g. drop_rate).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # GoogLeNet's auxiliary classifiers: weight of each one's loss in training (0.3 in the paper).
    aux_loss_weight: float = 0.3


@dataclass
class DataConfig:
    name: str = "demo"
    # ImageNet folder layout: root/train/<class>/*.JPEG and root/val/<class>/*.JPEG.
    root: str = "data/demo"
    # torchvision (PyTorch DataLoader workers) or dali (GPU decoding on CUDA, CPU operators without).
    loader: Loader = Loader.dali
    # The *global* batch: split evenly over the ranks, so a schedule means the same at any size.
    batch_size: int = 64
    # Training crop (random-resized) and validation crop (centre, after resizing the short side).
    image_size: int = 224
    val_resize: int = 256
    # Random-resized crop: the share of the image's area and the aspect-ratio range it samples
    # (ImageNet's usual 8%-100% and 3/4-4/3).
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # Per rank: DALI threads or DataLoader worker processes, a number (0: the DataLoader loads in
    # the training process; DALI takes at least 1), or auto: the CPUs this process may run on
    # (or SLURM_CPUS_PER_TASK, if fewer) shared by the ranks on its node; DALI gets that many
    # threads, the DataLoader one worker fewer. Any, as OmegaConf 2.3 has no Union[int, str].
    workers: Any = "auto"
    # A folder with train.txt and val.txt (`clr-dist data check --out DIR`): read only the files
    # listed there (`class/file label` lines, relative to root/<split>). dali loader only.
    file_lists: Optional[str] = None
    # DALI on CUDA (mixed decoding), defaults from DALI's ImageNet/ResNet-50 example: the share
    # of JPEG decoding given to the hardware decoder (A100/H100 and later), 0-1 ...
    hw_decoder_load: float = 0.65
    # ... nvJPEG's device and pinned-host buffer padding in bytes, sized there for ImageNet's
    # largest JPEG so that decoding never reallocates (DALI preallocates one device and two host
    # buffers of this size per thread; 0: no preallocation) ...
    device_memory_padding: int = 211_025_920
    host_memory_padding: int = 140_544_512
    # ... and the largest image, in pixels, the hardware decoder preallocates for (0: no hint).
    # The padding and the hints go to the training decoder only, as in DALI's example: the
    # validation pipelines decode rarely and would hold the buffers for the whole run.
    preallocate_width_hint: int = 5980
    preallocate_height_hint: int = 6430
    # dali: batches the pipeline prepares ahead of the training loop (DALI's default).
    prefetch_queue_depth: int = 2
    # dali: where the pipeline runs. auto: on the GPU (mixed decoding) when training on CUDA, else
    # CPU operators; cpu keeps decoding on the CPU even on a GPU machine (a busy GPU, tests).
    dali_device: DaliDevice = DaliDevice.auto
    # dali: dtype of the images it hands the model; float16/bfloat16 halve the copy and need
    # mixed precision (trainer.precision bf16/fp16, or auto on CUDA).
    output_dtype: OutputDtype = OutputDtype.float32
    # dali: a reader state saved under another world size or rank (a resume after resizing the
    # job) is refused; true starts the saved epoch again from its beginning instead.
    restart_epoch_on_layout_change: bool = False
    # data=synthetic: images in an "epoch" and classes (ImageNet's by default).
    synthetic_images: int = 1_281_167
    synthetic_classes: int = 1000
    # Make the embedded demo set at data.root when it is not there yet (data=demo only).
    make_if_missing: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class OptimizerConfig:
    # sgd, nesterov, adam, rmsprop, adagrad, adadelta (the paper's Table 3).
    name: OptimizerName = OptimizerName.sgd
    # SGD, Nesterov and RMSprop momentum; Adam's beta1. What schedule.momentum_cycle drives.
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # sgd only: pytorch (w -= lr v) or caffe (lr inside the velocity, as in the paper's runs).
    momentum_style: MomentumStyle = MomentumStyle.pytorch
    beta2: float = 0.999  # adam
    alpha: float = 0.99  # rmsprop: smoothing of the squared gradient
    rho: float = 0.9  # adadelta
    eps: float = 1e-8  # adam, rmsprop, adagrad, adadelta
    # How the update runs over the parameters: auto (the fused kernel on CUDA where the optimizer
    # has one, else foreach on CUDA; PyTorch's own choice on the CPU), fused, foreach or for_loop.
    implementation: Implementation = Implementation.auto


@dataclass
class LoggerConfig:
    # online: sync to W&B; offline: write the W&B run to disk only (no account needed); disabled.
    mode: LoggerMode = LoggerMode.offline
    project: str = "clr_dist"
    entity: Optional[str] = None
    # W&B run name. null: the run directory's name; for a job of a multirun, the sweep folder's
    # name and the job number (multirun-<id>/3), so the runs of different sweeps never collide.
    run_name: Optional[str] = None
    # W&B group. null: the sweep folder's name for the jobs of a multirun (one sweep, one group),
    # none for a lone run; set it to gather runs of your own (the seeds of one configuration).
    group: Optional[str] = None
    # W&B tags, 1-64 characters each: logger.tags=[baseline,alexnet].
    tags: list[str] = field(default_factory=list)
    # Reduce and log the training metrics every this many optimizer steps.
    log_every: int = 10
    progress_bar: bool = True
    # Log each cycle-end snapshot (trainer.snapshot_cycle_ends) as a version of a W&B artifact of
    # type model: the weights file (trainer.snapshot_weights_only) or the checkpoint's shared.pt.
    # Costly: one fp32 copy of the weights per cycle, 244 MB for AlexNet (61.1 M parameters),
    # 102 MB for ResNet-50 (25.6 M), twice that as checkpoints with SGD momentum; uploaded in the
    # background (~2.5 s per AlexNet snapshot at 100 MB/s) and counted against the W&B storage quota.
    log_cycle_end_artifacts: bool = False
    # W&B's own record of the machine (hostname, user, Python path, CPU/GPU/disk/memory) and of the
    # git repository (remote URL, commit, diff). false turns both off and leaves the hostname out of
    # the W&B config (clr_dist's git revision stays there). Secrets are redacted either way.
    record_host_and_git: bool = True


@dataclass
class TrainerConfig:
    # Length of the run in optimizer steps.
    max_steps: int = 1000
    # Stop at the first cycle end at or after this many cycles (null: run to max_steps).
    stop_after_cycles: Optional[int] = None
    # Validate every this many steps for policies without cycles (null: only at the end).
    eval_every: Optional[int] = None
    # Micro-batches per optimizer step; the global batch is data.batch_size per micro-batch.
    grad_accum_steps: int = 1
    # auto: bf16 on CUDA when supported, else fp16 with a grad scaler; fp32 on CPU.
    precision: Precision = Precision.auto
    # auto: CUDA when available, else CPU.
    device: Device = Device.auto
    channels_last: bool = True
    # CUDA: let cuDNN time its convolution algorithms on the first batches and keep the fastest
    # (the input shape is fixed). The choice can differ between processes, so a resumed GPU run
    # then equals an uninterrupted one to rounding, not to the bit; false for bit-exact resumes.
    cudnn_benchmark: bool = True
    # CUDA: TF32 for float32 matmuls and convolutions. null (auto): on under mixed precision
    # (bf16/fp16, where float32 is already not the arithmetic of the run), off in an fp32 run,
    # whose float32 the user asked for; true or false to force.
    tf32: Optional[bool] = None
    # torch.compile the model: off, or one of torch.compile's modes (default, reduce-overhead,
    # max-autotune, max-autotune-no-cudagraphs). The first step compiles (its time is logged as
    # compile_seconds, apart from images/s); checkpoints hold the plain model's weights either way.
    compile: CompileMode = CompileMode.off
    seed: int = 0
    # Write lr_rank<R>.csv: the LR (and momentum) each rank's optimizer actually held at each step.
    record_lr: bool = False
    # Checkpoints in RUN_DIR/checkpoints/: false writes none (throwaway runs, benchmarks).
    save_checkpoints: bool = True
    # Save one every this many optimizer steps (null: only on a stop signal and at the end), and
    # keep the newest keep_checkpoints of these.
    checkpoint_every: Optional[int] = 1000
    keep_checkpoints: int = 2
    # Also save a snapshot at every cycle end, kept by cycle number (for later analysis).
    snapshot_cycle_ends: bool = True
    # Those snapshots as the model's weights alone (RUN_DIR/snapshots/step-N-cycle-K.pt, written
    # even with save_checkpoints=false): what interpolate and ensemble read, without the
    # optimizer state a resume needs (for SGD with momentum, half the size of a checkpoint).
    snapshot_weights_only: bool = False
    # Keep the running average of the cycle-end weights (stochastic weight averaging over cycle
    # ends), validate it at each cycle end next to the peak (avg_* in cycle_peaks.csv, avg/* in
    # W&B); its batch norm is recomputed on average_bn_images training images over all ranks.
    average_cycle_ends: bool = False
    average_bn_images: int = 2000
    # auto: continue from the newest readable checkpoint in the run directory, if there is one;
    # a checkpoint folder; or null: always start afresh.
    resume: Optional[str] = "auto"
    # Resume even if the schedule, the global batch or the world size changed since the checkpoint.
    resume_allow_changes: bool = False


@dataclass
class RangeTestConfig:
    """``clr-dist range-test`` (Smith 2015, §3.3): train while the LR rises, read the bounds off."""

    start_lr: float = 1e-4
    end_lr: float = 0.1
    # Length of the sweep: optimizer steps, or epochs; one of them. 8 epochs, the length of the
    # paper's CIFAR-10 test (Figure 3): on the demo set a 4-epoch sweep left accuracy at chance
    # until LR 0.017 and put max_lr there, where 8 epochs put it at 0.031 (docs/BENCHMARKS.md,
    # "Which reading").
    steps: Optional[int] = None
    epochs: Optional[float] = 8.0
    # linear (Smith) or exp (the LR grows by a constant factor each step, the fast.ai variant).
    mode: SweepMode = SweepMode.linear
    # Accuracy on a fixed subset of the validation set every this many steps (null: 25 points).
    eval_every: Optional[int] = None
    eval_images: int = 1000
    # Stop when the loss (averaged over ranks) exceeds this multiple of the lowest so far
    # (null: sweep to the end whatever happens).
    diverge_factor: Optional[float] = 4.0
    # Read the bounds off the accuracy curve (the paper's way), the loss curve, or auto: accuracy
    # when the sweep evaluated at least 5 times, else loss.
    method: ReadingMethod = ReadingMethod.auto
    # base_lr as max_lr / 3 (third) or / 4 (quarter), the paper's rule of thumb, or read off the
    # curve where the rise starts (range). third: where the rise starts depends on how long the
    # net has trained by then, not only on the LR (on the demo set it read 2/3 of max_lr). With 3
    # seeds neither rule trained better there, and on Fashion-MNIST a higher base_lr did
    # (docs/BENCHMARKS.md, "Which reading").
    rule: ReadingRule = ReadingRule.third
    # "Starts to rise" and "stops rising": the first points past this share of the curve's whole
    # rise from its low, and within it of its peak. Relative, so the loss scale does not matter.
    rise_fraction: float = 0.1
    # "Turns ragged": accuracy falls by more than this share of its whole rise below its best so
    # far; max_lr is then that best point. null: read the smoothed plateau only.
    ragged_fraction: Optional[float] = 0.2
    # Centred moving average over this share of the points (at least 3): no shift of the curve.
    smooth_fraction: float = 0.05
    # Every rank also writes range_test_rank<R>.json (to check that the ranks agree).
    per_rank_output: bool = False


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    range_test: RangeTestConfig = field(default_factory=RangeTestConfig)


def run_id() -> str:
    """The name of this job's run directory, the same on every rank and across restarts.

    Every torchrun worker runs ``@hydra.main`` itself, so ``${now:...}`` would give each rank its
    own directory. The launcher's job id is shared instead: CLR_DIST_RUN_ID if the user set it,
    else SLURM's job id (kept across a requeue), else torchrun's run id (kept across worker
    restarts; ``--standalone`` makes a fresh one per launch), else a timestamp for a lone process.
    """
    if os.environ.get("CLR_DIST_RUN_ID"):
        return os.environ["CLR_DIST_RUN_ID"]
    if os.environ.get("SLURM_JOB_ID"):
        job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{job}" + (f"_{task}" if task else "")
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return f"torchrun-{elastic}"
    return time.strftime("local-%Y%m%d-%H%M%S")


def register() -> None:
    """Register the schema and the ``clr_run_id`` resolver; safe to call more than once."""
    if not OmegaConf.has_resolver("clr_run_id"):
        OmegaConf.register_new_resolver("clr_run_id", run_id, use_cache=True)
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def compose(overrides: list[str]) -> TrainConfig:
    """conf/train.yaml with Hydra ``overrides``, composed exactly as ``clr-dist train`` does,
    outside ``@hydra.main`` (the tools that read a run's config); one line on a bad override."""
    from omegaconf.errors import OmegaConfBaseException

    composed = compose_unresolved(overrides)
    try:
        return to_object(composed)
    except OmegaConfBaseException as exc:  # an interpolation that does not resolve
        raise ConfigError(composition_error(exc)) from exc


def compose_unresolved(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with Hydra ``overrides`` as Hydra composes it, its interpolations left as
    they are, as Hydra leaves them until the run (``${hydra:...}`` resolves only then).
    ConfigError, one line, when it does not compose: a mistyped key, a wrong type, a value
    outside its choices, a missing group option."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(composition_error(exc)) from exc


def composition_error(exc: Exception) -> str:
    """Hydra's error for a config that does not compose, as one line naming the key, the value
    and what is valid: its first line, with the key of a refused value (OmegaConf names it only
    on a later line) and the options of a missing group option (listed there one per line)."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ValidationError

    cause = exc.__cause__ or exc
    line = str(cause).splitlines()[0]
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ValidationError) and key and key not in line:
        line = f"{key}: {line}"  # "trainer.precision: Invalid value 'fp8', expected one of [auto, ...]"
    if isinstance(cause, MissingConfigException) and cause.options:
        line = f"{line}; available options: {', '.join(cause.options)}"
    return line


def run_dir(overrides: list[str]) -> Path:
    """The run directory ``clr-dist train`` with these ``overrides`` writes to, in this
    environment (``hydra.run.dir``, its default from CLR_DIST_RUNS_DIR and ``run_id()``, or the
    user's own): what the launch scripts and slurm/train.sbatch look in for ``stopped``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return Path(hydra_compose("train", overrides=overrides, return_hydra_config=True).hydra.run.dir)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(composition_error(exc)) from exc


def _reject_unknown_keys(node: Any, path: str) -> None:
    """Hydra's ``+key=value`` forces a key into a structured config even when the schema lacks
    it; OmegaConf then sets it as a stray attribute that nothing reads. Refuse it instead."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _reject_unknown_keys(item, f"{path}.{index}")
        return
    if not dataclasses.is_dataclass(node):
        return
    known = {f.name for f in dataclasses.fields(node)}
    for key, value in vars(node).items():
        where = f"{path}.{key}" if path else key
        if key not in known:
            raise ConfigError(
                f"unknown key {where}: {type(node).__name__} has no such setting; remove it "
                f"(valid keys: {', '.join(sorted(known))})"
            )
        _reject_unknown_keys(value, where)


def to_object(cfg: Any) -> TrainConfig:
    """The composed DictConfig as the typed dataclass tree (interpolations resolved), with
    ``schedule.bounds_from`` applied."""
    obj = OmegaConf.to_object(cfg)
    _reject_unknown_keys(obj, "")
    if obj.schedule.bounds_from:
        obj.schedule.base_lr, obj.schedule.max_lr = read_bounds(obj.schedule.bounds_from)
    return obj  # type: ignore[return-value]
