"""How a stopped run exits: 75 for the requeue, except where torchrun would restart it."""

from __future__ import annotations

import pytest

from clr_dist.errors import Stopped


@pytest.mark.parametrize(
    ("max_restarts", "restart_count", "code"),
    [(None, None, 75), ("0", "0", 75), ("3", "0", 0), ("3", "2", 0), ("3", "3", 75)],
)
def test_a_stop_exits_zero_only_where_torchrun_would_restart_it(
    monkeypatch: pytest.MonkeyPatch, max_restarts: str | None, restart_count: str | None, code: int
) -> None:
    for name, value in (("TORCHELASTIC_MAX_RESTARTS", max_restarts), ("TORCHELASTIC_RESTART_COUNT", restart_count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Stopped.exit_code() == code
