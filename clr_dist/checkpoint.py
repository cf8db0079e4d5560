"""Checkpoints: atomic files, shared state once and rank-local state per rank, safe to load.

A checkpoint is a folder under ``RUN_DIR/checkpoints/``: ``step-00001200`` for the periodic ones
(the newest ``trainer.keep_checkpoints`` are kept) and ``step-00000234-cycle-003`` for the
snapshot at the end of cycle 3 (always kept, for later analysis, and a resume point like any
other). In it, ``shared.pt`` (written by rank 0: model, optimizer, grad scaler, step, epoch,
peaks, the W&B run id and what the run was configured with) and ``rank<R>.pt`` (written by each
rank: its RNG states, its loader position, for DALI the reader's own checkpoint, and its share of
the training loss since the last log). Every file is written to a temporary name, fsynced and
renamed, so a file is either whole or absent; everything is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from clr_dist import dist
from clr_dist.dist import DistInfo
from clr_dist.errors import ConfigError
from clr_dist.files import atomic_open

RANK_KEYS = ("rng", "data", "meter")  # the parts of Trainer.state_dict() that differ between ranks
SHARED_FILE = "shared.pt"


def rank_file(rank: int) -> str:
    return f"rank{rank}.pt"


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` that leaves ``path`` whole or untouched, never torn."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save(state: dict, meta: dict, directory: Path, info: DistInfo) -> None:
    """Write one checkpoint. Every rank must call; returns when every rank has written."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save({key: state[key] for key in RANK_KEYS}, directory / rank_file(info.rank))
    if info.is_main:
        shared = {key: value for key, value in state.items() if key not in RANK_KEYS}
        atomic_save({**shared, "meta": meta}, directory / SHARED_FILE)
    dist.barrier()


def periodic_name(step: int) -> str:
    return f"step-{step:08d}"


def snapshot_name(step: int, cycle: int) -> str:
    return f"step-{step:08d}-cycle-{cycle:03d}"


def weights_path(run_dir: Path, step: int, cycle: int) -> Path:
    """Where ``trainer.snapshot_weights_only`` keeps the weights of the end of ``cycle``."""
    return run_dir / "snapshots" / f"{snapshot_name(step, cycle)}.pt"


def save_weights(model_state: dict, meta: dict, path: Path) -> None:
    """The model's weights alone, with ``meta`` (step, cycle, model). Rank 0 calls."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": model_state, "meta": meta}, path)


def load_weights(path: Path) -> dict:
    """The model's weights from a checkpoint folder (its ``shared.pt``) or a weights file
    (``save_weights``), on the CPU; one line on anything else."""
    source = path / SHARED_FILE if path.is_dir() else path
    if not source.is_file():
        raise ConfigError(
            f"{path} is neither a checkpoint folder (with {SHARED_FILE}) nor a weights file; give "
            f"RUN_DIR/checkpoints/step-N-cycle-K or RUN_DIR/snapshots/step-N-cycle-K.pt"
        )
    try:
        saved = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{source} cannot be read ({type(exc).__name__}); is it whole?") from exc
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise ConfigError(f"{source} holds no model weights; give a checkpoint or a snapshot that clr-dist wrote")
    return saved["model"]


def cycle_snapshots(run_dir: Path) -> dict[int, Path]:
    """Cycle number -> the saved weights of its end: snapshot checkpoints
    (``checkpoints/step-N-cycle-K``) and weights files (``snapshots/step-N-cycle-K.pt``, preferred
    when a cycle has both: it is the smaller read)."""
    found: dict[int, Path] = {}
    for path in sorted((run_dir / "checkpoints").glob("step-*-cycle-*")):
        if (path / SHARED_FILE).is_file():
            found[int(path.name.rsplit("-", 1)[1])] = path
    for path in sorted((run_dir / "snapshots").glob("step-*-cycle-*.pt")):
        found[int(path.stem.rsplit("-", 1)[1])] = path
    return dict(sorted(found.items()))


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def saved_at(root: Path, step: int) -> bool:
    """Whether a checkpoint of ``step`` is there already (periodic or snapshot)."""
    return any((p / SHARED_FILE).exists() for p in root.glob(f"{periodic_name(step)}*"))


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints (cycle snapshots stay). Rank 0."""
    periodic = sorted(p for p in root.glob("step-*") if p.name.count("-") == 1)
    for old in periodic[:-keep] if keep > 0 else periodic:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class Loaded:
    directory: Path
    shared: dict
    rank: dict | None  # None when this rank has no file there (the world size grew)


def _load(directory: Path, rank: int) -> Loaded:
    shared = torch.load(directory / SHARED_FILE, map_location="cpu", weights_only=True)
    own = directory / rank_file(rank)
    ranked = torch.load(own, map_location="cpu", weights_only=True) if own.exists() else None
    return Loaded(directory, shared, ranked)


def candidates(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, newest step first."""
    return sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: (_step_of(p), p.name), reverse=True)


def load_latest(root: Path, info: DistInfo) -> Loaded | None:
    """The newest checkpoint that every rank can read, or None when there is none.

    Every rank must call. A newest one that is truncated or unreadable on any rank is reported
    and skipped, so all ranks settle on the same one.
    """
    options = candidates(root) if root.is_dir() else []
    options = dist.broadcast_object([str(p) for p in options])  # the same list, in the same order
    for path in map(Path, options):
        try:
            loaded, problem = _load(path, info.rank), None
        except Exception as exc:  # any failure to read it makes it unusable; say which and why
            loaded, problem = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        problems = [p for p in dist.all_gather_object(problem) if p]
        if not problems:
            return loaded
        if info.is_main:
            print(
                f"clr-dist: checkpoint {path} cannot be read ({problems[0]}); trying the one before it",
                file=sys.stderr,
                flush=True,
            )
    return None


def load_path(path: Path, info: DistInfo) -> Loaded:
    """The checkpoint folder the user named (``trainer.resume=PATH``)."""
    if not (path / SHARED_FILE).is_file():
        raise ConfigError(
            f"trainer.resume={str(path)!r} is not a checkpoint folder (no {SHARED_FILE} in it); "
            f"give RUN_DIR/checkpoints/step-N, or trainer.resume=auto"
        )
    try:
        return _load(path, info.rank)
    except Exception as exc:
        raise ConfigError(
            f"trainer.resume={str(path)!r} cannot be read ({type(exc).__name__}); "
            f"give another checkpoint, or trainer.resume=auto"
        ) from exc


def check_compatible(saved: dict, now: dict, where: Path, allow_changes: bool) -> None:
    """Refuse to continue a run whose schedule, global batch or world size changed."""
    changed = [
        f"{key}: {saved.get(key)!r} then, {value!r} now" for key, value in now.items() if saved.get(key) != value
    ]
    if changed and not allow_changes:
        raise ConfigError(
            f"the checkpoint {where} was made with other settings ({'; '.join(changed)}); resuming would change "
            f"the run: start a new run directory, or set trainer.resume_allow_changes=true to resume anyway"
        )
    if changed:
        print(f"clr-dist: resuming with changed settings: {'; '.join(changed)}", file=sys.stderr, flush=True)
