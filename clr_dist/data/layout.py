"""Loader helpers every loader shares: fixed validation subsets, and whether a saved position
still applies after a restart."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TypeVar

from clr_dist.errors import DataError

T = TypeVar("T")


def evenly_spaced(size: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(size)``, first one 0. Over a list sorted by
    class, this fixed subset holds every class in proportion (a prefix would hold the first few)."""
    count = min(count, size)
    return [i * size // count for i in range(count)]


def select(values: Sequence[T], indices: list[int]) -> list[T]:
    return [values[i] for i in indices]


def saved_position_applies(
    state: dict, rank: int, world_size: int, train_size: int, *, restart_epoch_allowed: bool
) -> bool:
    """True when ``state`` was saved by this rank of this world size over this training set.

    A mid-epoch position belongs to one rank of one world size: each rank reads its own shard,
    so in another layout it would silently read other data. That is refused with a DataError,
    unless ``restart_epoch_allowed`` (``data.restart_epoch_on_layout_change``) and the data is
    the same: then this returns False and the caller starts the saved epoch from its beginning.
    """
    saved = (state["rank"], state["world_size"], state["train_size"])
    if saved == (rank, world_size, train_size):
        return True
    same_data = saved[2] == train_size
    if restart_epoch_allowed and same_data:
        print(
            f"clr-dist: the data position was saved by rank {saved[0]} of {saved[1]}, this is rank {rank} "
            f"of {world_size}: the epoch starts again from its beginning",
            file=sys.stderr,
        )
        return False
    raise DataError(
        f"the data position was saved by rank {saved[0]} of {saved[1]} over {saved[2]} training images, "
        f"and this is rank {rank} of {world_size} over {train_size}; restoring it would read different "
        f"data: resume with the same world size and dataset"
        + (", or set data.restart_epoch_on_layout_change=true to start the epoch again" if same_data else "")
    )
