"""Training entry point: what ``torchrun``, ``launch/`` and ``slurm/`` run.

    torchrun --standalone --nproc_per_node=2 -m clr_dist.train model=alexnet schedule=triangular
    clr-dist train data.root=/data/imagenet schedule.max_lr=0.015
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from clr_dist import config, dist
from clr_dist.errors import Stopped, UsageError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
config.register()


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from clr_dist.trainer import Trainer

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    trainer = None
    try:
        trainer = Trainer(config.to_object(cfg), run_dir)
        trainer.resume()
        trainer.fit()
    except UsageError as exc:
        print(f"clr-dist train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Stopped as exc:
        print(f"clr-dist train: {exc}", file=sys.stderr)
        sys.exit(Stopped.EXIT_CODE)
    finally:
        if trainer is not None:
            trainer.close()
        dist.close()


if __name__ == "__main__":
    main()
