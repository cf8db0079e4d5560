"""Training entry point: what ``torchrun``, ``launch/`` and ``slurm/`` run.

torchrun --standalone --nproc_per_node=2 -m clr_dist.train model=alexnet schedule=triangular
clr-dist train data.root=/data/imagenet schedule.max_lr=0.015
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from clr_dist import config, dist
from clr_dist.errors import reported_as_one_line
from clr_dist.trainer import Trainer


@hydra.main(config_path=config.CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    trainer = None
    try:
        with reported_as_one_line("train"):
            trainer = Trainer(config.to_object(cfg), run_dir)
            trainer.resume()
            trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
        dist.close()


def main() -> None:
    config.register()
    _hydra_main()


if __name__ == "__main__":
    main()
