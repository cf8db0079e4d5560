"""Data: datasets on disk and the loaders the trainer reads them with."""

from __future__ import annotations

from pathlib import Path

from clr_dist import dist
from clr_dist.config import DataConfig
from clr_dist.data.datasets import check_image_folder, make_demo_dataset
from clr_dist.data.synthetic import SyntheticLoaders
from clr_dist.data.torch_loader import TorchvisionLoaders
from clr_dist.dist import DistInfo
from clr_dist.errors import DataError


def build_loaders(cfg: DataConfig, info: DistInfo, seed: int, *, channels_last: bool = False):
    """Check the folder layout (one line on bad input), then build the configured loader.

    Rank 0 makes the demo set when ``data.make_if_missing`` asks for it; every rank must call.
    ``channels_last``: the DALI pipeline lays images out channels-last itself (others leave the
    layout to the trainer).
    """
    if cfg.name == "synthetic":
        return SyntheticLoaders(cfg, info, seed)
    error = None
    root = Path(cfg.root)
    missing = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    if cfg.make_if_missing and missing and info.is_main:
        try:
            make_demo_dataset(cfg.root, image_size=cfg.val_resize)
        except DataError as exc:
            error = str(exc)
    error = dist.broadcast_object(error)  # the other ranks wait here for the data, or the error
    if error:
        raise DataError(error)
    summary = check_image_folder(cfg.root)
    if cfg.loader == "dali":
        from clr_dist.data.dali import DaliLoaders  # DALI loads its CUDA libraries on import: only when used

        return DaliLoaders(cfg, info, seed, summary.classes, channels_last=channels_last)
    return TorchvisionLoaders(cfg, info, seed, summary.classes)
