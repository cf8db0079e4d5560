"""clr_dist.plan: the CUDA switches a run sets (what does not need a GPU to decide)."""

from __future__ import annotations

import pytest
import torch

from clr_dist.config import TrainerConfig
from clr_dist.plan import apply_backend_settings, backend_settings

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.mark.parametrize(
    ("tf32", "amp", "expected"),
    [
        (None, torch.bfloat16, True),  # mixed precision: float32 is not the run's arithmetic anyway
        (None, torch.float16, True),
        (None, None, False),  # an fp32 run keeps full float32
        (True, None, True),
        (False, torch.bfloat16, False),
    ],
)
def test_tf32_follows_the_precision_unless_set(tf32: bool | None, amp: torch.dtype | None, expected: bool) -> None:
    settings = backend_settings(TrainerConfig(tf32=tf32), CUDA, amp)
    assert settings == {"cudnn_benchmark": True, "tf32": expected}


def test_the_cpu_gets_no_cuda_switches() -> None:
    assert backend_settings(TrainerConfig(tf32=True), CPU, torch.bfloat16) == {}


def test_the_switches_reach_torch_backends() -> None:
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for value in (True, False):
            apply_backend_settings({"cudnn_benchmark": value, "tf32": not value})
            assert torch.backends.cudnn.benchmark is value
            assert torch.backends.cuda.matmul.allow_tf32 is (not value) and torch.backends.cudnn.allow_tf32 is (
                not value
            )
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
