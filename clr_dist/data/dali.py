"""The DALI loader: one pipeline definition, GPU (``mixed`` decoding) or CPU operators.

Same interface as TorchvisionLoaders (``classes``, ``train_size``, ``val_size``,
``batches_per_epoch``, ``train_epoch(epoch)``, ``val_batches()``).

Sharding is by the *global* rank (``shard_id=rank``, ``num_shards=world_size``): sharding by the
local rank, as some published examples do, gives every node the same data. DALI's reader gives
shard ``i`` the samples ``[floor(N i / S), floor(N (i + 1) / S))``, so shards differ in size by at
most one sample, and the ranks would disagree on the number of full batches in an epoch. Training
therefore yields the batch count of the *smallest* shard on every rank and drains the rest of
the epoch from the reader; validation yields each rank's true shard (``pad_last_batch`` padding
dropped), so every image counts exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from clr_dist.config import DataConfig
from clr_dist.data.datasets import IMAGE_EXTENSIONS
from clr_dist.data.layout import evenly_spaced, saved_position_applies, select
from clr_dist.data.workers import dali_threads
from clr_dist.dist import DistInfo
from clr_dist.errors import ConfigError, DataError

Batch = tuple[torch.Tensor, torch.Tensor]


def file_list(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Sorted files of ``split_dir/<class>/`` and their labels (index in ``classes``, as
    torchvision's ImageFolder numbers them)."""
    files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(str(path))
                labels.append(label)
    return files, labels


def read_file_list(list_path: Path, split_dir: Path, num_classes: int) -> tuple[list[str], list[int]]:
    """A ``clr-dist data check`` list: ``class/file label`` per line, relative to ``split_dir``.

    A list may have been written or edited by hand, and DALI trusts it: a path that leaves
    ``split_dir`` would train on files outside the dataset, and a label past the classes would
    surface as a CUDA assert in the loss, or not at all. Such a line is a DataError naming the
    file and the line, raised before any pipeline is built.
    """
    remake = f"fix the line or remake the lists with `clr-dist data check {split_dir.parent} --out DIR`"
    files, labels = [], []
    for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        relative, _, label_text = line.rpartition(" ")
        try:
            label = int(label_text)
        except ValueError:
            label = None
        # String tests, not Path objects: ImageNet's lists are 1.3M lines.
        if not relative or label is None:
            problem = f"is {line!r}, not `class/file label`"
        elif relative.startswith("/") or ".." in relative.split("/"):
            problem = f"names {relative!r}, outside {str(split_dir)!r}: paths must be relative to it, without '..'"
        elif not 0 <= label < num_classes:
            problem = (
                f"gives {relative!r} label {label}, outside [0, {num_classes}) for the {num_classes} classes of "
                f"{str(split_dir)!r}"
            )
        else:
            files.append(str(split_dir / relative))
            labels.append(label)
            continue
        raise DataError(f"line {number} of {str(list_path)!r} (data.file_lists) {problem}; {remake}")
    return files, labels


