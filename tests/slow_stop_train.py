"""``clr_dist.train`` whose stop checkpoint takes SLOW_STOP_SECONDS (32) longer to save: what a
large model's checkpoint on a slow file system does. Run by torchrun as ``-m tests.slow_stop_train``
(the launchers' MODULE) to check that a stop checkpoint slower than torchrun's default 30 s
shutdown timeout still completes."""

from __future__ import annotations

import os
import time

from clr_dist import train
from clr_dist.trainer import Trainer

_stop = Trainer._stop


def _slow_stop(self: Trainer, signum: int | None) -> None:
    time.sleep(float(os.environ.get("SLOW_STOP_SECONDS", "32")))
    _stop(self, signum)


Trainer._stop = _slow_stop

if __name__ == "__main__":
    train.main()