def shard_bounds(size: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """The [start, end) sample range DALI's readers give to one shard."""
    return size * shard_id // num_shards, size * (shard_id + 1) // num_shards


def pipeline_on_gpu(cfg: DataConfig, info: DistInfo) -> bool:
    """``data.dali_device``: auto follows the training device; gpu needs CUDA."""
    if cfg.dali_device == "gpu" and info.device.type != "cuda":
        raise ConfigError(
            f"data.dali_device=gpu needs training on CUDA (the device is {info.device}); "
            f"use data.dali_device=auto or cpu"
        )
    return cfg.dali_device == "gpu" or (cfg.dali_device == "auto" and info.device.type == "cuda")


def decoder_options(cfg: DataConfig, gpu: bool, *, training: bool) -> dict:
    """The decoder's device and tuning arguments (``fn.decoders.image_random_crop`` in training,
    ``fn.decoders.image`` otherwise): the ``data.`` settings on the GPU, none on the CPU (they
    apply to ``mixed`` decoding only)."""
    if not gpu:
        return {"device": "cpu"}
    options = {"device": "mixed", "hw_decoder_load": cfg.hw_decoder_load}
    if training:
        # Preallocated for the largest image (the padding once per thread, in DALI's words) in
        # every pipeline given them, for the whole run. DALI's ImageNet example gives them to the
        # training decoder only; a validation pipeline decodes rarely and may reallocate instead.
        options |= {
            "device_memory_padding": cfg.device_memory_padding,
            "host_memory_padding": cfg.host_memory_padding,
            "preallocate_width_hint": cfg.preallocate_width_hint,
            "preallocate_height_hint": cfg.preallocate_height_hint,
        }
    return options


def pipeline_options(cfg: DataConfig, info: DistInfo, gpu: bool, *, batch_size: int, seed: int) -> dict:
    """The pipeline's arguments for this rank (all but the checkpoint to restore)."""
    return {
        "batch_size": batch_size,
        "num_threads": dali_threads(cfg.workers),
        "device_id": info.device.index if gpu else None,
        "prefetch_queue_depth": cfg.prefetch_queue_depth,
        # Each rank augments differently; the reader's seed is shared, so shuffles are reproducible.
        "seed": seed + info.rank,
    }


def build_pipeline(
    files: list[str],
    labels: list[int],
    cfg: DataConfig,
    info: DistInfo,
    *,
    training: bool,
    seed: int,
    batch_size: int,
    channels_last: bool = False,
    checkpoint: bytes | None = None,
):
    """The pipeline for one rank: reader -> decode (+ random-resized crop) -> resize -> crop,
    flip, normalise. ``mixed`` decoding on the GPU, CPU operators otherwise.

    Images leave as CHW, or as HWC when ``channels_last`` (the loader then views them as NCHW
    with channels-last strides, so the model gets that layout without a transpose).
    """
    from nvidia.dali import fn, pipeline_def, types

    gpu = pipeline_on_gpu(cfg, info)
    # DALI has no bfloat16: it emits float32 and the loader converts on the device.
    dtype = types.FLOAT16 if cfg.output_dtype == "float16" else types.FLOAT

    # Checkpointing records the reader's position and every random operator's state, so a
    # restored pipeline serves the same files with the same crops and flips.
    @pipeline_def(enable_checkpointing=True)
    def pipeline():
        jpegs, targets = fn.readers.file(
            files=files,
            labels=labels,
            shard_id=info.rank,
            num_shards=info.world_size,
            random_shuffle=training,
            seed=seed,
            pad_last_batch=True,
            stick_to_shard=True,
            name="Reader",
        )
        decode = decoder_options(cfg, gpu, training=training)
        if training:
            images = fn.decoders.image_random_crop(
                jpegs,
                output_type=types.RGB,
                random_area=list(cfg.crop_scale),
                random_aspect_ratio=list(cfg.crop_ratio),
                num_attempts=100,
                **decode,
            )
            images = fn.resize(images, resize_x=cfg.image_size, resize_y=cfg.image_size)
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.decoders.image(jpegs, output_type=types.RGB, **decode)
            images = fn.resize(images, resize_shorter=cfg.val_resize)
            mirror = False
        images = fn.crop_mirror_normalize(
            images,
            dtype=dtype,
            output_layout="HWC" if channels_last else "CHW",
            crop=(cfg.image_size, cfg.image_size),
            mean=[255 * m for m in cfg.mean],
            std=[255 * s for s in cfg.std],
            mirror=mirror,
        )
        return images, (targets.gpu() if gpu else targets)

    pipe = pipeline(**pipeline_options(cfg, info, gpu, batch_size=batch_size, seed=seed), checkpoint=checkpoint)
    pipe.build()
    return pipe


def find_undecodable(files: list[str], time_limit: float = 120.0) -> str | None:
    """The first file PIL cannot fully decode, scanning for at most ``time_limit`` seconds."""
    deadline = time.monotonic() + time_limit
    for path in files:
        if time.monotonic() > deadline:
            return None
        try:
            with Image.open(path) as image:
                image.load()
        except Exception:  # any failure to decode is what we are looking for
            return path
    return None


class DaliLoaders:
    def __init__(
        self, cfg: DataConfig, info: DistInfo, seed: int, classes: list[str], *, channels_last: bool = False
    ) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        root = Path(cfg.root)
        self.channels_last = channels_last
        self.bfloat16 = cfg.output_dtype == "bfloat16"
        self.restart_epoch_on_layout_change = cfg.restart_epoch_on_layout_change
        self.classes = classes
        self.per_rank_batch = cfg.batch_size // info.world_size
        if cfg.file_lists:  # only the files the checker could decode
            lists = Path(cfg.file_lists)
            train_files, train_labels = read_file_list(lists / "train.txt", root / "train", len(classes))
            val_files, val_labels = read_file_list(lists / "val.txt", root / "val", len(classes))
        else:
            train_files, train_labels = file_list(root / "train", classes)
            val_files, val_labels = file_list(root / "val", classes)
        self.train_size, self.val_size = len(train_files), len(val_files)
        smallest_shard = self.train_size // info.world_size
        self.batches_per_epoch = smallest_shard // self.per_rank_batch

        def iterator(files, labels, training, checkpoint=None):
            pipe = build_pipeline(
                files,
                labels,
                cfg,
                info,
                training=training,
                seed=seed,
                batch_size=self.per_rank_batch,
                channels_last=channels_last,
                checkpoint=checkpoint,
            )
            # PARTIAL keeps the real last batch of each shard and drops pad_last_batch's padding.
            return DALIGenericIterator(
                pipe,
                ["images", "targets"],
                reader_name="Reader",
                last_batch_policy=LastBatchPolicy.PARTIAL,
                auto_reset=True,
            )

        self._iterator = iterator
        self._train_iterator = lambda checkpoint=None: iterator(train_files, train_labels, True, checkpoint)
        self.train = self._train_iterator()
        self.val = iterator(val_files, val_labels, False)
        self._lists = {"train": (train_files, train_labels), "val": (val_files, val_labels)}
        self._subsets: dict[tuple[str, int], tuple] = {}  # (split, size) -> (iterator, this rank's files)
        self.layout = (info.rank, info.world_size)
        self.yielded = 0  # full training batches served in the current epoch
        self.root = cfg.root
        self.shard_files = {
            "train": train_files[slice(*shard_bounds(self.train_size, info.rank, info.world_size))],
            "val": val_files[slice(*shard_bounds(self.val_size, info.rank, info.world_size))],
        }

    def _read(self, reader, shard_files: list[str]) -> Iterator[Batch]:
        """The reader's batches; a decoding failure becomes a DataError that names the file.

        DALI does not skip a corrupt image: the pipeline dies, and its error does not say which
        file it was. Look for it in this rank's shard, then point at the dataset checker.
        """
        try:
            for batch in reader:
                images, targets = self._unpack(batch)
                # A shard that is an exact multiple of the batch, beside a larger shard, ends its
                # epoch with an empty batch under PARTIAL (DROP would give one made only of
                # padding instead): it holds no sample, so it is skipped.
                if len(targets):
                    yield images, targets
        except RuntimeError as exc:
            if "Critical error in pipeline" not in str(exc):
                raise
            bad = find_undecodable(shard_files)
            what = f"cannot decode {bad!r}" if bad else "failed to decode an image of this rank's shard"
            raise DataError(
                f"DALI {what}; run `clr-dist data check {self.root} --out DIR` to find every bad "
                f"file, then remove them or train on the clean lists with data.file_lists=DIR"
            ) from exc

    def _unpack(self, batch: list[dict[str, torch.Tensor]]) -> Batch:
        images, targets = batch[0]["images"], batch[0]["targets"].view(-1).long()
        if self.channels_last:  # NHWC in memory, seen as NCHW: channels-last strides
            images = images.permute(0, 3, 1, 2)
        if self.bfloat16:
            images = images.to(torch.bfloat16)
        return images, targets

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        """Exactly ``batches_per_epoch`` full batches on every rank (the reader reshuffles its
        shard each epoch); the rest of this rank's shard is read and dropped.

        The rest is read *before* the last batch is handed out, so that after it the reader
        stands at the start of the next epoch. A DALI checkpoint taken at the very end of an
        epoch, before the iterator has said so, restores as the start of the next epoch: had the
        rest still been unread, the resumed run would drop that epoch as this one's leftovers.
        """
        # A shard holds at least batches_per_epoch full batches, and they come first.
        batches = self._read(self.train, self.shard_files["train"])
        while self.yielded < self.batches_per_epoch:
            batch = next(batches)
            self.yielded += 1
            if self.yielded == self.batches_per_epoch:
                for _ in batches:
                    pass
            yield batch
        self.yielded = 0

    def state_dict(self) -> dict:
        """This rank's training reader, to resume mid-epoch: the DALI checkpoint (position,
        shuffle and augmentation state) and the batches already served this epoch."""
        rank, world_size = self.layout
        return {
            "rank": rank,
            "world_size": world_size,
            "train_size": self.train_size,
            "reader": self.train.checkpoints()[0],
            "yielded": self.yielded,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next batches are exactly those the saved run would have
        read next. A reader checkpoint belongs to one rank of one world size; in any other
        layout it would silently read other data, so that is refused, unless
        ``data.restart_epoch_on_layout_change`` asks to start the saved epoch from its beginning."""
        if not saved_position_applies(
            state, *self.layout, self.train_size, restart_epoch_allowed=self.restart_epoch_on_layout_change
        ):
            self.yielded = 0
            return
        self.train = self._train_iterator(state["reader"])
        self.yielded = state["yielded"]

    def val_batches(self, limit: int | None = None) -> Iterator[Batch]:
        """This rank's share of the validation set, or of a fixed subset of ``limit`` images
        spread evenly over it (every class represented), each image on exactly one rank."""
        if limit is None or limit >= self.val_size:
            return self._read(self.val, self.shard_files["val"])
        return self._subset("val", limit)

    def train_subset_batches(self, limit: int) -> Iterator[Batch]:
        """This rank's share of a fixed subset of ``limit`` training images spread evenly over
        the training set, read as validation images are (no random crop or flip): the same
        images in the same order at every call, each on exactly one rank."""
        return self._subset("train", min(limit, self.train_size))

    def _subset(self, split: str, limit: int) -> Iterator[Batch]:
        if (split, limit) not in self._subsets:
            all_files, all_labels = self._lists[split]
            files, labels = (select(values, evenly_spaced(len(all_files), limit)) for values in (all_files, all_labels))
            rank, world_size = self.layout
            self._subsets[split, limit] = (
                self._iterator(files, labels, False),
                files[slice(*shard_bounds(limit, rank, world_size))],
            )
        return self._read(*self._subsets[split, limit])
